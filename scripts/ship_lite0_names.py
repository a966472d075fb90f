"""Make the neuron names the web demo ships for the embedded EfficientNet-Lite0.

Run from the repository root (offline; about 15 s on an idle 2-core CPU)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/ship_lite0_names.py

It dissects the embedded model's Grad-CAM layer (``gradcam.load_model().default_layer``,
``_head_act``, 1280 units) on the generated concept set (``generated_concepts(400)``, seed 0:
the set docs/dissect.md measures) and writes ``names.parquet``, ``iou.npy`` and
``dissection.json`` to ``src/gradcam/data/lite0_names/`` (about 150 KB), which
:func:`gradcam.demo.session.shipped_names` reads. It prints the time the dissection took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gradcam
from gradcam.dissect import dissect, generated_concepts

OUT = Path(__file__).resolve().parents[1] / "src" / "gradcam" / "data" / "lite0_names"


def main() -> None:
    """Dissect EfficientNet-Lite0's default layer and save the names under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="generated concept images")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    concepts = generated_concepts(args.images)
    start = time.perf_counter()
    names = dissect(gradcam.load_model(), concepts, progress=True)
    seconds = time.perf_counter() - start
    names.save(args.out)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(
        f"{names.layer}: {len(names.named())} of {names.channels} units named over "
        f"{names.images} images of {names.source}; dissection took {seconds:.0f} s; "
        f"{size / 1024:.0f} KB in {args.out}"
    )


if __name__ == "__main__":
    main()
