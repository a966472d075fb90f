"""Throughput of ``localization`` against the no-grad forward rate of the same model.

Run from the repository root (no network needed)::

    .venv/bin/python benchmarks/bench_evaluate.py            # both models, 5 rounds
    .venv/bin/python benchmarks/bench_evaluate.py --quick    # smoke test

For each model, on the same images, interleaved round by round (order rotated) and reported as
medians, with the ratio computed within the run:

* **forward**: images already decoded and preprocessed, grouped by size into batches of
  ``--batch-size``, one no-grad forward pass each: the model's own rate;
* **forward, channels-last**: the same in channels-last layout, which gradcam's engine uses on
  the CPU (:func:`gradcam.engine.input_layouts`): the model's fastest rate;
* **forward + decode**: the first, with decoding and preprocessing inside the timing;
* **localization**: :func:`gradcam.evaluate.run` with :class:`~gradcam.evaluate.Localization`
  in this process (decode, preprocess, one forward and one batched backward per batch for the
  top-5 maps, upsampling, boxes, scoring against the annotations), no output folder.

Models: the shipped ``shapes`` CNN on the synthetic benchmark (128x128 images, batched) and
EfficientNet-Lite0 on the real photos shipped with scikit-image and matplotlib that have an
ImageNet class and the project's hand-drawn box (``read_photos(annotated=True)``), each
repeated ``--photo-repeats`` times (their sizes differ, so they mostly run one per batch).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from bench_core import time_cases

from gradcam.evaluate import Localization, run
from gradcam.evaluate.datasets import Dataset, read_photos, read_synthetic
from gradcam.images import load_image
from gradcam.models import LoadedModel, load_model


def forward_rate(
    loaded: LoadedModel,
    dataset: Dataset,
    batch: int,
    decode: bool,
    layout: torch.memory_format = torch.contiguous_format,
) -> Callable[[], None]:
    """A no-grad forward over the dataset's images in same-size batches, in ``layout``."""
    ready = [loaded.preprocess(load_image(s.path)) for s in dataset.samples]

    def once() -> None:
        xs = [loaded.preprocess(load_image(s.path)) for s in dataset.samples] if decode else ready
        groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for x in xs:
            groups.setdefault(tuple(x.shape), []).append(x)
        with torch.no_grad():
            for same in groups.values():
                for k in range(0, len(same), batch):
                    loaded.module(torch.cat(same[k : k + batch]).contiguous(memory_format=layout))

    return once


def localization_rate(loaded: LoadedModel, dataset: Dataset, batch: int) -> Callable[[], None]:
    def once() -> None:
        run(Localization(), loaded, dataset, batch_size=batch, progress=False)

    return once


def measure(cases: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """One warm-up pass, then bench_core's interleaved rounds (these calls hold their inputs)."""
    held = {name: (lambda _x, call=call: call()) for name, call in cases.items()}
    return time_cases(held, torch.empty(0), rounds, warmup=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=64, help="synthetic images (default 64)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--photo-repeats", type=int, default=4, help="each photo n times")
    parser.add_argument("--quick", action="store_true", help="1 round, 8 images, shapes only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, count = (1, 8) if args.quick else (args.rounds, args.images)
    lines = [
        f"# localization throughput, {datetime.date.today()}, torch {torch.__version__}, "
        f"{args.threads} threads, batch {args.batch_size}, {rounds} rounds (medians)",
        "",
        "| model | data | images | forward (img/s) | forward, channels-last (img/s) | "
        "forward + decode (img/s) | localization (img/s) | localization / forward | "
        "localization / forward, channels-last | localization / (forward + decode) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        setups = [("shapes", read_synthetic(Path(tmp) / "synthetic", count), "synthetic")]
        if not args.quick:
            photos = read_photos(annotated=True)
            repeated = replace(photos, samples=photos.samples * args.photo_repeats)
            setups.append(("efficientnet_lite0", repeated, "shipped photos"))
        for name, dataset, label in setups:
            loaded = load_model(name)
            print(f"{name}: {len(dataset.samples)} images", file=sys.stderr)
            times = measure(
                {
                    "forward": forward_rate(loaded, dataset, args.batch_size, decode=False),
                    "channels_last": forward_rate(
                        loaded, dataset, args.batch_size, False, torch.channels_last
                    ),
                    "decode": forward_rate(loaded, dataset, args.batch_size, decode=True),
                    "localization": localization_rate(loaded, dataset, args.batch_size),
                },
                rounds,
            )
            n = len(dataset.samples)
            rate = {k: n / statistics.median(v) for k, v in times.items()}
            lines.append(
                f"| {name} | {label} | {n} | {rate['forward']:.1f} | "
                f"{rate['channels_last']:.1f} | {rate['decode']:.1f} | "
                f"{rate['localization']:.1f} | {rate['localization'] / rate['forward']:.2f} | "
                f"{rate['localization'] / rate['channels_last']:.2f} | "
                f"{rate['localization'] / rate['decode']:.2f} |"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
