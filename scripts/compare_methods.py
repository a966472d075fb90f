"""Every registered method on the synthetic shapes benchmark: the README's comparative table.

Run from the repository root (offline; about an hour on a 2-core CPU for the defaults)::

    .venv/bin/python scripts/compare_methods.py                      # every method
    .venv/bin/python scripts/compare_methods.py --images 40 --faithfulness-images 10 \\
        --methods gradcam,gradcam++,score-cam                         # a quick look

For the shipped ``shapes`` CNN on the synthetic scenes (seed 0), through the same protocol
code as ``gradcam evaluate`` (:func:`gradcam.evaluate.runner.run`), one row per method:

* localization: top-1 localization error (section 4.1; box at 15% of the map's max, IoU 0.5),
  on ``--images`` scenes, or ``--slow-images`` for the methods that need many forward passes
  (their registry entry says ``needs.many_passes``: perturbations, noise, integration steps);
* pointing: accuracy of the map's maximum within 15 px of the object (Zhang et al.);
* faithfulness (section 5.3, the first ``--faithfulness-images`` scenes): Spearman rank
  correlation with occlusion (window 35, stride 8), deletion and insertion AUC;
* sanity (Adebayo et al.): rank correlation of the map with the map after randomizing the
  top block of the network (first ``--sanity-images`` scenes; the first step of a 5-step
  cascade; lower means the method
  depends more on the weights, which is what an explanation should do);
* ms per image: the method's own call for the top-1 class, median over ``--timing-images``.

Pixel-space methods are scored through their absolute gradients summed over channels (as
``evaluate`` does for every protocol).
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
from gradcam.evaluate import Faithfulness, Localization, Pointing, Sanity
from gradcam.evaluate.datasets import read_synthetic
from gradcam.evaluate.runner import run
from gradcam.methods import create_method, method_spec, method_specs


def _ms_per_image(name: str, loaded: gradcam.LoadedModel, paths: list[Path]) -> float:
    method = create_method(name, loaded.module, loaded.default_layer)
    xs = [loaded.preprocess(gradcam.load_image(p)) for p in paths]
    method(xs[0], gradcam.TopK(1))  # warm-up
    samples = []
    for x in xs:
        start = time.perf_counter()
        method(x, gradcam.TopK(1))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--slow-images", type=int, default=50)
    parser.add_argument("--faithfulness-images", type=int, default=50)
    parser.add_argument("--sanity-images", type=int, default=20)
    parser.add_argument("--timing-images", type=int, default=10)
    parser.add_argument("--methods", type=lambda v: [m for m in v.split(",") if m])
    parser.add_argument("--data", default=None, help="folder for the scenes (default: temp)")
    args = parser.parse_args(argv)
    names = args.methods or [s.name for s in method_specs()]
    folder = Path(args.data or tempfile.mkdtemp(prefix="gradcam-compare-"))
    data = read_synthetic(folder / f"synthetic-0-{args.images}", args.images, seed=0)
    loaded = gradcam.load_model("shapes")
    torch.manual_seed(0)
    faithful = run(
        Faithfulness(methods=tuple(names)),
        loaded,
        data,
        limit=args.faithfulness_images,
        progress=False,
    ).summary
    sane = run(Sanity(methods=tuple(names)), loaded, data, limit=args.sanity_images)
    top_block = sane.summary[0]
    rows = []
    for name in names:
        limit = args.slow_images if method_spec(name).needs.many_passes else args.images
        located = run(Localization(name), loaded, data, limit=limit, progress=False).summary[0]
        pointed = run(Pointing(name), loaded, data, limit=limit, progress=False).summary[0]
        faith = next(r for r in faithful if r["method"] == name)
        paths = [s.path for s in data.samples[: args.timing_images]]
        rows.append(
            [
                f"`{name}`",
                str(located["images"]),
                f"{located['loc_top1_error']:.1f}",
                f"{pointed['accuracy']:.1f}",
                f"{faith['spearman_with_occlusion']:.3f}",
                f"{faith['deletion_auc']:.3f}",
                f"{faith['insertion_auc']:.3f}",
                f"{top_block[name]:.3f}",
                f"{_ms_per_image(name, loaded, paths):.1f}",
            ]
        )
        print(" | ".join(rows[-1]), file=sys.stderr)
    print(
        f"`shapes` CNN, synthetic scenes (seed 0): localization and pointing on the first "
        f"{args.images} ({args.slow_images} for methods with extra forward passes), faithfulness "
        f"on the first {args.faithfulness_images}, sanity on the first {args.sanity_images}; "
        "sanity: top block randomized to "
        f"`{top_block['randomized_to']}` ({top_block['layers']} layers)\n"
    )
    print(
        "| method | scenes | loc top-1 error % | pointing % | Spearman with occlusion "
        "| deletion AUC | insertion AUC | sanity (lower: depends on weights) | ms / image |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
