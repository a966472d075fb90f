"""Core CPU benchmark: method costs against a plain forward and naive "forward + grad" references.

Run from the repository root (no network needed; torchvision models use random weights)::

    .venv/bin/python benchmarks/bench_core.py                   # full run, all three models
    .venv/bin/python benchmarks/bench_core.py --quick --models resnet50   # smoke test

For ResNet-50, VGG-16 (torchvision, ``weights=None``) and the embedded EfficientNet-Lite0, on a
(B, 3, 224, 224) input, it times at batch 1:

* a no-grad forward;
* the reference "forward + gradient to the layer" (forward hook keeps the layer output,
  parameters require grad as usual, then ``torch.autograd.grad(logits[0, c], A)``);
* ``GradCAM(...)(x, [c])`` and ``GradCAM(...)(x, TopK(5))``;
* the reference "forward + gradient to the input" (``xi = x.detach().requires_grad_(True)``,
  then ``torch.autograd.grad(model(xi)[0, c], xi)``);
* ``GuidedBackprop(model)(x, [c])`` (one forward, one guided backward to the input) and
  ``GuidedGradCAM(model, layer)(x, [c])`` (one forward, a backward to the layer and a guided
  backward to the input).

All cases of one model run interleaved, the order rotated every round; median and min are
reported. The first table holds the Grad-CAM cases and memory, the second the pixel-space ones.

Occlusion (``Occlusion(model, window=35, stride=8)``, its default batch size: 625 copies at
224x224, plus the clean image) is far too slow for those rounds: it runs on its own, with no
warm-up, ``--occlusion-rounds`` times for each of ``--occlusion-models`` (default
EfficientNet-Lite0 only; ``none`` or ``--quick`` skips it), in a third table with its median
time, the model calls it made, and its ratio to that model's Grad-CAM 1-class median.

Memory: each (model, case, batch) runs in a fresh subprocess that builds the model and input,
warms the case up once at batch 1 on a small 64x64 input (lazy allocations done, without already
reaching the peak being measured), trims the heap and resets its peak RSS to the current RSS
(``/proc/self/clear_refs``: loading and probing the model peak higher than a batch-1 pass), runs
the case once and reports the growth of the peak RSS over that baseline. The peak is ``VmHWM``
from /proc/self/status: on Linux ``ru_maxrss`` of an exec'd child starts at the *parent's* peak
RSS and cannot be reset (it is the fallback where /proc is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

import gradcam

MODELS = ("resnet50", "vgg16", "efficientnet_lite0")
CAM_CASES = ("forward", "fwd_grad", "gradcam_1", "gradcam_top5")
PIXEL_CASES = ("fwd_grad_input", "guided_bp", "guided_gradcam")
CASES = CAM_CASES + PIXEL_CASES
MEMORY_CASES = ("forward", "gradcam_1")
SIZE = 224
TARGET_CLASS = 281  # any class: the cost does not depend on which one
TARGETS = {
    "gradcam_1/fwd_grad": 1.05,
    "top5/gradcam_1": 1.25,
    "mem_big": 1.3,
    "guided_bp/fwd_grad_input": 1.15,
    "guided_gradcam/fwd_grad_input": 1.2,
}
OCCLUSION = {"window": 35, "stride": 8}  # batch size: the library's default

Case = Callable[[Tensor], object]


def build(name: str) -> tuple[nn.Module, str]:
    """The model in eval mode and its default Grad-CAM layer name."""
    if name == "efficientnet_lite0":
        loaded = gradcam.load_model()
        return loaded.module, loaded.default_layer
    module = getattr(torchvision.models, name)(weights=None).eval()
    return module, gradcam.find_default_layer(module, torch.zeros(1, 3, SIZE, SIZE))


def make_cases(model: nn.Module, layer_name: str) -> dict[str, Case]:
    layer = model.get_submodule(layer_name)
    cam = gradcam.GradCAM(model, layer_name)

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

    guided = gradcam.GuidedBackprop(model)
    guided_cam = gradcam.GuidedGradCAM(model, layer_name)

    def fwd_grad_input(x: Tensor) -> object:
        xi = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(xi)[0, TARGET_CLASS], xi)

    def guided_bp(x: Tensor) -> object:
        return guided(x, [TARGET_CLASS])

    def guided_gradcam(x: Tensor) -> object:
        return guided_cam(x, [TARGET_CLASS])

    runs = (forward, fwd_grad, gradcam_1, gradcam_top5, fwd_grad_input, guided_bp, guided_gradcam)
    return dict(zip(CASES, runs, strict=True))


def time_cases(
    cases: dict[str, Case], x: Tensor, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of every case; each round runs every case once, in a rotated order."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name](x)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            cases[name](x)
            times[name].append(time.perf_counter() - start)
    return times


def median_seconds(
    calls: dict[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of every nullary call, timed as :func:`time_cases` times its cases."""

    def ignoring_input(call: Callable[[], object]) -> Case:
        return lambda _x: call()

    cases = {name: ignoring_input(call) for name, call in calls.items()}
    times = time_cases(cases, torch.empty(0), rounds, warmup)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_kib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def reset_peak_rss() -> None:
    """Release free heap memory and lower the peak (VmHWM) to the current RSS, where possible.

    Loading a model (and probing it for its default layer) peaks higher than a batch-1 pass;
    without this reset that earlier peak would hide the case's own.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def memory_child(model_name: str, case: str, batch: int) -> None:
    """Body of one ``--memory-case`` subprocess: print the peak RSS growth in MB as JSON."""
    torch.manual_seed(0)
    model, layer_name = build(model_name)
    run = make_cases(model, layer_name)[case]
    x = torch.randn(batch, 3, SIZE, SIZE)
    run(torch.randn(1, 3, 64, 64))  # warm-up at batch 1
    gc.collect()
    reset_peak_rss()
    before = peak_rss_kib()
    run(x)
    after = peak_rss_kib()
    print(json.dumps({"delta_mb": (after - before) / 1024}))


def measure_memory(model_name: str, case: str, batch: int, threads: int) -> float:
    argv = [sys.executable, os.path.abspath(__file__), "--threads", str(threads)]
    argv += ["--memory-case", model_name, case, str(batch)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory case {model_name}/{case}/b{batch} failed:\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["delta_mb"])


def mark(value: float, target: float) -> str:
    return f"{value:.2f} {'ok' if value <= target else 'MISSED'}"


def ms(samples: list[float]) -> str:
    return f"{1000 * statistics.median(samples):.1f} (min {1000 * min(samples):.1f})"


@dataclass
class ModelRows:
    """One model's rows of the first two tables, and its Grad-CAM 1-class median (seconds)."""

    cam_row: list[str]
    pixel_row: list[str]
    gradcam_1_s: float


