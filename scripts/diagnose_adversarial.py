"""Is Grad-CAM robust to adversarial noise? (section 6.2) Measured on the shipped photos.

For each annotated real photo (``read_photos(annotated=True)``) and two two-object composites
of them, attack EfficientNet-Lite0 towards ``--target`` until it is > 99.99% sure and the
annotated classes have left the top 5, then, for each annotated ("originally present") class:

* the Spearman rank correlation of its Grad-CAM map (layer resolution) before and after;
* whether the map's maximum hits the class's hand-drawn box (the pointing game, 15 px) before
  and after.

Usage::

    python scripts/diagnose_adversarial.py --out docs/diagnose_adversarial.json

Prints a Markdown table per photo and overall.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gradcam import load_model
from gradcam.diagnose.adversarial import attack
from gradcam.evaluate.datasets import Annotation, Sample, read_photos
from gradcam.evaluate.metrics import pointing_hit, spearman
from gradcam.maps import upsample
from gradcam.methods import explain_methods
from gradcam.models import LoadedModel


def composite(left: Sample, right: Sample) -> tuple[Image.Image, list[Annotation], str]:
    """Two photos side by side at the left one's height, with their boxes moved along."""
    a, b = Image.open(left.path).convert("RGB"), Image.open(right.path).convert("RGB")
    scale = a.height / b.height
    b = b.resize((round(b.width * scale), a.height), Image.Resampling.LANCZOS)
    both = Image.new("RGB", (a.width + b.width, a.height))
    both.paste(a, (0, 0))
    both.paste(b, (a.width, 0))
    notes = list(left.annotations)
    for ann in right.annotations:
        assert ann.box is not None
        x0, y0, x1, y1 = ann.box
        moved = (
            a.width + round(x0 * scale),
            round(y0 * scale),
            a.width + min(round(x1 * scale), b.width - 1),
            min(round(y1 * scale), a.height - 1),
        )
        notes.append(Annotation(ann.class_id, moved))
    return both, notes, f"{left.path.stem}+{right.path.stem}"


def maps_for(loaded: LoadedModel, image: Image.Image, classes: list[int]) -> torch.Tensor:
    """Grad-CAM of ``classes`` at layer resolution, (K, h, w)."""
    result = explain_methods(["gradcam"], loaded.module, loaded.preprocess(image), classes)
    return result["gradcam"].raw[0]  # type: ignore[attr-defined,no-any-return]


def measure(
    loaded: LoadedModel,
    image: Image.Image,
    notes: list[Annotation],
    name: str,
    target: str,
    epsilon: int,
    max_steps: int,
) -> dict[str, object]:
    classes = list(dict.fromkeys(a.class_id for a in notes))
    started = time.perf_counter()
    result = attack(loaded, image, target, present=classes, epsilon=epsilon, max_steps=max_steps)
    seconds = time.perf_counter() - started
    before = maps_for(loaded, result.original, classes)
    after = maps_for(loaded, result.adversarial, classes)
    size = (result.original.height, result.original.width)
    scale = result.original.height / image.height
    rows = []
    for k, c in enumerate(classes):
        boxes = [
            tuple(round(v * scale) for v in a.box)
            for a in notes
            if a.class_id == c and a.box is not None
        ]
        hits = [
            pointing_hit(upsample(m[k], size), boxes=boxes, tolerance=15.0 * scale)
            for m in (before, after)
        ]
        rows.append(
            {
                "class": loaded.class_names[c],
                "rank_correlation": spearman(before[k], after[k]),
                "hit_before": bool(hits[0]),
                "hit_after": bool(hits[1]),
            }
        )
    return {
        "photo": name,
        "success": result.success,
        "steps": result.steps,
        "seconds": round(seconds, 1),
        "linf": result.linf,
        "psnr": result.psnr,
        "target_prob": result.after[0][1] if result.after[0][0] == result.target else None,
        "classes": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="paddle", help="the attack's target class")
    parser.add_argument("--epsilon", type=int, default=8, help="L-inf budget, 0-255 units")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=224, help="the model's input size")
    parser.add_argument("--out", type=Path, help="write the measurements as JSON here")
    args = parser.parse_args()
    loaded = load_model()
    if args.size != loaded.preprocess.size:
        from dataclasses import replace

        loaded = replace(loaded, preprocess=replace(loaded.preprocess, size=args.size))
    photos = {s.path.stem: s for s in read_photos(annotated=True).samples}
    cases = [(Image.open(s.path).convert("RGB"), list(s.annotations), n) for n, s in photos.items()]
    for left, right in (("chelsea", "coffee"), ("motorcycle_left", "coffee")):
        if left in photos and right in photos:
            cases.append(composite(photos[left], photos[right]))
    results = []
    for image, notes, name in cases:
        found = measure(loaded, image, notes, name, args.target, args.epsilon, args.max_steps)
        results.append(found)
        print(f"{name}: done in {found['seconds']} s", file=sys.stderr)
    print("| photo | attack | L-inf | PSNR dB | class | rank corr. | hit before | hit after |")
    print("|---|---|---|---|---|---|---|---|")
    everything = []
    for found in results:
        verdict = f"{found['steps']} steps" if found["success"] else "budget spent"
        for row in found["classes"]:  # type: ignore[attr-defined]
            everything.append(row)
            psnr = found["psnr"]
            print(
                f"| {found['photo']} | {verdict} | {found['linf']:.0f} | "
                f"{psnr:.1f} | {row['class']} | {row['rank_correlation']:.3f} | "
                f"{int(row['hit_before'])} | {int(row['hit_after'])} |"
            )
    overall = {
        "maps": len(everything),
        "mean_rank_correlation": float(np.mean([r["rank_correlation"] for r in everything])),
        "hit_rate_before": float(np.mean([r["hit_before"] for r in everything])),
        "hit_rate_after": float(np.mean([r["hit_after"] for r in everything])),
    }
    print(
        f"\noverall ({overall['maps']} maps): mean rank correlation "
        f"{overall['mean_rank_correlation']:.3f}; pointing hit rate "
        f"{overall['hit_rate_before']:.2f} before, {overall['hit_rate_after']:.2f} after"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "settings": vars(args) | {"out": str(args.out)},
                    "photos": results,
                    "overall": overall,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
