"""Video benchmark (issue 26): Grad-CAM on torchvision's r3d_18 against its own lower bound,
MONAI's ``monai.visualize.GradCAM`` and pytorch-grad-cam's 3-D ``GradCAM``, time and memory.

Run from the repository root (no network: r3d_18 with random weights, 400 classes)::

    .venv/bin/python benchmarks/bench_video.py                  # 8 x 112 x 112, 7 rounds
    .venv/bin/python benchmarks/bench_video.py --quick          # smoke test, 4 x 32 x 32

Time, one (1, 3, T, H, W) clip, one thread, at ``layer4`` (``GradCAM(model)``'s own choice):

* ``forward``: a no-grad forward;
* ``fwd_grad``: the lower bound of any Grad-CAM, a forward plus the gradient of one logit to
  the layer (a forward hook keeps ``layer4``'s output, then ``torch.autograd.grad``);
* ``gradcam_1``: ``GradCAM(model)(x, [c])`` (maps upsampled trilinearly and normalized);
* ``gradcam_top5``: ``GradCAM(model)(x, TopK(5))``: one forward, one batched backward;
* ``monai``: ``monai.visualize.GradCAM(nn_module=copy, target_layers="layer4")(x, class_idx=c)``
  (its maps are upsampled trilinearly and scaled to [1, 0]);
* ``pgc``: ``pytorch_grad_cam.GradCAM(model=copy, target_layers=[copy.layer4])`` with
  ``ClassifierOutputTarget(c)`` (its 3-D maps are resized by ``scipy.ndimage.zoom``).

Each peer runs on its own copy of the model (both keep hooks on it). All cases run
interleaved, the order rotated every round; medians over ``--rounds`` rounds after a warm-up.
Before timing, each peer's raw map is compared with ours (largest absolute difference of the
layer-resolution maps): a fast wrong answer must not pass.

Memory: a batch of ``--memory-batch`` (8) clips, each case in a fresh subprocess, measured as
``bench_core`` does (growth of the peak RSS over a baseline taken after a batch-1 warm-up on a
small clip): ``forward`` (no grad), ``fwd_grad`` and ``gradcam_1`` (one class per clip).

Targets (issue 26): ``gradcam_1 / fwd_grad <= 1.10``, ``gradcam_top5 / gradcam_1 <= 1.15``,
memory ``gradcam_1 / forward <= 1.3``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

import torch
from bench_core import peak_rss_kib, reset_peak_rss, time_cases
from torch import Tensor, nn
from torchvision.models.video import r3d_18

import gradcam

TARGET_CLASS = 7
LAYER = "layer4"
Case = Callable[[Tensor], object]


def build() -> nn.Module:
    torch.manual_seed(0)
    return r3d_18(weights=None).eval()


def own_cases(model: nn.Module) -> dict[str, Case]:
    """Our cases and the references, on ``model`` itself (left untouched)."""
    layer = model.get_submodule(LAYER)
    cam = gradcam.GradCAM(model)

    def forward(x: Tensor) -> object:
        with torch.no_grad():
            return model(x)

    def fwd_grad(x: Tensor) -> object:
        store: list[Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: store.append(out))
        try:
            logits = model(x)
        finally:
            handle.remove()
        return torch.autograd.grad(logits[:, TARGET_CLASS].sum(), store[0])

    def gradcam_1(x: Tensor) -> object:
        return cam(x, [TARGET_CLASS])

    def gradcam_top5(x: Tensor) -> object:
        return cam(x, gradcam.TopK(5))

    return {
        "forward": forward,
        "fwd_grad": fwd_grad,
        "gradcam_1": gradcam_1,
        "gradcam_top5": gradcam_top5,
    }


def peer_cases(model: nn.Module) -> tuple[dict[str, Case], dict[str, Callable[[Tensor], Tensor]]]:
    """The installed peers' cases, each on its own copy, and their raw-map functions."""
    cases: dict[str, Case] = {}
    raws: dict[str, Callable[[Tensor], Tensor]] = {}
    try:
        from monai.visualize import GradCAM as MonaiGradCAM
    except ImportError:
        print("monai not installed: skipped", file=sys.stderr)
    else:
        monai_cam = MonaiGradCAM(nn_module=copy.deepcopy(model), target_layers=LAYER)
        cases["monai"] = lambda x: monai_cam(x, class_idx=TARGET_CLASS)
        raws["monai"] = lambda x: monai_cam.compute_map(x, class_idx=TARGET_CLASS, layer_idx=-1)
    try:
        import numpy as np
        from pytorch_grad_cam import GradCAM as PgcGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        print("pytorch-grad-cam not installed: skipped", file=sys.stderr)
    else:
        twin = copy.deepcopy(model)
        pgc_cam = PgcGradCAM(model=twin, target_layers=[twin.get_submodule(LAYER)])

        def targets(x: Tensor) -> list[object]:
            return [ClassifierOutputTarget(TARGET_CLASS)] * x.shape[0]

        def pgc_raw(x: Tensor) -> Tensor:
            pgc_cam(input_tensor=x, targets=targets(x))
            found = pgc_cam.activations_and_grads
            acts, grads = found.activations[0].numpy(), found.gradients[0].numpy()
            layer = twin.get_submodule(LAYER)
            raw = pgc_cam.get_cam_image(x, layer, targets(x), acts, grads, False)
            return torch.from_numpy(np.maximum(raw, 0))[:, None]

        cases["pgc"] = lambda x: pgc_cam(input_tensor=x, targets=targets(x))
        raws["pgc"] = pgc_raw
    return cases, raws


