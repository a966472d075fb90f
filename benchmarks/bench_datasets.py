"""How fast the dataset readers and COCO's RLE are.

Run from the repository root (no network needed)::

    .venv/bin/python benchmarks/bench_datasets.py            # 2000 ImageNet files, 5 rounds
    .venv/bin/python benchmarks/bench_datasets.py --quick    # smoke test

Measured, as medians over the rounds:

* **ImageNet CLS-LOC**: :func:`gradcam.evaluate.open_dataset` on a folder laid out as the
  ILSVRC release (``--images`` small JPEGs and their box XML files, two objects each, written
  by this script): detection, XML parsing, WordNet-id mapping, and the size check that opens
  each image's header;
* **RLE**: encoding and decoding one 480x640 mask (COCO's typical image size) in both forms
  with :mod:`gradcam.evaluate.coco`, and with ``pycocotools`` when it is installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from gradcam.evaluate import open_dataset
from gradcam.evaluate.coco import decode_rle, encode_rle

SYNSETS = ("n02124075", "n07920052")


def _release(root: Path, count: int) -> None:
    images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    boxes = root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
    images.mkdir(parents=True)
    boxes.mkdir(parents=True)
    picture = Image.new("RGB", (64, 48), (120, 80, 40))
    for index in range(1, count + 1):
        name = f"ILSVRC2012_val_{index:08d}"
        picture.save(images / f"{name}.JPEG", format="JPEG")
        objects = "".join(
            f"<object><name>{wnid}</name><difficult>0</difficult><bndbox><xmin>{1 + k}</xmin>"
            f"<ymin>2</ymin><xmax>{30 + k}</xmax><ymax>40</ymax></bndbox></object>"
            for k, wnid in enumerate(SYNSETS)
        )
        (boxes / f"{name}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>64</width>"
            f"<height>48</height><depth>3</depth></size>{objects}</annotation>"
        )


def _median_seconds(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Print the measurements as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="50 images, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds = 50, 2
    results: dict[str, object] = {"images": args.images, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        _release(Path(tmp), args.images)
        data = open_dataset(tmp)
        assert len(data.samples) == args.images and not data.problems
        seconds = _median_seconds(lambda: open_dataset(tmp), args.rounds)
        results["cls_loc_seconds"] = round(seconds, 3)
        results["cls_loc_images_per_s"] = round(args.images / seconds)

    rng = np.random.default_rng(0)
    mask = np.zeros((480, 640), dtype=bool)
    for _ in range(6):  # a few blobs, as object masks are
        y, x = rng.integers(0, 400), rng.integers(0, 560)
        mask[y : y + rng.integers(20, 80), x : x + rng.integers(20, 80)] = True
    rounds = max(args.rounds * 4, 8)
    for compressed in (False, True):
        rle = encode_rle(mask, compressed=compressed)
        form = "string" if compressed else "counts"
        results[f"rle_encode_{form}_ms"] = round(
            1000 * _median_seconds(lambda c=compressed: encode_rle(mask, compressed=c), rounds), 3
        )
        results[f"rle_decode_{form}_ms"] = round(
            1000 * _median_seconds(lambda r=rle: decode_rle(r["counts"], 480, 640), rounds), 3
        )
    try:
        from pycocotools import mask as mask_utils

        fortran = np.asfortranarray(mask.astype(np.uint8))
        theirs = mask_utils.encode(fortran)
        results["pycocotools_encode_ms"] = round(
            1000 * _median_seconds(lambda: mask_utils.encode(fortran), rounds), 3
        )
        results["pycocotools_decode_ms"] = round(
            1000 * _median_seconds(lambda: mask_utils.decode(theirs), rounds), 3
        )
    except ImportError:
        pass
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
