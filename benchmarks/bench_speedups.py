"""On/off timings of gradcam's two CPU speed-ups on ResNet-50 (random weights, 224 px).

* channels-last input (:func:`gradcam.engine.fast_layout`) on the headline case,
  ``GradCAM(model, "layer4")(x, [c]).maps`` at batch 1 (as ``benchmarks/bench_core.py``),
  and at batch 8;
* batch norms folded into the convolutions (:class:`gradcam.fusion.FoldedCopy`), which only
  the perturbation methods use: one no-grad channels-last pass of 8 copies, as Score-CAM
  runs them, through the folded copy against the model itself.

Each pair runs interleaved (on, off, then off, on, ...), one torch thread, after a warm-up of
each; it prints each case's medians, the ratio off/on, and the load average before and after
(the machine is shared). Run from the repository root (no network)::

    .venv/bin/python benchmarks/bench_speedups.py --rounds 11
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from gradcam import GradCAM
from gradcam.engine import fast_layout, run_in_fast_layout
from gradcam.fusion import FoldedCopy


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def interleaved(
    on: Callable[[], object], off: Callable[[], object], rounds: int
) -> tuple[float, float]:
    """Medians (seconds) of ``on`` and ``off``, run in alternating order each round."""
    on(), off()  # warm-up
    times: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(rounds):
        order = [("on", on), ("off", off)] if i % 2 == 0 else [("off", off), ("on", on)]
        for name, call in order:
            times[name].append(_timed(call))
    return statistics.median(times["on"]), statistics.median(times["off"])


def main() -> None:
    """Run the pairs and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load before: {os.getloadavg()}")
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    generator = torch.Generator().manual_seed(0)
    cam = GradCAM(model, "layer4")
    for batch in (1, 8):
        x = torch.rand(batch, 3, 224, 224, generator=generator)
        c = torch.ones(batch, 1, dtype=torch.long)

        def fast(x: torch.Tensor = x, c: torch.Tensor = c) -> object:
            with fast_layout():
                return cam(x, c).maps

        def plain(x: torch.Tensor = x, c: torch.Tensor = c) -> object:
            return cam(x, c).maps

        on, off = interleaved(fast, plain, args.rounds)
        print(
            f"Grad-CAM batch {batch}, channels-last: on {on * 1000:.0f} ms, off "
            f"{off * 1000:.0f} ms, {off / on:.2f}x"
        )
    copies = torch.rand(8, 3, 224, 224, generator=generator)
    folded = FoldedCopy(model).get()
    assert folded is not None

    def through(forward: Callable[[torch.Tensor], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return run_in_fast_layout(model, copies, forward, fast=True)

        return run

    on, off = interleaved(through(folded), through(model), args.rounds)
    print(
        f"no-grad pass of 8 copies, batch norms folded: on {on * 1000:.0f} ms, off "
        f"{off * 1000:.0f} ms, {off / on:.2f}x"
    )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
