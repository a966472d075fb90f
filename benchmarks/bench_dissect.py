"""Dissection's rate against the no-grad forward rate of the same model on the concept images.

Run from the repository root (no network needed)::

    .venv/bin/python benchmarks/bench_dissect.py              # both models, 3 rounds
    .venv/bin/python benchmarks/bench_dissect.py --quick      # smoke test

For each model, on the same generated concept images (:func:`gradcam.dissect.generated_concepts`,
``--images`` images of 128 px), interleaved round by round and reported as medians, with the
ratio computed within each round:

* **forward**: the concept images made, preprocessed and batched (``--batch-size``), one
  no-grad forward pass per batch: what any pass over the concept set costs;
* **forward, channels-last**: the same with each batch in channels-last layout, as dissection
  runs it on the CPU (:func:`gradcam.engine.run_in_fast_layout`): the cost of the passes
  dissection itself makes, so ``dissect / forward CL`` is the share of its time that is not
  bookkeeping;
* **dissect**: :func:`gradcam.dissect.dissect` (the same forward passes with the layer's maps
  and the label maps kept in memory, the exact ``T_k``, upsampling, thresholding and the IoU
  counts), no output folder; with ``--to-disk``, into a fresh output folder each round, as the
  ``gradcam dissect --out`` command does (maps on disk for a resume, the names written).

The target of issue 16 is a ratio dissect / forward >= 0.8. On a machine whose cores are
busy with other work, pass ``--threads 1``: with two threads every small tensor operation
waits for a descheduled second thread, which penalizes dissection's many small operations
far more than the forward pass's few large ones (measured before the compiled counting: 0.45
with 2 threads at load 18 on 2 cores). Results and history: docs/dissect.md, section 4.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import gradcam
from gradcam.dissect import ConceptSet, dissect, generated_concepts


def _forward(
    loaded: gradcam.LoadedModel, concepts: ConceptSet, batch_size: int, layout: torch.memory_format
) -> float:
    start = time.perf_counter()
    total = len(concepts)
    with torch.no_grad():
        for i in range(0, total, batch_size):
            images = [concepts[j].image for j in range(i, min(i + batch_size, total))]
            batch = torch.cat([loaded.preprocess(im) for im in images])
            loaded.module(batch.contiguous(memory_format=layout))
    return time.perf_counter() - start


def _dissect(
    loaded: gradcam.LoadedModel, concepts: ConceptSet, batch_size: int, to_disk: bool
) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        dissect(
            loaded, concepts, batch_size=batch_size, out=Path(folder, "run") if to_disk else None
        )
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default="shapes,efficientnet_lite0")
    parser.add_argument("--quick", action="store_true", help="16 images, one round")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's); 1 on a loaded machine"
    )
    parser.add_argument(
        "--to-disk", action="store_true", help="dissect into an output folder (resumable)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.rounds = 16, 1
    concepts = generated_concepts(args.images)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} generated "
        f"concept images, batch {args.batch_size}, {args.rounds} rounds (medians)"
        + (", dissect into an output folder" if args.to_disk else "")
    )
    print(
        "| model | layer | forward (images/s) | forward CL (images/s) | dissect (images/s) "
        "| dissect / forward | dissect / forward CL |"
    )
    print("|---|---|---|---|---|---|---|")
    layouts = {"forward": torch.contiguous_format, "forward CL": torch.channels_last}
    for name in args.models.split(","):
        loaded = gradcam.load_model(name)
        rates: dict[str, list[float]] = {label: [] for label in (*layouts, "dissect")}
        ratios: dict[str, list[float]] = {label: [] for label in layouts}
        for r in range(args.rounds):
            order = ["forward", "forward CL", "dissect"]
            order = order[r % 3 :] + order[: r % 3]  # rotated every round
            seconds = {}
            for label in order:
                seconds[label] = (
                    _dissect(loaded, concepts, args.batch_size, args.to_disk)
                    if label == "dissect"
                    else _forward(loaded, concepts, args.batch_size, layouts[label])
                )
                rates[label].append(args.images / seconds[label])
            for label in layouts:
                ratios[label].append(seconds[label] / seconds["dissect"])
        med = {label: statistics.median(values) for label, values in rates.items()}
        print(
            f"| {name} | `{loaded.default_layer}` | {med['forward']:.1f} | {med['forward CL']:.1f} "
            f"| {med['dissect']:.1f} | {statistics.median(ratios['forward']):.2f} "
            f"| {statistics.median(ratios['forward CL']):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
