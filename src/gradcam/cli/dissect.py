"""``gradcam dissect``: name a layer's units by the concepts they detect (Network Dissection).

Listed in :data:`gradcam.cli.COMMAND_MODULES`; heavy imports happen in the handler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gradcam.cli.common import add_model_options, add_runner_options, model_name
from gradcam.errors import GradCAMError

__all__ = [
    "add_explain_arguments",
    "add_parser",
    "check_names",
    "read_names",
    "run_dissect",
    "write_text",
]


def add_explain_arguments(explain: argparse.ArgumentParser) -> None:
    """``gradcam explain --text --names DIR`` (section 7's textual explanations)."""
    explain.add_argument(
        "--text",
        action="store_true",
        help="also explain in words: the top-5 and bottom-5 units by Grad-CAM's alpha with their "
        "names (section 7); needs --names",
    )
    explain.add_argument(
        "--names", metavar="DIR", help="--text: the neuron names written by gradcam dissect"
    )


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
    add_model_options(parser, layer_help="dotted layer name (default: the model's Grad-CAM layer)")
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
    add_runner_options(parser, batch_size=16)
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
    from gradcam.evaluate.runner import ModelSpec
    from gradcam.models import load_model
    from gradcam.util import warnings_as_messages

    if args.images < 1:
        raise GradCAMError(f"--images must be at least 1, got {args.images}")
    with warnings_as_messages():
        loaded = load_model(model_name(args), args.weights, layer=args.layer)
        concepts = read_concepts(args.concepts, count=args.images, size=args.size, seed=args.seed)
    found = dissect(
        # Workers load the model by name and weights; this process uses the one loaded here.
        ModelSpec(model_name(args), args.weights, loaded=loaded),
        concepts,
        args.layer,
        out=args.out,
        resume=args.resume,
        limit=args.limit,
        batch_size=args.batch_size,
        workers=args.workers,
        ray=args.ray,
        ray_timeout=args.ray_timeout,
        quantile=args.quantile,
        iou_threshold=args.iou_threshold,
        progress=True,
        model_name=model_name(args),
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


def read_names(args: argparse.Namespace, methods: list[Any]) -> Any:
    """``explain --text --names DIR``: the dissection, read before any image (``None``
    without ``--text``); adds Grad-CAM's entry, whose weights are alpha, to ``methods`` (the
    resolved :class:`~gradcam.methods.MethodSpec` entries)."""
    if not args.text:
        if args.names:
            raise GradCAMError("--names applies with --text")
        return None
    if not args.names:
        raise GradCAMError("--text needs --names DIR (written by gradcam dissect)")
    from gradcam.dissect import load_dissection
    from gradcam.methods.registry import GRAD_CAM, method_spec

    if all(spec.name != GRAD_CAM for spec in methods):
        methods.insert(0, method_spec(GRAD_CAM))
    return load_dissection(args.names)


def check_names(names: Any, loaded: Any, args: argparse.Namespace) -> None:
    """``--names``: explain the dissected layer; refuse names for another model, layer or
    number of units (from the stored layer name and channel count)."""
    from PIL import Image

    from gradcam.dissect import DissectionError, layer_activations
    from gradcam.layers import resolve_layer

    if names.model and names.model != model_name(args):
        raise DissectionError(
            f"the neuron names are for model {names.model!r}, not --model {model_name(args)!r}"
        )
    if args.layer is not None and args.layer != names.layer:
        raise DissectionError(
            f"the neuron names are for layer {names.layer!r}, not --layer {args.layer!r}"
        )
    args.layer = names.layer
    # One forward pass on a blank photo counts the layer's units.
    blank = loaded.preprocess(Image.new("RGB", (loaded.preprocess.size,) * 2))
    maps = layer_activations(loaded.module, resolve_layer(loaded.module, names.layer), blank)
    names.check(names.layer, int(maps.shape[1]), model_name(args))


def write_text(explanation: Any, loaded: Any, image: Any, names: Any, folder: Path) -> None:
    """``explain --text``: print each class's text explanation, write its units' pictures and
    add it to the image's ``summary.json``."""
    from tqdm import tqdm

    from gradcam.dissect.text import save_neurons, text_explanations
    from gradcam.methods.registry import GRAD_CAM

    texts = text_explanations(loaded, explanation.input, explanation.results[GRAD_CAM], names)
    save_neurons(texts, image, folder)
    for text in texts:
        tqdm.write(f"  {text}", file=sys.stdout)
