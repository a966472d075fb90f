"""``gradcam diagnose failures|adversarial|bias``: thin commands over :mod:`gradcam.diagnose`.

Registered in :data:`gradcam.cli.COMMAND_MODULES`. Datasets are read as ``gradcam evaluate``
reads them (the same ``--data``/``--format``/``--labels``/``--annotations`` options), results
go to ``--out`` as Parquet rows plus a self-contained ``report.html``, and ``--resume``
continues an interrupted run.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``diagnose`` and its subcommands to the ``gradcam`` command's subparsers."""
    diagnose = commands.add_parser(
        "diagnose",
        help="diagnose a classifier with Grad-CAM: failures, adversarial noise, dataset bias",
        description="Section 6 of the Grad-CAM paper as tools: each writes rows and a "
        "self-contained HTML report to --out.",
    )
    jobs = diagnose.add_subparsers(dest="job", required=True, metavar="JOB")
    failures = jobs.add_parser(
        "failures",
        help="explain every misclassified image for its true and predicted class (6.1)",
        description="For each misclassified image: Grad-CAM and Guided Grad-CAM for the true "
        "and the predicted class, the map mass inside the true object, and whether the "
        "model looked at the right object; rows to Parquet and report.html in --out.",
    )
    _add_data_options(failures)
    failures.add_argument(
        "--top5", action="store_true", help="a failure is no label among the top 5 classes"
    )
    failures.add_argument(
        "--tolerance", type=float, default=15.0, help="pointing tolerance in pixels (15)"
    )
    failures.add_argument("--out", default="gradcam_failures", metavar="DIR", help="run folder")
    failures.set_defaults(handler=_failures)


def _add_data_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "data",
        metavar="DATA",
        help="'synthetic', 'photos', an image folder, a VOC root, an ImageNet-style folder "
        "(with --labels) or COCO images (with --annotations), as for `gradcam evaluate`",
    )
    command.add_argument(
        "--format", choices=("auto", "folder", "imagenet", "voc", "coco"), default="auto"
    )
    command.add_argument("--labels", metavar="FILE", help="ImageNet-style labels file")
    command.add_argument("--boxes", metavar="DIR", help="ImageNet-style folder of VOC XML boxes")
    command.add_argument("--annotations", metavar="FILE", help="COCO annotation JSON")
    command.add_argument("--split", default="val", help="VOC split (default: val)")
    command.add_argument(
        "--synthetic-images", type=int, default=200, metavar="N",
        help="DATA synthetic: images to generate (default: %(default)s)",
    )  # fmt: skip
    command.add_argument("--seed", type=int, default=0, help="DATA synthetic: generator seed")
    command.add_argument(
        "--model",
        help="model name, timm:NAME or hf:DIR (default: 'shapes' for synthetic data, "
        "else efficientnet_lite0)",
    )
    command.add_argument("--weights", metavar="FILE", help="local state-dict file")
    command.add_argument("--layer", help="dotted layer name (default: the model's)")
    command.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    command.add_argument(
        "--resume", action="store_true", help="continue the run in --out, skipping done images"
    )
    command.add_argument(
        "--batch-size", type=int, default=8, metavar="B", help="images per batch (default: 8)"
    )


def _load(args: argparse.Namespace) -> Any:
    from gradcam.models import load_model

    name = args.model or ("shapes" if args.data == "synthetic" else "efficientnet_lite0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        loaded = load_model(name, args.weights)
    for warning in caught:
        print(f"gradcam: warning: {warning.message}", file=sys.stderr)
    return loaded


def _open_dataset(args: argparse.Namespace) -> Any:
    """The dataset of ``DATA`` read as ``gradcam evaluate --data`` reads it."""
    from gradcam.cli import _dataset

    # `evaluate` reads 'photos' with their annotations for every protocol but two.
    dataset = _dataset(argparse.Namespace(**{**vars(args), "protocol": "diagnose"}))
    for problem in dataset.problems:
        print(f"gradcam: warning: {problem}", file=sys.stderr)
    return dataset


def _failures(args: argparse.Namespace) -> int:
    from gradcam.diagnose.failures import diagnose_failures

    dataset = _open_dataset(args)
    loaded = _load(args)
    result = diagnose_failures(
        loaded,
        dataset,
        args.out,
        top5=args.top5,
        tolerance=args.tolerance,
        layer=args.layer,
        resume=args.resume,
        limit=args.limit,
        batch_size=args.batch_size,
    )
    summary = result.summary[0]
    print(
        f"{summary['misclassified']} of {summary['images']} images misclassified: "
        f"{summary['right-object']} looked at the right object, {summary['wrong-object']} at "
        f"the wrong thing, {summary['unannotated']} without annotations"
    )
    for row in result.failed:
        print(f"gradcam: error: {row['error']}", file=sys.stderr)
    print(f"results in {args.out} (report.html)", file=sys.stderr)
    return 1 if result.failed else 0
