"""Score-CAM: gradcam's ``score-cam`` against pytorch-grad-cam 1.5.7's ``ScoreCAM``, interleaved.

Run from the repository root (no network; a random-weights ResNet-18)::

    .venv/bin/python benchmarks/bench_score_cam.py   # 112 and 224 px, 1 and 2 threads
    .venv/bin/python benchmarks/bench_score_cam.py --layer layer3 --repeats 1 --batches 1

For every thread count, input size and batch size it times one call of each, alternating
(ours, theirs, ours, theirs, ...) ``--repeats`` times so that a change of the machine's load
hits both alike, and prints the medians, their ratio (theirs / ours: above 1, ours is faster),
the largest difference of the two maps (ours with ``align_corners=True``, pytorch-grad-cam's
upsampling, scaled as pytorch-grad-cam scales), and the load average at the start and end.
Both explain the top class of each image. Ours uses its defaults (8 masked images per pass on
the CPU); theirs its ``batch_size=16``.

The cost is one forward pass per channel of the layer: ``layer4`` has 512 channels (512 passes
of ResNet-18 per image), ``layer3`` 256.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from typing import Any

import torch
import torchvision

from gradcam.compat.pytorch_grad_cam.base_cam import scale_maps
from gradcam.methods import create_method


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _quiet(fn: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn()


def bench(
    threads: int, size: int, batch: int, layer: str, repeats: int, seed: int = 0
) -> dict[str, Any]:
    """One row: medians (s) of ours and theirs, the ratio and the maps' largest difference."""
    from pytorch_grad_cam import ScoreCAM as PeerScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        top = model(x).argmax(dim=1)
    ours = create_method("score-cam", model, layer, align_corners=True, progress=False)
    theirs = _quiet(lambda: PeerScoreCAM(model, [model.get_submodule(layer)]))
    targets = [ClassifierOutputTarget(int(c)) for c in top]
    ours_s: list[float] = []
    theirs_s: list[float] = []
    got = want = None
    for _ in range(repeats):
        start = time.perf_counter()
        got = ours(x, top[:, None])
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        want = _quiet(lambda: theirs(x, targets))
        theirs_s.append(time.perf_counter() - start)
    assert got is not None and want is not None
    scaled = scale_maps(scale_maps(torch.relu(got.raw[:, 0]), (size, size)))
    ours_median, theirs_median = statistics.median(ours_s), statistics.median(theirs_s)
    return {
        "threads": threads,
        "size": size,
        "batch": batch,
        "layer": layer,
        "ours_s": round(ours_median, 3),
        "theirs_s": round(theirs_median, 3),
        "ratio": round(theirs_median / ours_median, 2),
        "max_diff": float((scaled - torch.from_numpy(want)).abs().max()),
    }


def main(argv: list[str] | None = None) -> None:
    """Print a markdown table of :func:`bench` rows (and write them as JSON with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"load average at start: {_load()} ({os.cpu_count()} CPUs)")
    print("| threads | size | batch | layer | ours (s) | pgc (s) | pgc / ours | max diff |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for threads in args.threads:
        for size in args.sizes:
            for batch in args.batches:
                row = bench(threads, size, batch, args.layer, args.repeats)
                rows.append(row)
                print(
                    f"| {row['threads']} | {row['size']} | {row['batch']} | {row['layer']} | "
                    f"{row['ours_s']} | {row['theirs_s']} | {row['ratio']} | "
                    f"{row['max_diff']:.1e} |",
                    flush=True,
                )
    print(f"load average at end: {_load()}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "load_end": _load()}, f, indent=2)


if __name__ == "__main__":
    main()
