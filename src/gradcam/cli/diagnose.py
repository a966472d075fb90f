"""``gradcam diagnose failures|adversarial|bias``: thin commands over :mod:`gradcam.diagnose`.

Registered in :data:`gradcam.cli.COMMAND_MODULES`. Datasets are read as ``gradcam evaluate``
reads them (the same ``--data``/``--format``/``--labels``/``--annotations`` options), results
go to ``--out`` as Parquet rows plus a self-contained ``report.html``, and ``--resume``
continues an interrupted run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gradcam.cli.common import add_model_options, add_parallel_options, model_name

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``diagnose`` and its subcommands to the ``gradcam`` command's subparsers."""
    from gradcam.cli.common import add_max_pixels

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
    failures.add_argument(
        "--report-limit", type=int, default=200, metavar="N",
        help="failures shown per kind in report.html (default: %(default)s; 0: all)",
    )  # fmt: skip
    failures.add_argument("--out", default="gradcam_failures", metavar="DIR", help="run folder")
    add_parallel_options(failures)
    failures.set_defaults(handler=_failures)
    adversarial = jobs.add_parser(
        "adversarial",
        help="attack a photo towards a class and see what happened to Grad-CAM (6.2)",
        description="A targeted L-inf attack in 0-255 pixel units until the target's "
        "probability exceeds --confidence and the --present classes leave the top 5 (or the "
        "budget is spent); writes the lossless adversarial PNG, the amplified perturbation, "
        "Grad-CAM maps, summary.json and report.html to --out.",
    )
    adversarial.add_argument("image", metavar="IMAGE", help="image file")
    adversarial.add_argument("--target", required=True, metavar="C", help="class index or name")
    adversarial.add_argument(
        "--present", action="append", metavar="C",
        help="a class that must leave the top 5 (repeatable; default: the original top 2)",
    )  # fmt: skip
    adversarial.add_argument(
        "--epsilon", type=int, default=8, help="L-inf budget in 0-255 pixel units: 1-255 (8)"
    )
    adversarial.add_argument("--step", type=int, default=1, help="step in pixel units (1)")
    adversarial.add_argument(
        "--max-steps", type=int, default=200, help="iterations at most (200; 10000 or fewer)"
    )
    adversarial.add_argument(
        "--confidence", type=float, default=0.9999, help="target probability to exceed (0-1)"
    )
    add_model_options(adversarial, fixed_default=True)
    adversarial.add_argument("--out", default="gradcam_adversarial", metavar="DIR")
    add_max_pixels(adversarial)
    adversarial.set_defaults(handler=_adversarial, data=None)
    bias = jobs.add_parser(
        "bias",
        help="how much of each class's map falls on each annotated region kind (6.3)",
        description="Per class and annotated region kind (dataset categories that are not "
        "model classes, e.g. COCO categories), the mean fraction of the class's Grad-CAM map "
        "on the region with a confidence interval; flags the regions a class relies on more "
        "than its own object. Rows to Parquet, summary.json and report.html in --out.",
    )
    _add_data_options(bias)
    bias.add_argument(
        "--regions", action="extend", nargs="+", default=[], metavar="KIND",
        help="the region kinds to measure (default: every category that is not a model class)",
    )  # fmt: skip
    bias.add_argument(
        "--explain", choices=("label", "predicted"), default="label",
        help="explain each image's labeled class (default) or the predicted one",
    )  # fmt: skip
    bias.add_argument("--confidence", type=float, default=0.95, help="of the intervals (0.95)")
    bias.add_argument("--out", default="gradcam_bias", metavar="DIR", help="run folder")
    bias.set_defaults(handler=_bias)


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
    add_model_options(command)
    command.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    command.add_argument(
        "--resume", action="store_true", help="continue the run in --out, skipping done images"
    )
    command.add_argument(
        "--batch-size", type=int, default=8, metavar="B", help="images per batch (default: 8)"
    )


def _load(args: argparse.Namespace) -> Any:
    from gradcam.models import load_model
    from gradcam.util import warnings_as_messages

    with warnings_as_messages():
        return load_model(model_name(args), args.weights, layer=args.layer)


def _open_dataset(args: argparse.Namespace) -> Any:
    """The dataset of ``DATA`` read as ``gradcam evaluate --data`` reads it."""
    from gradcam.cli.common import open_data
    from gradcam.outputs import output_folder

    output_folder(args.out)  # before a synthetic dataset is written there
    # Failures and bias are scored against objects: only the photos that have annotations.
    return open_data(args, annotated=True)


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
        workers=args.workers,
        ray=args.ray,
        ray_timeout=args.ray_timeout,
        report_limit=args.report_limit or None,
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
    # Images the reader refused are reported with the rest: a bad file makes the exit code 1.
    return 1 if result.failed or dataset.problems else 0


def _adversarial(args: argparse.Namespace) -> int:
    from gradcam.cli.common import max_pixels
    from gradcam.diagnose.adversarial import diagnose_adversarial
    from gradcam.images import load_image

    image = load_image(args.image, max_pixels=max_pixels(args))
    loaded = _load(args)
    summary = diagnose_adversarial(
        loaded,
        image,
        args.target,
        args.out,
        layer=args.layer,
        present=args.present,
        epsilon=args.epsilon,
        step=args.step,
        max_steps=args.max_steps,
        confidence=args.confidence,
    )
    before = ", ".join(f"{t['name']} {t['prob']:.3f}" for t in summary["top5_before"])
    after = ", ".join(f"{t['name']} {t['prob']:.4f}" for t in summary["top5_after"])
    print(f"before: {before}\nafter:  {after}")
    quality = "inf" if summary["psnr"] is None else f"{summary['psnr']:.1f} dB"
    if summary["success"]:
        print(
            f"reached {summary['target_name']} in {summary['steps']} steps: "
            f"L-inf {summary['linf']:.0f}/255, PSNR {quality}"
        )
    else:
        print(
            f"budget spent: {summary['steps']} steps at epsilon {args.epsilon} did not reach "
            f"p > {args.confidence} with the present classes out of the top 5 "
            f"(L-inf {summary['linf']:.0f}/255, PSNR {quality})",
            file=sys.stderr,
        )
    print(f"results in {args.out} (report.html)", file=sys.stderr)
    return 0


def _bias(args: argparse.Namespace) -> int:
    from gradcam.cli.common import markdown_table as _markdown
    from gradcam.diagnose.bias import diagnose_bias

    dataset = _open_dataset(args)
    loaded = _load(args)
    result = diagnose_bias(
        loaded,
        dataset,
        args.out,
        regions=args.regions,
        explain=args.explain,
        confidence=args.confidence,
        layer=args.layer,
        resume=args.resume,
        limit=args.limit,
        batch_size=args.batch_size,
    )
    print(_markdown(result.summary))
    for row in result.failed:
        print(f"gradcam: error: {row['error']}", file=sys.stderr)
    print(f"results in {args.out} (report.html)", file=sys.stderr)
    # Images the reader refused are reported with the rest: a bad file makes the exit code 1.
    return 1 if result.failed or dataset.problems else 0
