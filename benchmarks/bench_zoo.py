"""Grad-CAM with no layer given on every torchvision classifier: the layer chosen, the map, time.

Run from the repository root (random weights, no network)::

    .venv/bin/python benchmarks/bench_zoo.py                  # all 80 models, 224x224
    .venv/bin/python benchmarks/bench_zoo.py --smallest --size 64   # one per family, small

For each model (built with ``weights=None`` after ``torch.manual_seed(0)``), one random image
of ``--size`` (ViT and MaxViT take 224 only; Inception-v3 gets at least 128, where its last
block is still 2x2) is explained with ``GradCAM(model)`` and its top-1 class; the row holds the
chosen layer, its map size, and the time of that first call (the probe pass that chooses the
layer, one forward pass, one backward pass to the layer). Every map is checked: finite and
not constant, and the model bit-identical afterwards (parameters, buffers, training flags, no
hook left); a failed check fails the run. Prints a Markdown table (the README's).

torchvision initializes ViT's classification head to zero, which makes every class score 0 and
every gradient 0; weights that are all zero are drawn at random (normal, std 0.02) so that the
maps say something.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

import gradcam

#: The smallest variant of each family (fewest parameters), for quick runs and the default test.
SMALLEST = (
    "alexnet",
    "convnext_tiny",
    "densenet121",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "googlenet",
    "inception_v3",
    "maxvit_t",
    "mnasnet0_5",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "resnet18",
    "resnext50_32x4d",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "swin_t",
    "swin_v2_t",
    "vgg11",
    "vit_b_32",
    "wide_resnet50_2",
)


def family(name: str) -> str:
    """The family of a torchvision model name: ``"regnet_x_400mf"`` -> ``"regnet_x"``."""
    found = re.match(r"[a-z]+(_v\d|_[xy](?=_))?", name)
    assert found is not None
    return found.group(0)


def all_models() -> list[str]:
    """Every torchvision classification architecture."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def input_size(name: str, size: int) -> int:
    """``size``, or the model's own input size where it accepts no other."""
    if name.startswith(("vit_", "maxvit_")):
        return 224  # fixed when the model is built
    if name == "inception_v3":
        return max(size, 128)  # its last block is 1x1 below 107
    return size


def build(name: str) -> nn.Module:
    """The model with seeded random weights (all-zero weights drawn at random), in eval mode."""
    torch.manual_seed(0)
    with warnings.catch_warnings():  # GoogLeNet's and Inception's notes on their init
        warnings.simplefilter("ignore", FutureWarning)
        model = torchvision.models.get_model(name, weights=None).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1 and not bool(param.any()):
                param.normal_(0.0, 0.02)
    return model


@dataclass(frozen=True)
class Row:
    """One model's result."""

    model: str
    size: int
    layer: str
    map_size: tuple[int, int]
    seconds: float
    problem: str  # "" when every check passed


def _state(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool], int]:
    hooks = sum(
        len(getattr(m, attr))
        for m in model.modules()
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state, [m.training for m in model.modules()], hooks


def explain(name: str, size: int) -> Row:
    """Build ``name``, run ``GradCAM(model)`` once on a random image, check and time it."""
    model = build(name)
    side = input_size(name, size)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    before = _state(model)
    started = time.perf_counter()
    result = gradcam.GradCAM(model)(x)
    seconds = time.perf_counter() - started
    state, flags, hooks = _state(model)
    problems = []
    if not bool(torch.isfinite(result.raw).all()):
        problems.append("map not finite")
    elif not bool(result.raw.amax() > result.raw.amin()):
        problems.append("map constant")
    if state.keys() != before[0].keys() or any(
        not torch.equal(v, before[0][k]) for k, v in state.items()
    ):
        problems.append("weights changed")
    if flags != before[1] or hooks != before[2]:
        problems.append("flags or hooks changed")
    raw = result.raw.shape
    return Row(name, side, result.layer, (raw[-2], raw[-1]), seconds, ", ".join(problems))


def table(rows: list[Row]) -> str:
    """The Markdown table of ``rows``."""
    lines = ["| model | input | chosen layer | map | time (s) |", "|---|---|---|---|---|"]
    for row in rows:
        h, w = row.map_size
        note = f" **{row.problem}**" if row.problem else ""
        lines.append(
            f"| {row.model} | {row.size} | `{row.layer}`{note} | {h}x{w} | {row.seconds:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input side (default 224)")
    parser.add_argument("--smallest", action="store_true", help="one model per family")
    parser.add_argument("--models", nargs="+", help="these models only")
    args = parser.parse_args(argv)
    names = args.models or (list(SMALLEST) if args.smallest else all_models())
    rows = []
    for name in names:
        row = explain(name, args.size)
        print(f"{name}: {row.layer} {row.seconds:.2f}s {row.problem}", file=sys.stderr)
        rows.append(row)
    print(table(rows))
    total = sum(r.seconds for r in rows)
    print(f"\n{len(rows)} models, {total:.1f} s of Grad-CAM calls", file=sys.stderr)
    return 1 if any(r.problem for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
