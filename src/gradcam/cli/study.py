"""``gradcam study``: create, serve, invite and report the human studies of section 5.

Thin commands over :mod:`gradcam.study`; registered in :data:`gradcam.cli.COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gradcam.errors import GradCAMError

__all__ = ["add_parser"]


def _method_names() -> list[str]:
    from gradcam.methods import methods

    return methods()


def add_parser(commands: Any) -> None:
    """Add ``gradcam study`` and its subcommands to the CLI's ``commands``."""
    study = commands.add_parser(
        "study",
        help="human studies of section 5: class discrimination and trust",
        description="Create a study file, invite participants, serve the questions on a web "
        "page, and score the answers (docs/study.md).",
    )
    steps = study.add_subparsers(dest="study_command", required=True, metavar="STEP")
    _add_create(steps)
    _add_invite(steps)
    _add_serve(steps)
    _add_report(steps)


def _add_create(steps: Any) -> None:
    """``study create``: the study's kind, its photos, methods and models."""
    from gradcam.explain import FIGURE_METHODS

    create = steps.add_parser(
        "create",
        help="render the items of a study into a new study file",
        description="class-discrimination (5.1): photos with exactly two annotated categories, "
        "the map of one of them per method; trust (5.2): two models (--model twice), the "
        "photos where both predict the same correct class, both maps side by side.",
    )
    create.add_argument("kind", choices=("class-discrimination", "trust"))
    create.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="'synthetic' (generated shape scenes, for the 'shapes' model), 'photo' (the "
        "shipped cat-and-coffee photo, ImageNet models), 'photos' (annotated real photos), a "
        "VOC folder, COCO images (with --annotations) or ImageNet-style images (with --labels)",
    )
    create.add_argument("--annotations", metavar="FILE", help="COCO annotation JSON")
    create.add_argument("--labels", metavar="FILE", help="ImageNet-style labels file")
    create.add_argument("--boxes", metavar="DIR", help="ImageNet-style folder of VOC XML boxes")
    create.add_argument("--split", default="val", help="VOC split (default: val)")
    create.add_argument(
        "--method",
        "--methods",
        dest="methods",
        action="extend",
        nargs="+",
        metavar="NAME",
        help=f"methods whose maps are shown (default: {' '.join(FIGURE_METHODS)}): "
        + ", ".join(_method_names()),
    )
    create.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME[@WEIGHTS]",
        help="the model (trust: twice, A then B); any load_model name, with @FILE for a weights "
        "file (default: 'shapes' for --data synthetic, else efficientnet_lite0)",
    )
    create.add_argument("--out", required=True, metavar="STUDY.db", help="the new study file")
    create.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    create.add_argument(
        "--images", type=int, default=12, metavar="N", help="--data synthetic: scenes (12)"
    )
    create.add_argument("--limit", type=int, metavar="N", help="use at most N photos")
    create.add_argument(
        "--both-categories",
        action="store_true",
        help="class-discrimination: items for both categories of each photo, not one",
    )
    create.add_argument(
        "--each-image-once",
        action="store_true",
        help="each participant sees one item per photo, methods rotating over photos and "
        "participants (default: every item)",
    )
    create.set_defaults(handler=_create)


def _add_invite(steps: Any) -> None:
    """``study invite``: participants and their links."""
    from gradcam.study.store import DEFAULT_PORT

    invite = steps.add_parser(
        "invite",
        help="add participants and print their personal links",
        description="Add N participants, each with an unguessable token, and print one link "
        "per line.",
    )
    invite.add_argument("study", metavar="STUDY.db")
    invite.add_argument("-n", type=int, default=1, metavar="N", help="participants to add (1)")
    invite.add_argument(
        "--url",
        default=f"http://127.0.0.1:{DEFAULT_PORT}",
        help="the address participants reach the server at (default: %(default)s)",
    )
    invite.set_defaults(handler=_invite)


def _add_serve(steps: Any) -> None:
    """``study serve``: the participants' web pages."""
    from gradcam.study.store import DEFAULT_PORT

    serve = steps.add_parser(
        "serve",
        help="serve the questions to participants on a web page",
        description="One question at a time, in each participant's own order; every answer is "
        "stored before the next question is shown. Offline pages.",
    )
    serve.add_argument("study", metavar="STUDY.db")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only; 0.0.0.0 for all)",
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (%(default)s)")
    serve.set_defaults(handler=_serve)