def run_model(name: str, args: argparse.Namespace, big: int) -> ModelRows:
    """Time (and measure the memory of) every case of ``name``."""
    log(f"[{name}] building")
    torch.manual_seed(0)
    model, layer_name = build(name)
    x = torch.randn(1, 3, SIZE, SIZE)
    log(f"[{name}] timing (layer {layer_name}, {args.rounds} rounds)")
    times = time_cases(make_cases(model, layer_name), x, args.rounds, args.warmup)
    med = {case: statistics.median(samples) for case, samples in times.items()}
    label = f"{name} (`{layer_name}`)"
    pixel_row = [label, *(ms(times[case]) for case in PIXEL_CASES)]
    for case in ("guided_bp", "guided_gradcam"):
        ratio = med[case] / med["fwd_grad_input"]
        pixel_row.append(mark(ratio, TARGETS[f"{case}/fwd_grad_input"]))
    row = [label, *(ms(times[case]) for case in CAM_CASES)]
    row.append(mark(med["gradcam_1"] / med["fwd_grad"], TARGETS["gradcam_1/fwd_grad"]))
    row.append(mark(med["gradcam_top5"] / med["gradcam_1"], TARGETS["top5/gradcam_1"]))
    if args.no_memory:
        return ModelRows([*row, "-", "-", "-", "-", "-"], pixel_row, med["gradcam_1"])
    mem: dict[tuple[int, str], float] = {}
    for batch in (1, big):
        for case in MEMORY_CASES:
            log(f"[{name}] memory {case} batch {batch}")
            mem[batch, case] = measure_memory(name, case, batch, args.threads)
    row += [f"{mem[b, c]:.0f}" for b in (1, big) for c in MEMORY_CASES]
    ratio = mem[big, "gradcam_1"] / max(mem[big, "forward"], 1e-9)
    row.append(mark(ratio, TARGETS["mem_big"]))
    return ModelRows(row, pixel_row, med["gradcam_1"])


def run_occlusion(name: str, args: argparse.Namespace, gradcam_1_s: float | None) -> list[str]:
    """One row of the occlusion table: ``args.occlusion_rounds`` runs, no warm-up.

    ``gradcam_1_s`` is the model's Grad-CAM 1-class median from the interleaved rounds; when the
    model was not in them, Grad-CAM 1-class is timed here (``args.rounds`` runs, warmed up).
    """
    log(f"[{name}] occlusion: building")
    torch.manual_seed(0)
    model, layer_name = build(name)
    x = torch.randn(1, 3, SIZE, SIZE)
    if gradcam_1_s is None:
        log(f"[{name}] occlusion: timing Grad-CAM 1 class ({args.rounds} rounds)")
        cam_case = {"gradcam_1": make_cases(model, layer_name)["gradcam_1"]}
        gradcam_1_s = statistics.median(
            time_cases(cam_case, x, args.rounds, args.warmup)["gradcam_1"]
        )
    occlusion = gradcam.Occlusion(model, progress=False, **OCCLUSION)
    windows = len(occlusion.windows(SIZE, SIZE))
    calls = images = 0

    def count(_module: nn.Module, inputs: tuple[object, ...], _output: object) -> None:
        nonlocal calls, images
        calls += 1
        first = inputs[0] if inputs else None
        images += first.shape[0] if isinstance(first, Tensor) else 1

    samples: list[float] = []
    handle = model.register_forward_hook(count)
    try:
        for r in range(args.occlusion_rounds):
            log(f"[{name}] occlusion run {r + 1}/{args.occlusion_rounds}")
            start = time.perf_counter()
            occlusion(x, [TARGET_CLASS])
            samples.append(time.perf_counter() - start)
    finally:
        handle.remove()
    runs = max(args.occlusion_rounds, 1)
    median = statistics.median(samples)
    return [
        f"{name}",
        f"{windows}",
        f"{images // runs} images in {calls // runs} calls",
        f"{median:.2f} (min {min(samples):.2f})",
        f"{1000 * gradcam_1_s:.1f}",
        f"{median / gradcam_1_s:.0f}x",
    ]


