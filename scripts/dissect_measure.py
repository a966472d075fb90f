"""Does naming neurons work? The numbers of docs/dissect.md (section 7 of the paper).

Run from the repository root (offline; about 20 s on an idle 2-core CPU)::

    .venv/bin/python scripts/dissect_measure.py                 # both parts
    .venv/bin/python scripts/dissect_measure.py --images 200 --skip-lite0

1. The shipped ``shapes`` CNN, whose classes are shapes: its last layer is dissected on the
   generated concept set (:func:`gradcam.dissect.generated_concepts`, ``--images`` images,
   seed 0). For each class, on ``--scenes`` synthetic scenes of that shape, the top-5
   positive units by Grad-CAM's ``alpha_k^c``: how many carry the class's own shape name,
   against chance. Both rankings: among all units, as the paper does (chance: 5 times the
   share of all units with that name), and among the named units only (``named_only``;
   chance: the top-5's size times the share of named units with that name). The same for
   the object's colour, which the classes do not depend on (should be near chance). And
   per category, the best IoU of any unit with any of its concepts. And, since few units pass
   the 0.05 threshold, the same counts with each unit's best concept, named or not.
2. EfficientNet-Lite0 (the embedded ImageNet model): its ``_head_act`` dissected on the same
   concept set, and the textual explanation of the top-1 class of each shipped photo, in the
   paper's Fig. 9 form.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from PIL import Image

import gradcam
from gradcam.dissect import Dissection, dissect, generated_concepts
from gradcam.dissect.text import explain_text, rank_neurons
from gradcam.synthetic import SHAPES, make_scene

PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")


def _photos() -> list[tuple[str, Image.Image]]:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    bundled = Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg"
    found = [("cat_and_coffee.jpg", gradcam.load_image(bundled))]
    found += [(name, gradcam.load_image(folder / name)) for name in PHOTOS]
    return found


def _shapes_table(names: Dissection, scenes: int) -> list[str]:
    loaded = gradcam.load_model("shapes")
    named = [u.name for u in names.units if u.name]
    share, total, channels = Counter(named), len(named), names.channels
    top_named = min(5, total)
    lines = [
        "| class | units named after it | own name in top-5, all units (chance) | own name "
        "in top-5 named units (chance) | object's colour in top-5 named units (chance) | "
        "top-5 whose best concept is the shape (chance) | ... is the object's colour (chance) |",
        "|---|---|---|---|---|---|---|",
    ]
    best = Counter(u.concept for u in names.units)
    sums = [0.0] * 10
    cam = gradcam.GradCAM(loaded.module, names.layer)
    for c, shape in enumerate(SHAPES):
        own_all = own_named = colour_hits = colour_chance = 0.0
        best_shape = best_colour = best_colour_chance = 0.0
        for seed in range(scenes):
            scene = make_scene(1000 * c + seed, shapes=[shape])
            colour = scene.objects[0].color
            result = cam(loaded.preprocess(scene.image), [c])
            assert result.weights is not None
            alpha = result.weights[0, 0]
            maps = torch.zeros(alpha.shape[0], 1, 1)
            everyone, _ = rank_neurons(alpha, maps, names)
            positive, _ = rank_neurons(alpha, maps, names, named_only=True)
            own_all += sum(u.name == shape for u in everyone)
            own_named += sum(u.name == shape for u in positive)
            colour_hits += sum(u.name == colour for u in positive)
            colour_chance += top_named * share[colour] / max(total, 1)
            best_shape += sum(u.concept == shape for u in everyone)
            best_colour += sum(u.concept == colour for u in everyone)
            best_colour_chance += 5 * best[colour] / channels
        row = [
            own_all / scenes,
            5 * share[shape] / channels,
            own_named / scenes,
            top_named * share[shape] / max(total, 1),
            colour_hits / scenes,
            colour_chance / scenes,
            best_shape / scenes,
            5 * best[shape] / channels,
            best_colour / scenes,
            best_colour_chance / scenes,
        ]
        sums = [s + r for s, r in zip(sums, row, strict=True)]
        lines.append(
            f"| {shape} | {share[shape]} | {row[0]:.2f} ({row[1]:.2f}) | {row[2]:.2f} "
            f"({row[3]:.2f}) | {row[4]:.2f} ({row[5]:.2f}) | {row[6]:.2f} ({row[7]:.2f}) | "
            f"{row[8]:.2f} ({row[9]:.2f}) |"
        )
    m = [s / len(SHAPES) for s in sums]
    lines.append(
        f"| **mean** | {total} of {channels} named | {m[0]:.2f} ({m[1]:.2f}) | {m[2]:.2f} "
        f"({m[3]:.2f}) | {m[4]:.2f} ({m[5]:.2f}) | {m[6]:.2f} ({m[7]:.2f}) | {m[8]:.2f} "
        f"({m[9]:.2f}) |"
    )
    return lines


def _best_by_category(names: Dissection) -> str:
    best = {}
    for j, concept in enumerate(names.concepts):
        value = float(names.iou[:, j].max())
        if value > best.get(concept.category, (-1.0, ""))[0]:
            best[concept.category] = (value, concept.name)
    return ", ".join(f"{c} {v:.3f} ({n})" for c, (v, n) in best.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="generated concept images")
    parser.add_argument("--scenes", type=int, default=10, help="scenes per class")
    parser.add_argument("--skip-lite0", action="store_true", help="only the shapes CNN")
    args = parser.parse_args(argv)
    concepts = generated_concepts(args.images)
    start = time.perf_counter()
    names = dissect(gradcam.load_model("shapes"), concepts, progress=True)
    print(f"## shapes CNN, layer {names.layer}, {args.images} generated concept images")
    print(f"dissection: {time.perf_counter() - start:.1f} s; named units by category: "
          f"{dict(Counter(u.category for u in names.units if u.name))}")  # fmt: skip
    print(f"best IoU per category: {_best_by_category(names)}")
    print("\n".join(_shapes_table(names, args.scenes)))
    if args.skip_lite0:
        return 0
    lite0 = gradcam.load_model()
    start = time.perf_counter()
    lite_names = dissect(lite0, concepts, progress=True)
    print(f"\n## EfficientNet-Lite0, layer {lite_names.layer}, {args.images} concept images")
    print(f"dissection: {time.perf_counter() - start:.1f} s; named units by category: "
          f"{dict(Counter(u.category for u in lite_names.units if u.name))}; most common names: "
          f"{Counter(u.name for u in lite_names.units if u.name).most_common(8)}")  # fmt: skip
    print(f"best IoU per category: {_best_by_category(lite_names)}")
    for name, photo in _photos():
        text = explain_text(lite0, photo, lite_names)
        print(f"- {name}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
