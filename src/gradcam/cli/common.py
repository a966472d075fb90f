"""What several commands share: method choices, ``--max-pixels``, output folders, tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradcam.errors import GradCAMError

__all__ = [
    "MODEL_HELP",
    "OPTION_HELP",
    "WEIGHTS_HELP",
    "add_dataset_options",
    "add_max_pixels",
    "add_methods",
    "add_model_options",
    "add_parallel_options",
    "add_runner_options",
    "markdown_table",
    "max_pixels",
    "method_names",
    "model_name",
    "output_dirs",
    "runner_options",
]

OPTION_HELP = (
    "a method option NAME=VALUE, typed by the method (repeatable; applies to every chosen "
    "method that takes it): see `gradcam methods`"
)

#: ``--model`` and ``--weights`` of every command that loads a model (gradcam.load_model).
MODEL_HELP = (
    "model: a torchvision classifier (pretrained), timm:NAME[.TAG], hf:ORG/NAME, hf:DIR, or "
    "FILE.py:FUNCTION returning your nn.Module"
)
WEIGHTS_HELP = (
    "the model's weights: a torchvision weights name (IMAGENET1K_V2), a local state-dict "
    "file, or 'random' (default: its pretrained weights, from the local cache, downloaded "
    "when missing)"
)


def add_model_options(
    command: argparse.ArgumentParser,
    *,
    fixed_default: bool = False,
    layer_help: str = "dotted layer name (default: the model's)",
) -> None:
    """Add ``--model``, ``--weights`` and ``--layer``, as every command that loads a model
    reads them (:func:`model_name`). The default model is the shipped ``shapes`` CNN for
    ``synthetic`` data and the embedded EfficientNet-Lite0 otherwise; ``fixed_default``
    commands (no dataset) show the latter as the default."""
    from gradcam.models import DEFAULT_MODEL, SHAPES_MODEL

    default = (
        f"default: {DEFAULT_MODEL}"
        if fixed_default
        else f"default: '{SHAPES_MODEL}' for synthetic data (the synthetic volumes' and clips' "
        f"own), else {DEFAULT_MODEL}"
    )
    command.add_argument("--model", help=f"{MODEL_HELP} ({default})")
    command.add_argument("--weights", metavar="W", help=WEIGHTS_HELP)
    command.add_argument("--layer", help=layer_help)


def model_name(args: argparse.Namespace) -> str:
    """The model a command loads: ``--model``, else the default of :func:`add_model_options`."""
    from gradcam.evaluate.datasets import SYNTHETIC_MODELS
    from gradcam.models import DEFAULT_MODEL

    given: str | None = args.model
    if given:
        return given
    data = getattr(args, "data", None)
    return SYNTHETIC_MODELS.get(data, DEFAULT_MODEL) if isinstance(data, str) else DEFAULT_MODEL


def add_dataset_options(
    command: argparse.ArgumentParser, *, positional: bool = False, required: bool = False
) -> None:
    """Add the dataset a command reads (``--data PATH``, or the positional ``DATA``) and the
    options that select it, as every dataset command reads them (:func:`open_data`)."""
    from gradcam.evaluate.datasets import DATASET_FORMATS, SYNTHETIC_IMAGES

    what = (
        "'synthetic' (generated shapes with exact boxes and masks, for the shipped 'shapes' "
        "model), 'synthetic-volumes' / 'synthetic-clips' (solids in volumes and moving squares "
        "in clips with exact 3-D masks, for the shipped 'shapes3d' and 'motion' models), "
        "'photos' (the real photos shipped with scikit-image and matplotlib), an image "
        "folder, a VOC root, an ImageNet-style folder (with --labels) or COCO images (with "
        "--annotations)"
    )
    if positional:
        command.add_argument("data", metavar="DATA", help=what)
    else:
        command.add_argument("--data", required=required, metavar="PATH", help=what)
    command.add_argument("--format", choices=DATASET_FORMATS, default="auto")
    command.add_argument("--labels", metavar="FILE", help="ImageNet-style labels file")
    command.add_argument("--boxes", metavar="DIR", help="ImageNet-style folder of VOC XML boxes")
    command.add_argument("--annotations", metavar="FILE", help="COCO annotation JSON")
    command.add_argument("--split", default="val", help="VOC split (default: val)")
    command.add_argument(
        "--synthetic-images",
        type=int,
        default=SYNTHETIC_IMAGES,
        metavar="N",
        help="synthetic data: images to generate (default: %(default)s)",
    )
    command.add_argument("--seed", type=int, default=0, help="synthetic data: generator seed")


def add_runner_options(command: argparse.ArgumentParser, batch_size: int = 8) -> None:
    """Add how a dataset command runs (:func:`gradcam.evaluate.runner.run`): ``--limit``,
    ``--resume``, ``--batch-size`` (default ``batch_size``), ``--workers``, ``--ray`` and
    ``--ray-timeout``."""
    command.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    command.add_argument(
        "--resume", action="store_true", help="continue the run in --out, skipping done images"
    )
    command.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        metavar="B",
        help=f"images per batch (default: {batch_size})",
    )
    add_parallel_options(command)


def add_parallel_options(command: argparse.ArgumentParser) -> None:
    """Add where a dataset command's batches run (:func:`gradcam.evaluate.runner.run`):
    ``--workers``, ``--ray`` and ``--ray-timeout``."""
    command.add_argument(
        "--workers", type=int, default=1, metavar="N", help="local processes (or Ray actors)"
    )
    command.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="run on Ray Data: a local Ray, or the cluster at ADDRESS (pip install 'gradcam[ray]')",
    )
    command.add_argument(
        "--ray-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="--ray ADDRESS: give up when the cluster does not answer in time (default: 30)",
    )


def runner_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_runner_options` as keyword arguments of
    :func:`gradcam.evaluate.runner.run` (and of the library functions that pass them on)."""
    return {
        "resume": args.resume,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "ray": args.ray,
        "ray_timeout": args.ray_timeout,
    }


