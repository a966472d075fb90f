"""``gradcam dissect``: name a layer's units by the concepts they detect (Network Dissection).

Registered in :data:`gradcam.cli.COMMAND_MODULES`; heavy imports happen in the handler.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from gradcam.errors import GradCAMError

__all__ = ["add_parser", "run_dissect"]


def add_parser(commands: Any) -> None:
    """Add ``gradcam dissect`` to argparse's subcommands ``commands``."""
    parser = commands.add_parser(
        "dissect",
        help="name a layer's neurons by the concepts they detect (Network Dissection)",
        description="Name every unit of --layer by the concept of --concepts whose masks its "
        "top 0.5%% activations overlap most (IoU > 0.05), as in Bau et al. 2017 and section 7 "
        "of the paper. Writes names.parquet, iou.npy and dissection.json to --out; "
        "`gradcam explain IMAGE --text --names DIR` then uses them.",
    )
    parser.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="model name, timm:NAME or hf:DIR (default: %(default)s)",
    )
    parser.add_argument("--weights", metavar="FILE", help="local state-dict file for the model")
    parser.add_argument("--layer", help="dotted layer name (default: the model's Grad-CAM layer)")
    parser.add_argument(
        "--concepts",
        required=True,
        metavar="PATH",
        help="a Broden folder (index.csv, label.csv, c_*.csv, images/) or 'generated' (a small "
        "offline stand-in: colours, textures and shapes with exact masks)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=400,
        metavar="N",
        help="--concepts generated: images to generate (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=128,
        metavar="PX",
        help="--concepts generated: image side (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="--concepts generated: seed")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, metavar="B", help="images per forward pass (16)"
    )
    parser.add_argument(
        "--quantile",
        type=float,
        default=0.005,
        help="top quantile of activations that makes a unit's mask (default: %(default)s)",
    )
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=0.05,
        help="name a unit only when its best IoU is above this (default: %(default)s)",
    )
    parser.set_defaults(handler=run_dissect)


def run_dissect(args: argparse.Namespace) -> int:
    """Run ``gradcam dissect``: print the named units, best IoU first; returns the exit code."""
    from gradcam.dissect.concepts import read_concepts
    from gradcam.dissect.dissect import dissect
    from gradcam.models import load_model

    if args.images < 1:
        raise GradCAMError(f"--images must be at least 1, got {args.images}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        loaded = load_model(args.model, args.weights)
        concepts = read_concepts(args.concepts, count=args.images, size=args.size, seed=args.seed)
    for warning in caught:
        print(f"gradcam: warning: {warning.message}", file=sys.stderr)
    found = dissect(
        loaded,
        concepts,
        args.layer,
        out=args.out,
        resume=args.resume,
        batch_size=args.batch_size,
        quantile=args.quantile,
        iou_threshold=args.iou_threshold,
        progress=True,
        model_name=args.model,
    )
    named = found.named()
    print(
        f"{found.layer}: {len(named)} of {found.channels} units named "
        f"(IoU > {found.iou_threshold}) over {found.images} images of {found.source}"
    )
    for unit in named:
        print(
            f"  unit {unit.unit}: {unit.name} ({unit.category}, IoU {unit.iou:.3f}; "
            f"runner-up {unit.runner_up} {unit.runner_up_iou:.3f})"
        )
    print(f"names in {args.out}", file=sys.stderr)
    return 0