def table(header: str, rows: list[list[str]]) -> list[str]:
    cells = header.split("|")
    return [
        "| " + " | ".join(cells) + " |",
        "|" + "---|" * len(cells),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def model_list(value: str, flag: str) -> list[str]:
    names = [m.strip() for m in value.split(",") if m.strip()]
    if names == ["none"]:
        return []
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise SystemExit(f"{flag}: unknown models {unknown}; choose from {', '.join(MODELS)}")
    return names


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of models")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (default 7)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory cases")
    parser.add_argument(
        "--quick", action="store_true", help="1 round, batch 4, no occlusion: smoke test"
    )
    parser.add_argument("--out", help="also write the Markdown to this file")
    parser.add_argument(
        "--occlusion-models",
        default="efficientnet_lite0",
        help="comma list of models to run Occlusion on, or 'none' (default efficientnet_lite0)",
    )
    parser.add_argument(
        "--occlusion-rounds", type=int, default=3, help="Occlusion runs per model (default 3)"
    )
    parser.add_argument(
        "--memory-case", nargs=3, metavar=("MODEL", "CASE", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.warmup = 2
    if args.quick:
        args.rounds, args.warmup = 1, 1
        args.occlusion_models = "none"
    if args.rounds < 1 or args.occlusion_rounds < 1:
        parser.error("--rounds and --occlusion-rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_case:
        model_name, case, batch = args.memory_case
        memory_child(model_name, case, int(batch))
        return 0
    models = model_list(args.models, "--models")
    occlusion_models = model_list(args.occlusion_models, "--occlusion-models")
    big = 4 if args.quick else 32
    started = time.perf_counter()
    results = {name: run_model(name, args, big) for name in models}
    occlusion_rows = [
        run_occlusion(name, args, results[name].gradcam_1_s if name in results else None)
        for name in occlusion_models
    ]
    cam_header = (
        "model (layer)|forward ms|fwd+grad-to-layer ms|Grad-CAM 1 class ms|Grad-CAM top-5 ms|"
        "1-class / fwd+grad (<= 1.05)|top-5 / 1-class (<= 1.25)|b1 forward MB|b1 Grad-CAM MB|"
        f"b{big} forward MB|b{big} Grad-CAM MB|b{big} Grad-CAM / forward (<= 1.3)"
    )
    pixel_header = (
        "model (layer)|fwd+grad-to-input ms|Guided Backprop ms|Guided Grad-CAM ms|"
        "GB / fwd+grad-to-input (<= 1.15)|Guided Grad-CAM / fwd+grad-to-input (<= 1.2)"
    )
    occlusion_header = (
        "model|occluded windows|model inputs per run|Occlusion s|Grad-CAM 1 class ms|"
        "Occlusion / Grad-CAM 1 class"
    )
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines = [
        f"Command: `{shlex.join(sys.orig_argv)}` | torch {torch.__version__} | "
        f"threads {torch.get_num_threads()} | CPUs {os.cpu_count()} | {now}",
        "",
        *table(cam_header, [r.cam_row for r in results.values()]),
        "",
        *table(pixel_header, [r.pixel_row for r in results.values()]),
        "",
    ]
    if occlusion_rows:
        lines += [*table(occlusion_header, occlusion_rows), ""]
    lines += [
        f"Times: median (min) of {args.rounds} interleaved rounds at batch 1, CPU, 224x224; "
        "all seven cases of a model share the rounds.",
        "Memory: growth of peak RSS (MB) over the loaded model after a batch-1 warm-up, "
        "each case in a fresh subprocess.",
    ]
    if occlusion_rows:
        o = OCCLUSION
        lines.append(
            f"Occlusion: window {o['window']}, stride {o['stride']}, default batch size "
            f"(4 on the CPU), batch 1, 224x224; median (min) seconds of "
            f"{args.occlusion_rounds} runs without warm-up, run after the interleaved rounds."
        )
    lines.append(f"Total wall time: {time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
