"""Core CPU benchmark: Grad-CAM cost against a plain forward and a naive "forward + grad".

Run from the repository root (no network needed; torchvision models use random weights)::

    .venv/bin/python benchmarks/bench_core.py                   # full run, all three models
    .venv/bin/python benchmarks/bench_core.py --quick --models resnet50   # smoke test

For ResNet-50, VGG-16 (torchvision, ``weights=None``) and the embedded EfficientNet-Lite0, on a
(B, 3, 224, 224) input, it times at batch 1: a no-grad forward; the reference "forward + gradient
to the layer" (forward hook keeps the layer output, parameters require grad as usual, then
``torch.autograd.grad(logits[0, c], A)``); ``GradCAM(...)(x, [c])``; ``GradCAM(...)(x, TopK(5))``.
Cases of one model run interleaved, the order rotated every round; median and min are reported.

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

import torch
import torchvision
from torch import Tensor, nn

import gradcam

MODELS = ("resnet50", "vgg16", "efficientnet_lite0")
CASES = ("forward", "fwd_grad", "gradcam_1", "gradcam_top5")
MEMORY_CASES = ("forward", "gradcam_1")
SIZE = 224
TARGET_CLASS = 281  # any class: the cost does not depend on which one
TARGETS = {"gradcam_1/fwd_grad": 1.05, "top5/gradcam_1": 1.25, "mem_big": 1.3}

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

    return dict(zip(CASES, (forward, fwd_grad, gradcam_1, gradcam_top5), strict=True))


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


def run_model(name: str, args: argparse.Namespace, big: int) -> list[str]:
    """One Markdown table row for ``name``."""
    log(f"[{name}] building")
    torch.manual_seed(0)
    model, layer_name = build(name)
    x = torch.randn(1, 3, SIZE, SIZE)
    log(f"[{name}] timing (layer {layer_name}, {args.rounds} rounds)")
    times = time_cases(make_cases(model, layer_name), x, args.rounds, args.warmup)
    med = {case: statistics.median(samples) for case, samples in times.items()}
    row = [f"{name} (`{layer_name}`)", *(ms(times[case]) for case in CASES)]
    row.append(mark(med["gradcam_1"] / med["fwd_grad"], TARGETS["gradcam_1/fwd_grad"]))
    row.append(mark(med["gradcam_top5"] / med["gradcam_1"], TARGETS["top5/gradcam_1"]))
    if args.no_memory:
        return [*row, "-", "-", "-", "-", "-"]
    mem: dict[tuple[int, str], float] = {}
    for batch in (1, big):
        for case in MEMORY_CASES:
            log(f"[{name}] memory {case} batch {batch}")
            mem[batch, case] = measure_memory(name, case, batch, args.threads)
    row += [f"{mem[b, c]:.0f}" for b in (1, big) for c in MEMORY_CASES]
    ratio = mem[big, "gradcam_1"] / max(mem[big, "forward"], 1e-9)
    return [*row, mark(ratio, TARGETS["mem_big"])]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of models")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (default 7)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory cases")
    parser.add_argument("--quick", action="store_true", help="1 round, batch 4: smoke test")
    parser.add_argument("--out", help="also write the Markdown to this file")
    parser.add_argument(
        "--memory-case", nargs=3, metavar=("MODEL", "CASE", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.warmup = 2
    if args.quick:
        args.rounds, args.warmup = 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_case:
        model_name, case, batch = args.memory_case
        memory_child(model_name, case, int(batch))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    big = 4 if args.quick else 32
    started = time.perf_counter()
    rows = [run_model(name, args, big) for name in models]
    header = (
        "model (layer)|forward ms|fwd+grad-to-layer ms|Grad-CAM 1 class ms|Grad-CAM top-5 ms|"
        "1-class / fwd+grad (<= 1.05)|top-5 / 1-class (<= 1.25)|b1 forward MB|b1 Grad-CAM MB|"
        f"b{big} forward MB|b{big} Grad-CAM MB|b{big} Grad-CAM / forward (<= 1.3)"
    ).split("|")
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines = [
        f"Command: `{shlex.join(sys.orig_argv)}` | torch {torch.__version__} | "
        f"threads {torch.get_num_threads()} | CPUs {os.cpu_count()} | {now}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"Times: median (min) of {args.rounds} interleaved rounds at batch 1, CPU, 224x224.",
        "Memory: growth of peak RSS (MB) over the loaded model after a batch-1 warm-up, "
        "each case in a fresh subprocess.",
        f"Total wall time: {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
