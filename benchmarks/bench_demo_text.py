"""What the web demo's textual-explanation panel costs a visitor (section 7 of the paper).

Run from the repository root (no network needed)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_demo_text.py            # 15 rounds
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_demo_text.py --rounds 1 # smoke test

On the bundled photo with the embedded EfficientNet-Lite0 and its shipped neuron names, it
times, interleaved and in a rotating order each round:

* ``GradCAM(module)(x, [c])``: one forward and one backward pass to the layer (the floor);
* ``text_explanation`` after the page's views of that class (the usual case: the panel reads
  the views' Grad-CAM weights; one no-grad forward pass captures the layer, then the ranking
  and the named units' overlays at display size);
* the same with the views not computed yet (the page's explain pass included);
* the same served from the cache.

Loading the names (``shipped_names()``, once per process) is timed on its own. Reported:
median and min in milliseconds. The names themselves were computed once, offline, by
``scripts/ship_lite0_names.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import gradcam
from gradcam.demo import DemoSession
from gradcam.dissect import shipped_names

PHOTO = Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg"


def main() -> None:
    """Time the panel's cases and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    start = time.perf_counter()
    shipped_names()
    load_ms = (time.perf_counter() - start) * 1000
    loaded = gradcam.load_model()
    with tempfile.TemporaryDirectory() as folder:
        session = DemoSession(loaded, folder=folder)
        x = loaded.preprocess(gradcam.load_image(PHOTO))
        class_id = session.explain(PHOTO).class_id
        method = gradcam.GradCAM(loaded.module)

        # The benchmark empties the session's caches to time what a first request costs.
        def after_views() -> None:
            session._texts.clear()
            session.text_explanation(PHOTO, class_id)

        def cold() -> None:
            session._texts.clear()
            session._views.clear()
            session.text_explanation(PHOTO, class_id)

        cases: dict[str, Callable[[], object]] = {
            "Grad-CAM forward + backward (floor)": lambda: method(x, [class_id]),
            "text panel, views already shown": after_views,
            "text panel, views not computed yet": cold,
            "text panel, cached": lambda: session.text_explanation(PHOTO, class_id),
        }
        for case in cases.values():  # warm-up
            case()
        times: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for r in range(args.rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                begin = time.perf_counter()
                cases[name]()
                times[name].append((time.perf_counter() - begin) * 1000)
    print(f"threads: {torch.get_num_threads()}; shipped_names() first load: {load_ms:.0f} ms")
    print("| case | median (ms) | min (ms) |\n|---|---|---|")
    for name, found in times.items():
        print(f"| {name} | {statistics.median(found):.0f} | {min(found):.0f} |")


if __name__ == "__main__":
    main()