def memory_child(case: str, batch: int, size: tuple[int, int, int]) -> None:
    """Body of one ``--memory-case`` subprocess: print the peak RSS growth in MB as JSON."""
    model = build()
    run = own_cases(model)[case]
    x = torch.randn(batch, 3, *size)
    run(torch.randn(1, 3, 4, 32, 32))  # warm-up at batch 1, on a small clip
    gc.collect()
    reset_peak_rss()
    before = peak_rss_kib()
    run(x)
    after = peak_rss_kib()
    print(json.dumps({"delta_mb": (after - before) / 1024}))


def measure_memory(case: str, batch: int, size: tuple[int, int, int]) -> float:
    argv = [sys.executable, os.path.abspath(__file__), "--memory-case", case, str(batch)]
    argv += ["--size", *[str(n) for n in size]]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory case {case}/b{batch} failed:\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["delta_mb"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[8, 112, 112], metavar=("T", "H", "W"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-batch", type=int, default=8)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="4 x 32 x 32, 1 round, batch 2")
    parser.add_argument("--memory-case", nargs=2, metavar=("CASE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.warmup, args.memory_batch = [4, 32, 32], 1, 1, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    size = tuple(args.size)
    if args.memory_case:
        memory_child(args.memory_case[0], int(args.memory_case[1]), size)
        return 0
    model = build()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    cases = own_cases(model)
    peers, raws = peer_cases(model)
    ours = gradcam.GradCAM(model)(x, [TARGET_CLASS])
    assert ours.layer == LAYER, ours.layer
    agreement = {
        name: float((raw(x).detach() - ours.raw).abs().max()) for name, raw in raws.items()
    }
    times = time_cases({**cases, **peers}, x, args.rounds, args.warmup)
    median = {name: statistics.median(values) for name, values in times.items()}
    load = os.getloadavg()
    print(f"r3d_18 (random weights), clip 1 x 3 x {' x '.join(map(str, size))}, layer `{LAYER}`,")
    print(f"1 thread, {args.rounds} rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    print("| case | median ms | ratio | target |")
    print("| --- | ---: | ---: | --- |")
    ratios = {
        "forward": ("", ""),
        "fwd_grad": ("", ""),
        "gradcam_1": (median["gradcam_1"] / median["fwd_grad"], "<= 1.10 x fwd_grad"),
        "gradcam_top5": (median["gradcam_top5"] / median["gradcam_1"], "<= 1.15 x gradcam_1"),
    }
    for name in peers:
        ratios[name] = (median[name] / median["gradcam_1"], "peer / gradcam_1")
    for name, (ratio, target) in ratios.items():
        shown = f"{ratio:.2f}" if isinstance(ratio, float) else ""
        print(f"| {name} | {1000 * median[name]:.0f} | {shown} | {target} |")
    if agreement:
        print()
        print(
            "Largest |peer raw - ours raw|: "
            + ", ".join(f"{k} {v:.1e}" for k, v in agreement.items())
        )
    if not args.no_memory:
        batch = args.memory_batch
        memory = {
            case: measure_memory(case, batch, size) for case in ("forward", "fwd_grad", "gradcam_1")
        }
        print()
        print(f"| peak memory, batch {batch} | MB over baseline | ratio to forward | target |")
        print("| --- | ---: | ---: | --- |")
        for case, mb in memory.items():
            target = "<= 1.3" if case == "gradcam_1" else ""
            print(f"| {case} | {mb:.0f} | {mb / memory['forward']:.2f} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
