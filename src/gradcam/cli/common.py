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
    "add_max_pixels",
    "add_methods",
    "markdown_table",
    "max_pixels",
    "method_names",
    "output_dirs",
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
