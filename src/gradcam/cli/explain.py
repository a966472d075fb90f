"""``gradcam explain IMAGE...``: one picture per method and explained class, a ``summary.json``
(and ``maps.npz`` with ``--save-maps``) per image under ``--out``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from gradcam.cli.common import OPTION_HELP, add_max_pixels, add_methods, max_pixels, output_dirs
from gradcam.errors import GradCAMError, ImageLoadError
from gradcam.util import warnings_as_messages

__all__ = ["add_parser", "explain_command"]


def add_parser(commands: Any) -> None:
    """Add ``gradcam explain`` to the subparsers ``commands``."""
    from gradcam.explain import MAX_CLASSES

    explain = commands.add_parser(
        "explain",
        help="explain the predictions of a model on photos",
        description="Write Grad-CAM overlays, a summary.json and optionally maps.npz per image.",
    )
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files to explain")
    explain.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="model name, timm:NAME or hf:DIR (default: %(default)s)",
    )
    explain.add_argument("--weights", metavar="FILE", help="local state-dict file for the model")
    explain.add_argument("--layer", help="dotted layer name (default: last conv feature maps)")
    explain.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="C",
        help="class index or name to explain (repeatable; default: the top-1 class)",
    )
    explain.add_argument(
        "--top-k",
        type=int,
        default=1,
        metavar="K",
        help="explain the K best classes (default: 1; at most the model's classes and "
        f"{MAX_CLASSES}; --class overrides)",
    )
    add_methods(explain, "method to run (repeatable; default: gradcam)")
    explain.add_argument(
        "--counterfactual", action="store_true", help="also write counterfactual maps (sec. 3.3)"
    )
    explain.add_argument(
        "--figure",
        action="store_true",
        help="also write a figure per class: photo, Guided Backprop, Grad-CAM, Guided Grad-CAM",
    )
    explain.add_argument(
        "--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
        help=OPTION_HELP,
    )  # fmt: skip
    explain.add_argument(
        "--window", type=int, help="occlusion window size in input pixels (as --option window=N)"
    )
    explain.add_argument(
        "--stride", type=int, help="occlusion stride in input pixels (as --option stride=N)"
    )
    explain.add_argument("--out", default="gradcam_out", metavar="DIR", help="output folder")
    explain.add_argument("--save-maps", action="store_true", help="also write maps.npz per image")
    importlib.import_module("gradcam.dissect.cli").add_explain_arguments(explain)
    # Detection and segmentation: gradcam/task_explain.py (its own options below).
    explain.add_argument(
        "--task",
        choices=("classification", "detection", "segmentation"),
        default="classification",
        help="what the model does: detection and segmentation take a torchvision detector or "
        "segmenter (--model fasterrcnn_resnet50_fpn, deeplabv3_resnet50, ...) and write a map "
        "per detection (with its box) or per class region (default: %(default)s)",
    )
    explain.add_argument(
        "--min-score",
        type=float,
        default=0.5,
        metavar="S",
        help="--task detection: explain detections scoring at least S (default: %(default)s)",
    )
    add_max_pixels(explain)
    explain.set_defaults(handler=explain_command)


def explain_command(args: argparse.Namespace) -> int:
    """``gradcam explain``: explain each image with :func:`gradcam.explain.explain_image` and
    save it with :func:`gradcam.explain.save_explanation`; a bad file is reported and skipped
    (exit code 1)."""
    from tqdm import tqdm

    from gradcam.explain import FIGURE_METHODS, check_classes, explain_image, save_explanation
    from gradcam.images import load_image
    from gradcam.layers import resolve_layer
    from gradcam.methods.registry import flag_options, parse_options
    from gradcam.models import load_model
    from gradcam.outputs import output_folder

    output_folder(args.out)  # before any work: a file, a path under a file, read-only
    if args.task != "classification":
        from gradcam.task_explain import explain_task

        return explain_task(args, output_dirs(args.images, Path(args.out)))
    if args.top_k < 1:
        raise GradCAMError(f"--top-k must be at least 1, got {args.top_k}")
    pixels = max_pixels(args)
    names = list(args.methods or ["gradcam"])
    if args.counterfactual:
        names.append("counterfactual")
    if args.figure:
        names += ["gradcam", *FIGURE_METHODS]  # Grad-CAM first, as without --figure
    names = list(dict.fromkeys(names))
    flags = {"window": args.window, "stride": args.stride}
    options = parse_options(names, [*args.options, *flag_options(names, flags)])
    from gradcam.dissect import cli as text_cli

    neuron_names = text_cli.read_names(args, names)
    with warnings_as_messages():
        loaded = load_model(args.model, args.weights)
    classes = [loaded.class_index(c) for c in args.classes] if args.classes else None
    check_classes(loaded, classes, args.top_k)  # before any image: a wrong count fails fast
    if args.layer is not None:
        resolve_layer(loaded.module, args.layer)
    if neuron_names is not None:
        text_cli.check_names(neuron_names, loaded, args)
    out = Path(args.out)
    failures = 0
    pairs = list(zip(args.images, output_dirs(args.images, out), strict=True))
    progress = tqdm(pairs, desc="explaining", unit="image", disable=len(pairs) < 2, file=sys.stderr)
    for path, folder in progress:
        try:
            image = load_image(path, max_pixels=pixels)
            explanation = explain_image(
                loaded,
                image,
                classes=classes,
                top_k=args.top_k,
                methods=names,
                layer=args.layer,
                options=options,
            )
            summary = save_explanation(
                explanation,
                image,
                folder,
                source=path,
                model=args.model,
                save_maps=args.save_maps,
                figure=args.figure,
            )
        except ImageLoadError as exc:
            failures += 1
            tqdm.write(f"gradcam: error: {exc}", file=sys.stderr)
            continue
        if neuron_names is not None:
            text_cli.write_text(explanation, loaded, image, neuron_names, folder)
        explained = dict.fromkeys(m["name"] or str(m["class"]) for m in summary["maps"])
        tqdm.write(f"{path}: {', '.join(explained)} -> {folder}", file=sys.stdout)
    done = len(pairs) - failures
    print(f"explained {done} of {len(pairs)} images; results in {out}", file=sys.stderr)
    return 1 if failures else 0
