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
* ms per image: the method's own call for the top-1 class, median over ``--timing-images``;
  timed after every score, the methods interleaved image by image (the order rotated for each
  image), so a burst of other work falls on all methods alike.

The scores are deterministic and slow; the timing needs a quiet machine. ``--cache FILE``
keeps the scores in a JSON file (with the settings that made them) and reuses them when the
settings match, so the timing can be re-run alone at a quiet moment.

Pixel-space methods are scored through their absolute gradients summed over channels (as
``evaluate`` does for every protocol).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import gradcam
from gradcam.evaluate import Faithfulness, Localization, Pointing, Sanity
from gradcam.evaluate.datasets import Dataset, read_synthetic
from gradcam.evaluate.runner import run
from gradcam.methods import create_method, method_spec, method_specs


def _ms_per_image(
    names: list[str], loaded: gradcam.LoadedModel, paths: list[Path]
) -> dict[str, float]:
    """Median ms of each method's top-1 call, the methods interleaved image by image."""
    methods = {n: create_method(n, loaded.module, loaded.default_layer) for n in names}
    xs = [loaded.preprocess(gradcam.load_image(p)) for p in paths]
    for method in methods.values():
        method(xs[0], gradcam.TopK(1))  # warm-up
    samples: dict[str, list[float]] = {n: [] for n in names}
    for i, x in enumerate(xs):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            start = time.perf_counter()
            methods[name](x, gradcam.TopK(1))
            samples[name].append(time.perf_counter() - start)
    return {n: statistics.median(v) * 1000 for n, v in samples.items()}


def _scores(
    names: list[str], loaded: gradcam.LoadedModel, data: Dataset, args: argparse.Namespace
) -> dict[str, Any]:
    """Every method's localization, pointing, faithfulness and sanity scores."""
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
    rows: dict[str, Any] = {}
    for name in names:
        limit = args.slow_images if method_spec(name).needs.many_passes else args.images
        located = run(Localization(name), loaded, data, limit=limit, progress=False).summary[0]
        pointed = run(Pointing(name), loaded, data, limit=limit, progress=False).summary[0]
        faith = next(r for r in faithful if r["method"] == name)
        rows[name] = {
            "scenes": located["images"],
            "loc": located["loc_top1_error"],
            "pointing": pointed["accuracy"],
            "spearman": faith["spearman_with_occlusion"],
            "deletion": faith["deletion_auc"],
            "insertion": faith["insertion_auc"],
            "sanity": top_block[name],
        }
        print(name, rows[name], file=sys.stderr)
    return {
        "rows": rows,
        "randomized_to": top_block["randomized_to"],
        "layers": top_block["layers"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--slow-images", type=int, default=50)
    parser.add_argument("--faithfulness-images", type=int, default=50)
    parser.add_argument("--sanity-images", type=int, default=20)
    parser.add_argument("--timing-images", type=int, default=10)
    parser.add_argument("--methods", type=lambda v: [m for m in v.split(",") if m])
    parser.add_argument("--data", default=None, help="folder for the scenes (default: temp)")
    parser.add_argument("--cache", default=None, help="JSON file keeping the scores (see above)")
    args = parser.parse_args(argv)
    names = args.methods or [s.name for s in method_specs()]
    folder = Path(args.data or tempfile.mkdtemp(prefix="gradcam-compare-"))
    data = read_synthetic(folder / f"synthetic-0-{args.images}", args.images, seed=0)
    loaded = gradcam.load_model("shapes")
    settings = {
        k: getattr(args, k)
        for k in ("images", "slow_images", "faithfulness_images", "sanity_images")
    }
    cached: dict[str, Any] = {}
    if args.cache and Path(args.cache).is_file():
        cached = json.loads(Path(args.cache).read_text())
        if cached.get("settings") != settings:
            cached = {}
    scores: dict[str, Any] | None = cached.get("scores")
    missing = [n for n in names if scores is None or n not in scores["rows"]]
    if missing:
        fresh = _scores(missing, loaded, data, args)
        if scores is None:
            scores = fresh
        else:
            scores["rows"].update(fresh["rows"])
        if args.cache:
            Path(args.cache).write_text(json.dumps({"settings": settings, "scores": scores}))
    assert scores is not None
    paths = [s.path for s in data.samples[: args.timing_images]]
    ms = _ms_per_image(names, loaded, paths)
    print(
        f"`shapes` CNN, synthetic scenes (seed 0): localization and pointing on the first "
        f"{args.images} ({args.slow_images} for methods with extra forward passes), faithfulness "
        f"on the first {args.faithfulness_images}, sanity on the first {args.sanity_images}; "
        "sanity: top block randomized to "
        f"`{scores['randomized_to']}` ({scores['layers']} layers); ms per image: median of "
        f"{args.timing_images} images, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(
        "| method | scenes | loc top-1 error % | pointing % | Spearman with occlusion "
        "| deletion AUC | insertion AUC | sanity (lower: depends on weights) | ms / image |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        r = scores["rows"][name]
        print(
            f"| `{name}` | {r['scenes']} | {r['loc']:.1f} | {r['pointing']:.1f} "
            f"| {r['spearman']:.3f} | {r['deletion']:.3f} | {r['insertion']:.3f} "
            f"| {r['sanity']:.3f} | {ms[name]:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
