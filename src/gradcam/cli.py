"""``gradcam`` command line: thin commands over plain functions.

``gradcam explain IMAGE...`` writes, for every image, one overlay per explained class and a
``summary.json`` (and ``maps.npz`` with ``--save-maps``) under ``--out``. A bad file is reported
by name and skipped; the exit code is then 1. User errors never print a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from gradcam.errors import GradCAMError, ImageLoadError

__all__ = ["main"]


def _method_names() -> list[str]:
    from gradcam.methods import methods

    return methods()


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradcam", description="Visual explanations for PyTorch vision models (Grad-CAM)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    explain = commands.add_parser(
        "explain",
        help="explain the predictions of a model on photos",
        description="Write Grad-CAM overlays, a summary.json and optionally maps.npz per image.",
    )
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files to explain")
    explain.add_argument(
        "--model", default="efficientnet_lite0", help="model name (default: %(default)s)"
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
        help="explain the K best classes (default: 1; --class overrides)",
    )
    explain.add_argument(
        "--method",
        dest="methods",
        action="append",
        metavar="NAME",
        help="method to run (repeatable; default: gradcam): " + ", ".join(_method_names()),
    )
    explain.add_argument(
        "--counterfactual", action="store_true", help="also write counterfactual maps (sec. 3.3)"
    )
    explain.add_argument(
        "--figure",
        action="store_true",
        help="also write a figure per class: photo, Guided Backprop, Grad-CAM, Guided Grad-CAM",
    )
    explain.add_argument(
        "--window", type=int, default=35, help="occlusion window size in input pixels (35)"
    )
    explain.add_argument(
        "--stride", type=int, default=8, help="occlusion stride in input pixels (8)"
    )
    explain.add_argument("--out", default="gradcam_out", metavar="DIR", help="output folder")
    explain.add_argument("--save-maps", action="store_true", help="also write maps.npz per image")
    return parser


def _output_dirs(images: Sequence[str], out: Path) -> list[Path]:
    """One folder per image, named after its file; repeated names get a numeric suffix."""
    used: set[str] = set()
    dirs = []
    for image in images:
        stem = Path(image).stem or "image"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        dirs.append(out / name)
    return dirs


def _explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gradcam.explain import explain_image, save_explanation
    from gradcam.images import load_image
    from gradcam.layers import resolve_layer
    from gradcam.methods import Occlusion
    from gradcam.models import load_model

    if args.top_k < 1:
        raise GradCAMError(f"--top-k must be at least 1, got {args.top_k}")
    names = list(args.methods or ["gradcam"])
    if args.counterfactual:
        names.append("counterfactual")
    if args.figure:
        names += ["gradcam", "guided-backprop", "guided-gradcam"]
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in _method_names()]
    if unknown:
        raise GradCAMError(
            f"unknown method {unknown[0]!r}; choose from {', '.join(_method_names())}"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        loaded = load_model(args.model, args.weights)
    for warning in caught:
        print(f"gradcam: warning: {warning.message}", file=sys.stderr)
    classes = [loaded.class_index(c) for c in args.classes] if args.classes else None
    if args.layer is not None:
        resolve_layer(loaded.module, args.layer)
    occlusion = Occlusion(loaded.module, window=args.window, stride=args.stride)
    out = Path(args.out)
    failures = 0
    pairs = list(zip(args.images, _output_dirs(args.images, out), strict=True))
    progress = tqdm(pairs, desc="explaining", unit="image", disable=len(pairs) < 2, file=sys.stderr)
    for path, folder in progress:
        try:
            image = load_image(path)
            explanation = explain_image(
                loaded,
                image,
                classes=classes,
                top_k=args.top_k,
                methods=names,
                layer=args.layer,
                occlusion=occlusion,
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
        explained = dict.fromkeys(m["name"] or str(m["class"]) for m in summary["maps"])
        tqdm.write(f"{path}: {', '.join(explained)} -> {folder}", file=sys.stdout)
    done = len(pairs) - failures
    print(f"explained {done} of {len(pairs)} images; results in {out}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradcam`` command; returns the exit code."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "explain":
            return _explain(args)
    except GradCAMError as exc:
        print(f"gradcam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradcam: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