def _add_report(steps: Any) -> None:
    """``study report``: the scores of section 5 (and simulated participants)."""
    report = steps.add_parser(
        "report",
        help="score the answers like the paper's section 5",
        description="Class discrimination: accuracy per method (Wilson 95% interval), item "
        "agreement, Fleiss' kappa. Trust: mean signed score for model A (95% interval) and "
        "the share preferring each model. Simulated participants are scored apart.",
    )
    report.add_argument("study", metavar="STUDY.db")
    report.add_argument(
        "--simulate",
        type=int,
        default=0,
        metavar="N",
        help="first add N simulated participants who answer from the maps (stored in the "
        "study file, marked simulated)",
    )
    report.add_argument(
        "--noise", type=float, default=0.1, help="simulated lapse rate: random answers (0.1)"
    )
    report.add_argument("--seed", type=int, default=0, help="seed of the simulated answers")
    report.add_argument(
        "--items", action="store_true", help="also print one row per item (answers, agreement)"
    )
    report.add_argument("--csv", metavar="FILE", help="also write every answer to FILE")
    report.set_defaults(handler=_report)


def _create(args: argparse.Namespace) -> int:
    from gradcam.explain import FIGURE_METHODS
    from gradcam.study.create import (
        check_create,
        create_class_discrimination,
        create_trust,
        load_study_model,
        study_images,
    )

    check_create(args.out, limit=args.limit)
    methods = args.methods or FIGURE_METHODS
    default = "shapes" if args.data == "synthetic" else "efficientnet_lite0"
    specs = args.models or [default]
    readers = {k: getattr(args, k) for k in ("annotations", "labels", "boxes", "split")}
    if args.kind == "trust":
        if len(specs) != 2:
            raise GradCAMError(f"trust needs two models (--model A --model B), got {len(specs)}")
        model_a, model_b = (load_study_model(s) for s in specs)
        images = study_images(
            args.data, model_a, count=args.images, seed=args.seed, objects=1, **readers
        )
        store = create_trust(
            args.out, images, model_a, model_b, methods, seed=args.seed, limit=args.limit,
            names={"A": specs[0], "B": specs[1]}, each_image_once=args.each_image_once,
        )  # fmt: skip
    else:
        if len(specs) != 1:
            raise GradCAMError(f"class-discrimination takes one model, got {len(specs)}")
        model = load_study_model(specs[0])
        images = study_images(args.data, model, count=args.images, seed=args.seed, **readers)
        store = create_class_discrimination(
            args.out, images, model, methods, seed=args.seed,
            both_categories=args.both_categories, limit=args.limit,
            each_image_once=args.each_image_once,
        )  # fmt: skip
    print(f"{args.out}: {args.kind} study, {len(store.items())} items, seed {args.seed}")
    print(f"owner token (report pages: /report/TOKEN): {store.owner_token}")
    print(f"next: gradcam study invite {args.out} -n 20; gradcam study serve {args.out}")
    return 0


def _invite(args: argparse.Namespace) -> int:
    from gradcam.study.store import open_study

    store = open_study(args.study, writable=True)
    base = args.url.rstrip("/")
    for token in store.invite(args.n):
        print(f"{base}/p/{token}")
    print(f"report: {base}/report/{store.owner_token}", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from gradcam.study.server import serve
    except ImportError as exc:
        raise GradCAMError(
            f"serving a study needs FastAPI and uvicorn ({exc}): pip install 'gradcam[study]'"
        ) from None
    serve(args.study, host=args.host, port=args.port)
    return 0


def _report(args: argparse.Namespace) -> int:
    from gradcam.outputs import output_file
    from gradcam.study.report import report, write_csv
    from gradcam.study.simulate import simulate
    from gradcam.study.store import open_study, study_files

    csv_path = args.csv and output_file(args.csv, inputs=study_files(args.study))
    store = open_study(args.study)
    if args.simulate < 0:
        raise GradCAMError(f"--simulate must be at least 0, got {args.simulate}")
    if args.simulate:
        added = simulate(store, args.simulate, seed=args.seed, noise=args.noise)
        print(f"added {args.simulate} simulated participants ({added} answers)", file=sys.stderr)
    print(f"# {store.kind} study: {args.study}")
    print(f"question: {store.question}\n")
    groups = [("People", report(store))]
    if any(p.simulated for p in store.participants()):
        heading = "SIMULATED participants (answers computed from the maps, not people)"
        groups.append((heading, report(store, simulated=True)))
    for heading, scored in groups:
        print(f"## {heading}\n\n{scored.markdown()}")
        if args.items and scored.answers:
            print(f"\nPer item:\n\n{scored.items_markdown()}")
        print()
    if csv_path:
        rows = write_csv(store, csv_path)
        print(f"{rows} answers written to {args.csv}", file=sys.stderr)
    return 0