def method_names() -> list[str]:
    """The registered methods' names (what ``--method`` takes)."""
    from gradcam.methods import methods

    return methods()


def add_methods(command: argparse.ArgumentParser, help: str) -> None:
    """Add the repeatable ``--method NAME`` (into ``args.methods``), listing the registry's
    methods in its help."""
    command.add_argument(
        "--method",
        dest="methods",
        action="append",
        metavar="NAME",
        help=f"{help}: " + ", ".join(method_names()),
    )


def add_max_pixels(command: argparse.ArgumentParser) -> None:
    """Add ``--max-pixels N`` (images larger are decoded at reduced size)."""
    from gradcam.images import MAX_PIXELS

    command.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help="decode larger images at reduced size (default: %(default)s; 0: every pixel)",
    )


def max_pixels(args: argparse.Namespace) -> int | None:
    """``--max-pixels`` as :func:`gradcam.images.load_image` takes it (``None``: no limit).

    Raises:
        GradCAMError: a negative value.
    """
    if args.max_pixels < 0:
        raise GradCAMError(f"--max-pixels must be 0 (no limit) or more, got {args.max_pixels}")
    return int(args.max_pixels) or None


def output_dirs(images: Sequence[str], out: Path) -> list[Path]:
    """One folder per image, named by the slug of its file's stem (inside ``out`` whatever the
    name: ``...jpg`` has the stem ``..``); repeated names get a numeric suffix.

    Examples:
        >>> [str(p) for p in output_dirs(["a/cat.jpg", "b/cat.png"], Path("out"))]
        ['out/cat', 'out/cat-2']
    """
    from gradcam.paths import unique_slugs

    return [out / n for n in unique_slugs((Path(i).stem for i in images), fallback="image")]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of plain values as a Markdown table (the first row's keys are the columns).

    Examples:
        >>> print(markdown_table([{"method": "gradcam", "accuracy": 90.0}]))
        | method | accuracy |
        |---|---|
        | gradcam | 90.0 |
    """
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def open_data(args: argparse.Namespace, *, annotated: bool) -> Any:
    """The dataset of ``--data`` and its options (``--format``, ``--labels``, ``--boxes``,
    ``--annotations``, ``--split``, ``--synthetic-images``, ``--seed``; a synthetic benchmark
    is written under ``--out``), as every command that reads a dataset opens it; its problems
    (files left out) are printed as warnings. ``annotated`` keeps only the shipped photos
    that have boxes."""
    from gradcam.evaluate.datasets import open_dataset

    dataset = open_dataset(
        args.data,
        args.format,
        labels=args.labels,
        boxes=args.boxes,
        annotations=args.annotations,
        split=args.split,
        count=args.synthetic_images,
        seed=args.seed,
        workdir=args.out,
        annotated=annotated,
    )
    for problem in dataset.problems:
        print(f"gradcam: warning: {problem}", file=sys.stderr)
    return dataset
