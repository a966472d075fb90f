"""Every registered method side by side with our Grad-CAM and with its peers, in one run.

Run from the repository root (no network; torchvision models use random weights)::

    .venv/bin/python benchmarks/bench_methods.py                       # ResNet-50, 224 px
    .venv/bin/python benchmarks/bench_methods.py --model vgg16 --methods gradcam++,layercam
    .venv/bin/python benchmarks/bench_methods.py --quick               # smoke test

For each method of the registry (``--methods``, default all) on one image of the bundled
photo, the cases are: ours for one class (``1``), ours for the top-5 classes in one call
(``top5``), and each peer that implements the same method for one class at the peer's default
settings (pytorch-grad-cam 1.5.7, torchcam 0.5.0, Captum for the pixel-space attributions).
Our Grad-CAM for one class and for the top-5 are the references of every ratio.

Gradient methods (one forward and one backward pass, whatever the method) run interleaved,
every case once a round, the order rotated every round, ``--rounds`` rounds after a warm-up;
methods with many passes (``needs.many_passes`` in their registry entry: perturbation,
noise, augmentation) run ``--slow-rounds`` times each after the agreement call, since one call
takes seconds to minutes. Medians (and minimums) are reported, and ratios of medians from the
same run.

Agreement: the first call of every case is compared with ours: heatmaps upsampled bilinearly
to the input and min-max normalized per map, pixel-space maps divided by their largest
absolute value; the table gives the largest absolute difference over all pixels (``-`` where
the peer has no such method; a method whose definition differs from the peer's by design is
stated in its docstring and tested in ``tests/methods``).

The targets of the issue: a gradient method's one-class median within 1.10x of our Grad-CAM's,
and its top-5 within 1.25x of its own one class.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from bench_core import build, log, table, time_cases
from torch import Tensor, nn

import gradcam
from gradcam.methods import method_spec, method_specs

# Our name -> (module, class) of each peer's implementation of the same method.
PEERS: dict[str, dict[str, tuple[str, str]]] = {
    "pytorch-grad-cam": {
        "gradcam": ("pytorch_grad_cam", "GradCAM"),
        "hirescam": ("pytorch_grad_cam", "HiResCAM"),
        "gradcam-elementwise": ("pytorch_grad_cam", "GradCAMElementWise"),
        "gradcam++": ("pytorch_grad_cam", "GradCAMPlusPlus"),
        "xgradcam": ("pytorch_grad_cam", "XGradCAM"),
        "layercam": ("pytorch_grad_cam", "LayerCAM"),
        "score-cam": ("pytorch_grad_cam", "ScoreCAM"),
        "ablation-cam": ("pytorch_grad_cam", "AblationCAM"),
        "eigen-cam": ("pytorch_grad_cam", "EigenCAM"),
        "eigen-gradcam": ("pytorch_grad_cam", "EigenGradCAM"),
        "kpca-cam": ("pytorch_grad_cam", "KPCA_CAM"),
        "fullgrad": ("pytorch_grad_cam", "FullGrad"),
        "shapley-cam": ("pytorch_grad_cam", "ShapleyCAM"),
        "fem": ("pytorch_grad_cam", "FEM"),
    },
    "torchcam": {
        "gradcam": ("torchcam.methods", "GradCAM"),
        "gradcam++": ("torchcam.methods", "GradCAMpp"),
        "smooth-gradcam++": ("torchcam.methods", "SmoothGradCAMpp"),
        "xgradcam": ("torchcam.methods", "XGradCAM"),
        "layercam": ("torchcam.methods", "LayerCAM"),
        "score-cam": ("torchcam.methods", "ScoreCAM"),
        "ss-cam": ("torchcam.methods", "SSCAM"),
        "is-cam": ("torchcam.methods", "ISCAM"),
        "cam": ("torchcam.methods", "CAM"),
    },
    "captum": {
        "integrated-gradients": ("captum.attr", "IntegratedGradients"),
        "smoothgrad": ("captum.attr", "NoiseTunnel"),
        "guided-backprop": ("captum.attr", "GuidedBackprop"),
        "deconvolution": ("captum.attr", "Deconvolution"),
        "occlusion": ("captum.attr", "Occlusion"),
    },
}
SIZE = 224
Call = Callable[[Tensor], Tensor]


def photo(size: int) -> Tensor:
    """The bundled photo, resized to ``size`` x ``size`` and normalized like ImageNet."""
    image = gradcam.load_image(
        str(importlib.resources.files("gradcam") / "data" / "cat_and_coffee.jpg")
    )
    x = torch.from_numpy(np.asarray(image.resize((size, size)), dtype=np.float32) / 255)
    x = x.permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def comparable(maps: Any, size: tuple[int, int], pixel: bool) -> Tensor:
    """(N, H, W) heatmaps min-max normalized, or pixel maps over their largest |value|."""
    t = torch.as_tensor(np.asarray(maps) if not isinstance(maps, Tensor) else maps).float()
    t = t.detach()
    if pixel:
        return t / t.abs().amax().clamp(min=1e-12)
    if t.dim() == 4:
        t = t[:, 0]
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if tuple(t.shape[-2:]) != size:
        t = F.interpolate(t.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = t.flatten(1).amin(1).view(-1, 1, 1)
    high = t.flatten(1).amax(1).view(-1, 1, 1)
    return (t - low) / (high - low).clamp(min=1e-12)


def ours(name: str, model: nn.Module, layer: str, cls: int) -> tuple[Call, Call]:
    method = gradcam.create_method(name, model, layer)
    return (lambda x: method(x, [cls]).maps[:, 0]), (lambda x: method(x, gradcam.TopK(5)).maps[0])


def peer(library: str, name: str, model: nn.Module, layer: str, cls: int) -> Call | None:
    """The peer's one-class call on its own copy of ``model``, or ``None``."""
    where = PEERS[library].get(name)
    if where is None:
        return None
    try:
        peer_class = getattr(importlib.import_module(where[0]), where[1])
    except (ImportError, AttributeError):
        return None
    model = copy.deepcopy(model)
    if library == "pytorch-grad-cam":
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        target_layers = [] if name == "fullgrad" else [model.get_submodule(layer)]
        cam = peer_class(model=model, target_layers=target_layers)
        return lambda x: cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])
    if library == "torchcam":
        extractor = peer_class(model, layer)

        def call(x: Tensor) -> Tensor:
            # torchcam keeps its hooks on the model: only one extractor may be alive at a time.
            scores = model(x)
            return extractor(class_idx=cls, scores=scores)[0]

        return call
    if name == "smoothgrad":
        from captum.attr import Saliency

        tunnel = peer_class(Saliency(model))
        return lambda x: tunnel.attribute(x, nt_type="smoothgrad", target=cls, abs=False)
    if name == "occlusion":
        occ = peer_class(model)
        return lambda x: occ.attribute(
            x, sliding_window_shapes=(3, 35, 35), strides=(3, 8, 8), target=cls
        )[:, 0]
    attribution = peer_class(model)
    return lambda x: attribution.attribute(x, target=cls)


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ({min(samples) * 1000:.1f})"


