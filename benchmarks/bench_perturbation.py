"""Perturbation CAMs side by side: gradcam's Score-CAM and Ablation-CAM against
pytorch-grad-cam (default and best batch size) and torchcam, ResNet-50 (random weights) or
EfficientNet-Lite0 (its ImageNet weights), the bundled photo at 224 px, CPU.

Run from the repository root (no network: random seeded weights)::

    .venv/bin/python benchmarks/bench_perturbation.py                 # 128 channels, 3 rounds
    .venv/bin/python benchmarks/bench_perturbation.py --channels 0    # whole layer (slow)
    .venv/bin/python benchmarks/bench_perturbation.py --model efficientnet_lite0 --channels 0
    .venv/bin/python benchmarks/bench_perturbation.py --channels 0 --methods score-cam \
        --peers "pytorch-grad-cam default"                        # ResNet-50, whole layer

Every channel of the layer costs each library one forward pass of the network (Score-CAM) or
of the network after the layer (our Ablation-CAM; pytorch-grad-cam's runs the whole network):
``layer4`` has 2048 channels, 2048 ResNet-50 passes, minutes per call on a CPU. So by default
every library explains the first ``--channels`` channels only: each case runs the clean
forward pass, scores those channels' perturbed copies and sums the weighted maps, through
the libraries' own weight functions (ours: a subclass that limits the channels; a whole-layer
call costs about ``2048 / channels`` times as much). ``--channels 0`` times the public calls
on the whole layer.

Cases run interleaved, the order rotated every round; the table gives median wall and CPU
seconds over ``--rounds`` and each peer's median over ours (above 1: ours is faster).
pytorch-grad-cam's defaults are batch 16 (Score-CAM) and 32 (Ablation-CAM), torchcam's 32;
``--best-batch`` (8: the fastest per image for ResNet-50 on the CPU we measured) is the
peers' best. Report the machine load (printed) with the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' progress bars

import torch
import torchvision
from torch import Tensor, nn

import gradcam
from gradcam.images import Preprocess
from gradcam.methods.perturbation import CopyRunner
from gradcam.targets import ResolvedTargets

Case = Callable[[], Tensor]
PHOTO = Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg"


class _FirstScoreCAM(gradcam.ScoreCAM):
    channels = 0

    def channel_weights(
        self,
        x: Tensor,
        activations: Tensor,
        resolved: ResolvedTargets,
        columns: list[list[int]],  # type: ignore[override]
        run: CopyRunner,
    ) -> Tensor:
        part = super().channel_weights(x, activations[:, : self.channels], resolved, columns, run)
        weights = part.new_zeros(*part.shape[:2], activations.shape[1])
        weights[..., : self.channels] = part
        return weights


class _FirstAblationCAM(gradcam.AblationCAM):
    channels = 0

    def ablated(self, activation: Tensor) -> Tensor:
        kept = super().ablated(activation)
        return kept[kept < self.channels]


def _activations(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    found: dict[str, Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: found.setdefault("a", out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return found["a"]


def score_cases(
    model: nn.Module, layer_name: str, x: Tensor, cls: int, n: int, best: int
) -> dict[str, Case]:
    from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TcScoreCAM

    layer = model.get_submodule(layer_name)
    targets = [ClassifierOutputTarget(cls)]
    ours_cls = gradcam.ScoreCAM
    if n:
        ours_cls = type("First", (_FirstScoreCAM,), {"channels": n})
    ours = ours_cls(model, layer_name, progress=False)

    def pgc(batch: int | None) -> Case:
        def case() -> Tensor:
            peer = PgcScoreCAM(model, [layer])
            if batch is not None:
                peer.batch_size = batch
            try:
                if not n:
                    return torch.from_numpy(peer(input_tensor=x, targets=targets))
                peer.activations_and_grads(x)
                acts = peer.activations_and_grads.activations[0][:, :n].numpy()
                return torch.from_numpy(peer.get_cam_image(x, layer, targets, acts, None))
            finally:
                peer.activations_and_grads.release()

        return case

    def torchcam(batch: int) -> Case:
        def case() -> Tensor:
            cam = TcScoreCAM(model, layer_name, batch_size=batch)
            try:
                with torch.no_grad():
                    model(x)
                if not n:
                    return cam(class_idx=cls)[0]
                a = cam.hook_a[0]
                with torch.no_grad(), cam._hooks_off(), cam._eval_mode():
                    (w,) = cam._get_score_weights([cam._normalize(a[:, :n].clone(), 2)], [cls])
                return torch.relu(torch.einsum("bc,bchw->bhw", w, a[:, :n]))
            finally:
                cam.remove_hooks()

        return case

    return {
        "gradcam": lambda: ours(x, [cls]).raw,
        "pytorch-grad-cam default (16)": pgc(None),
        f"pytorch-grad-cam batch {best}": pgc(best),
        "torchcam default (32)": torchcam(32),
        f"torchcam batch {best}": torchcam(best),
    }


def ablation_cases(
    model: nn.Module, layer_name: str, x: Tensor, cls: int, n: int, best: int
) -> dict[str, Case]:
    from pytorch_grad_cam import AblationCAM as PgcAblationCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.get_submodule(layer_name)
    targets = [ClassifierOutputTarget(cls)]
    ours_cls = gradcam.AblationCAM
    if n:
        ours_cls = type("First", (_FirstAblationCAM,), {"channels": n})
    ours = ours_cls(model, layer_name, progress=False)

    def pgc(batch: int) -> Case:
        def case() -> Tensor:
            peer = PgcAblationCAM(model, [layer], batch_size=batch)
            try:
                if not n:
                    return torch.from_numpy(peer(input_tensor=x, targets=targets))
                peer.activations_and_grads(x)
                acts = peer.activations_and_grads.activations[0][:, :n].numpy()
                return torch.from_numpy(peer.get_cam_image(x, layer, targets, acts, None))
            finally:
                peer.activations_and_grads.release()

        return case

    return {
        "gradcam": lambda: ours(x, [cls]).raw,
        "pytorch-grad-cam default (32)": pgc(32),
        f"pytorch-grad-cam batch {best}": pgc(best),
    }


def run(cases: dict[str, Case], rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    names = list(cases)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            cases[name]()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
            print(f"  round {r + 1} {name}: {times[name][0][-1]:.1f} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="resnet50 or efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layer", default=None, help="default: the model's default layer")
    parser.add_argument("--channels", type=int, default=128, help="0: the whole layer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--best-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--methods", default="score-cam,ablation-cam")
    parser.add_argument(
        "--peers",
        default="",
        help="only the peer cases whose name contains one of these (comma-separated), "
        "e.g. 'pytorch-grad-cam default' for a whole-layer run; default: every peer case",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "resnet50":
        # Random weights (nothing is downloaded), the photo normalized as ImageNet models expect.
        model = torchvision.models.resnet50(weights=None).eval()
        layer = args.layer or "layer4"
    else:
        loaded = gradcam.load_model(args.model)
        model, layer = loaded.module, args.layer or loaded.default_layer
    x = Preprocess(args.size, max_ratio=1.0)(gradcam.load_image(PHOTO))
    args.layer = layer
    with torch.no_grad():
        cls = int(model(x).argmax())
    channels = _activations(model, model.get_submodule(args.layer), x).shape[1]
    n = min(args.channels, channels)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(
        f"{args.model} {args.size} px (the bundled photo), {args.layer} ({channels} channels, "
        f"{'all' if not n else f'first {n}'}), {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds, load average before: {load}"
    )
    builders = {"score-cam": score_cases, "ablation-cam": ablation_cases}
    rows = []
    for method in args.methods.split(","):
        cases = builders[method](model, args.layer, x, cls, n, args.best_batch)
        wanted = [w for w in args.peers.split(",") if w]
        cases = {
            k: c
            for k, c in cases.items()
            if k == "gradcam" or not wanted or any(w in k for w in wanted)
        }
        print(f"{method}:")
        times = run(cases, args.rounds)
        ours = statistics.median(times["gradcam"][0])
        for name, (wall, cpu) in times.items():
            ratio = statistics.median(wall) / ours
            rows.append(
                f"| {method} | {name} | {statistics.median(wall):.2f} | "
                f"{statistics.median(cpu):.2f} | {ratio:.2f} |"
            )
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\nload average after: {load}\n")
    print("| method | library | wall s (median) | CPU s (median) | peer / ours |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
