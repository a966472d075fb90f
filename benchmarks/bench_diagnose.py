"""Speed of ``gradcam diagnose``: the failures run against ``evaluate localization``, and the
attack's cost per iteration against one forward and one backward pass.

Run from the repository root (no network needed)::

    .venv/bin/python benchmarks/bench_diagnose.py            # 3 rounds, 64 images
    .venv/bin/python benchmarks/bench_diagnose.py --quick    # smoke test

* **failures vs localization**: the shipped ``shapes`` CNN on the synthetic benchmark, both
  through :func:`gradcam.evaluate.run` in this process with the same batches and no output
  folder, interleaved round by round, medians. Twice: with the true labels (few mistakes:
  failures runs a no-grad forward and explains nothing) and with every label shifted by one
  class (every image is a failure: the worst case, two maps of two methods each).
* **attack**: EfficientNet-Lite0 on the bundled photo, seconds per attack iteration against
  seconds of one forward plus one backward to the input at the same size.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

import gradcam
from gradcam.diagnose.adversarial import attack
from gradcam.diagnose.failures import Failures
from gradcam.evaluate import Localization, run
from gradcam.evaluate.datasets import Dataset, read_synthetic


def _rate(protocol: object, loaded: gradcam.LoadedModel, data: Dataset) -> float:
    started = time.perf_counter()
    run(protocol, loaded, data, progress=False, batch_size=8)  # type: ignore[arg-type]
    return len(data.samples) / (time.perf_counter() - started)


def failures_vs_localization(images: int, rounds: int) -> None:
    loaded = gradcam.load_model("shapes")
    with tempfile.TemporaryDirectory() as folder:
        data = read_synthetic(Path(folder), images, seed=0)
        shifted = dataclasses.replace(
            data,
            samples=[
                dataclasses.replace(
                    s, labels=tuple((c + 1) % len(loaded.class_names) for c in s.labels)
                )
                for s in data.samples
            ],
        )
        for title, dataset in (("true labels", data), ("every image a failure", shifted)):
            rates: dict[str, list[float]] = {"localization": [], "failures": []}
            for r in range(rounds):
                order = [("localization", Localization()), ("failures", Failures())]
                for name, protocol in order[r % 2 :] + order[: r % 2]:
                    rates[name].append(_rate(protocol, loaded, dataset))
            loc = statistics.median(rates["localization"])
            fail = statistics.median(rates["failures"])
            print(
                f"{title}: localization {loc:.1f} images/s, failures {fail:.1f} images/s, "
                f"ratio {fail / loc:.2f}"
            )


def attack_cost(size: int, steps: int) -> None:
    lite0 = gradcam.load_model()
    loaded = dataclasses.replace(lite0, preprocess=dataclasses.replace(lite0.preprocess, size=size))
    photo = Image.open(Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg")
    x = loaded.preprocess(photo).requires_grad_(True)
    passes = []
    for _ in range(steps):
        started = time.perf_counter()
        loss = F.cross_entropy(loaded.module(x), torch.tensor([693]))
        torch.autograd.grad(loss, x)
        passes.append(time.perf_counter() - started)
    started = time.perf_counter()
    # confidence above 1 is never reached: exactly `steps` iterations.
    result = attack(loaded, photo, "paddle", epsilon=255, max_steps=steps, confidence=1.0)
    per_step = (time.perf_counter() - started) / (result.steps + 1)
    print(
        f"attack at {tuple(x.shape[-2:])}: {1000 * per_step:.1f} ms per iteration; one forward "
        f"+ backward: {1000 * statistics.median(passes):.1f} ms "
        f"(ratio {per_step / statistics.median(passes):.2f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: 16 images, 1 round")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images, rounds = (16, 1) if args.quick else (args.images, args.rounds)
    failures_vs_localization(images, rounds)
    attack_cost(224, 5 if args.quick else 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