def run(args: argparse.Namespace) -> list[str]:
    torch.set_num_threads(args.threads)
    model, layer = build(args.model)
    x = photo(args.size)
    with torch.no_grad():
        cls = int(model(x).argmax())
    size = (args.size, args.size)
    names = args.methods or [s.name for s in method_specs()]
    reference = ours("gradcam", model, layer, cls)
    fast: dict[str, Call] = {"gradcam/1": reference[0], "gradcam/top5": reference[1]}
    slow: dict[str, Call] = {}
    agreement: dict[str, dict[str, str]] = {}
    for name in names:
        spec = method_spec(name)
        one, top5 = ours(name, model, layer, cls)
        pixel = spec.kind == "pixel"
        ours_map = comparable(one(x), size, pixel)
        cases = {f"{name}/1": one, f"{name}/top5": top5}
        agreement[name] = {}
        for library in PEERS:
            call = peer(library, name, model, layer, cls)
            if call is None:
                continue
            try:
                theirs = comparable(call(x), size, pixel)
            except Exception as exc:  # a peer that fails is reported, not fatal
                agreement[name][library] = f"fails: {type(exc).__name__}"
                continue
            diff = (ours_map - theirs).abs().max().item() if theirs.shape == ours_map.shape else -1
            agreement[name][library] = f"{diff:.1e}" if diff >= 0 else "shape differs"
            cases[f"{name}/{library}"] = call
        (slow if spec.needs.many_passes else fast).update(cases)
        log(f"{name}: agreement {agreement[name]}")
    times = time_cases(fast, x, args.rounds, warmup=1)
    for case, call in slow.items():
        samples = []
        for _ in range(args.slow_rounds):
            start = time.perf_counter()
            call(x)
            samples.append(time.perf_counter() - start)
        times[case] = samples
        log(f"{case}: {median_ms(samples)} ms")
    base = statistics.median(times["gradcam/1"])
    rows = []
    for name in names:
        one = times[f"{name}/1"]
        top5 = times[f"{name}/top5"]
        peers = [
            f"{lib}: {median_ms(times[f'{name}/{lib}'])} ms, "
            f"{statistics.median(times[f'{name}/{lib}']) / statistics.median(one):.2f}x, "
            f"diff {agreement[name][lib]}"
            if f"{name}/{lib}" in times
            else f"{lib}: {agreement[name][lib]}"
            for lib in agreement[name]
        ]
        rows.append(
            [
                f"`{name}`",
                median_ms(one),
                f"{statistics.median(one) / base:.2f}",
                median_ms(top5),
                f"{statistics.median(top5) / statistics.median(one):.2f}",
                "; ".join(peers) or "-",
            ]
        )
    header = (
        "method | 1 class, ms median (min) | / our Grad-CAM | top-5, ms | top-5 / 1 class "
        "| peers at their defaults: median (min), peer / ours, largest map difference"
    )
    lines = [
        f"{args.model}, {args.size}x{args.size}, one image, {args.threads} threads, "
        f"{args.rounds} interleaved rounds (methods with extra forwards: {args.slow_rounds}); "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}",
        "",
        *table(header, rows),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--methods", type=lambda v: [m for m in v.split(",") if m])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--slow-rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="2 rounds, 64 px, a few methods")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.size = 2, 64
        args.methods = args.methods or ["gradcam", "counterfactual", "guided-backprop"]
    print("\n".join(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
