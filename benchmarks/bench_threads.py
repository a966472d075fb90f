"""What the per-model lock costs, and what threads sharing one model get.

Run from the repository root (no network; random weights)::

    .venv/bin/python benchmarks/bench_threads.py                 # ResNet-50 and Lite0, 64 px
    .venv/bin/python benchmarks/bench_threads.py --rounds 50 --size 128

For each model it times, as medians over ``--rounds``:

* ``model_lock``: taking and releasing the model's lock once (one re-entrant lock per
  submodule, in one global order), uncontended;
* ``gradcam``: one ``GradCAM(model)(x, [c])`` call at batch 1;

and then runs ``--calls`` Grad-CAM calls on one thread, and the same number split over two
threads sharing the model, reporting the wall time of each and whether every map of the
threaded run equals the single-threaded map of its image (it must: the calls take turns).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
import torchvision

import gradcam
from gradcam.hooks import model_lock


def _median_ms(fn: object, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _lock_once(model: torch.nn.Module) -> None:
    with model_lock(model):
        pass


def bench(name: str, model: torch.nn.Module, size: int, rounds: int, calls: int) -> None:
    torch.manual_seed(0)
    images = [torch.rand(1, 3, size, size) for _ in range(4)]
    cam = gradcam.GradCAM(model)
    cam(images[0], [1])  # resolve the default layer, warm up
    modules = sum(1 for _ in model.modules())
    lock_ms = _median_ms(lambda: _lock_once(model), rounds * 20)
    call_ms = _median_ms(lambda: cam(images[0], [1]), rounds)
    reference = [cam(x, [1]).maps for x in images]

    start = time.perf_counter()
    for i in range(calls):
        cam(images[i % 4], [1])
    one_thread = time.perf_counter() - start

    mismatches = [0]

    def work(offset: int) -> None:
        for i in range(offset, calls, 2):
            maps = cam(images[i % 4], [1]).maps
            if not torch.allclose(maps, reference[i % 4], atol=1e-6):
                mismatches[0] += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    two_threads = time.perf_counter() - start
    print(
        f"| {name} | {modules} | {lock_ms * 1000:.0f} us | {call_ms:.1f} ms "
        f"| {lock_ms / call_ms:.2%} | {one_thread:.2f} s | {two_threads:.2f} s "
        f"| {mismatches[0]} of {calls} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px\n")
    print(
        "| model | modules | lock | Grad-CAM call | lock / call | "
        f"{args.calls} calls, 1 thread | 2 threads | maps crossed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    models = {
        "resnet50": torchvision.models.resnet50(weights=None).eval(),
        "efficientnet_lite0": gradcam.load_model().module,
    }
    for name, model in models.items():
        bench(name, model, args.size, args.rounds, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
