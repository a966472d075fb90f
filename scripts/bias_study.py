"""The dataset-bias study of section 6.3 (Fig. 8), on scenes generated offline.

Two classes differ by a true cue, the shape of the main object (a ``circle`` or a ``ring``,
in any of six colours). A spurious cue, a small square "badge" beside it, is red or blue.
In the biased training split the badge follows the class as the paper's image-search results
followed gender (78% of the first class have a red badge, 93% of the second a blue one);
in the rebalanced split of the same size, and in the test split, each class has each badge
colour half the time. The same small CNN (:class:`gradcam.synthetic.ShapeNet` with two
outputs) is trained on each split with the same seed, then measured on the test split:
accuracy, and, with ``gradcam diagnose bias``'s machinery (:func:`gradcam.diagnose.diagnose_bias`),
the mean fraction of the labeled class's Grad-CAM map on the badge and on the object.

Usage::

    python scripts/bias_study.py --out docs/bias_study.json      # a few minutes on a CPU
    python scripts/bias_study.py --train 64 --test 16 --epochs 1 # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam.diagnose.bias import OWN, diagnose_bias
from gradcam.evaluate.datasets import Annotation, Dataset, Sample
from gradcam.images import Preprocess
from gradcam.models import LoadedModel
from gradcam.synthetic import SHAPES_LAYER, SHAPES_MEAN, SHAPES_STD, ShapeNet, make_scene

CLASSES = ("circle", "ring")
BADGES = ("red", "blue")
BADGE_SHAPE = "square"
OBJECT_COLORS = ("green", "yellow", "purple", "orange", "white", "cyan")
SIZE = 64
#: P(red badge | class): the paper's 78% and 93% (the second class mostly blue).
BIASED = (0.78, 0.07)
BALANCED = (0.5, 0.5)


def make_split(count: int, red_given_class: tuple[float, float], seed: int) -> list[Any]:
    """``count`` scenes, half of each class, with the badge colour drawn per class."""
    rng = np.random.default_rng(seed)
    scenes = []
    for index in range(count):
        label = index % 2
        red = rng.random() < red_given_class[label]
        badge = BADGES[0] if red else BADGES[1]
        color = OBJECT_COLORS[int(rng.integers(len(OBJECT_COLORS)))]
        scene = make_scene(
            rng,
            size=SIZE,
            shapes=[CLASSES[label], BADGE_SHAPE],
            colors=[color, badge],
            min_size=0.3,
            max_size=0.45,
        )
        scenes.append((scene, label, badge))
    return scenes


def normalize(images: Tensor) -> Tensor:
    mean = torch.tensor(SHAPES_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SHAPES_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def tensors(scenes: list[Any]) -> tuple[Tensor, Tensor]:
    arrays = np.stack([np.asarray(s.image) for s, _, _ in scenes])
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([label for _, label, _ in scenes])


def train(scenes: list[Any], epochs: int, seed: int) -> ShapeNet:
    torch.manual_seed(seed)
    model = ShapeNet(num_classes=2)
    images, labels = tensors(scenes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            x = normalize(images[batch])
            if torch.rand(1, generator=generator) < 0.5:
                x = x.flip(-1)
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        print(f"  epoch {epoch + 1}: loss {total / len(order):.3f}", file=sys.stderr)
    return model.eval()


def accuracy(model: ShapeNet, scenes: list[Any]) -> float:
    images, labels = tensors(scenes)
    with torch.no_grad():
        predicted = torch.cat([model(normalize(images[k : k + 64])).argmax(-1)
                               for k in range(0, len(labels), 64)])  # fmt: skip
    return float((predicted == labels).float().mean())


def test_dataset(scenes: list[Any], folder: Path) -> Dataset:
    """The test scenes as files with their object (its class) and badge annotations."""
    samples = []
    for index, (scene, label, _) in enumerate(scenes):
        path = folder / f"{index:05d}.png"
        scene.image.save(path)
        main, badge = scene.objects
        notes = (Annotation(label, main.box, main.mask), Annotation(2, badge.box, badge.mask))
        samples.append(Sample(path, (label,), notes, (SIZE, SIZE)))
    return Dataset("bias-test", (*CLASSES, "badge"), samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="images per training split")
    parser.add_argument("--test", type=int, default=400, help="images in the test split")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    test = make_split(args.test, BALANCED, args.seed + 2)
    preprocess = Preprocess(SIZE, mean=SHAPES_MEAN, std=SHAPES_STD, max_ratio=1.0)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        data = test_dataset(test, Path(folder))
        for name, skew, seed in (("biased", BIASED, 0), ("rebalanced", BALANCED, 1)):
            started = time.perf_counter()
            split = make_split(args.train, skew, args.seed + seed)
            reds = [sum(b == "red" for _, lab, b in split if lab == c) for c in (0, 1)]
            print(f"{name}: red badges per class {reds} of {args.train // 2}", file=sys.stderr)
            model = train(split, args.epochs, args.seed)
            loaded = LoadedModel(f"bias-{name}", model, preprocess, CLASSES, SHAPES_LAYER, True)
            found = diagnose_bias(loaded, data, Path(folder) / name, progress=False)
            results[name] = {
                "test_accuracy": accuracy(model, test),
                "train_accuracy": accuracy(model, split),
                "regions": found.summary,
                "seconds": round(time.perf_counter() - started, 1),
            }
    print("| training split | test accuracy | class | mass on object | mass on badge |")
    print("|---|---|---|---|---|")
    for name, found in results.items():
        table = {(r["class"], r["region"]): r for r in found["regions"]}
        for c in CLASSES:
            own, badge = table[c, OWN], table[c, "badge"]
            print(
                f"| {name} | {100 * found['test_accuracy']:.1f}% | {c} | "
                f"{own['mean_fraction']:.3f} [{own['ci_low']:.3f}, {own['ci_high']:.3f}] | "
                f"{badge['mean_fraction']:.3f} [{badge['ci_low']:.3f}, {badge['ci_high']:.3f}] |"
            )
    if args.out:
        args.out.write_text(json.dumps({"settings": {**vars(args), "out": str(args.out)},
                                        "results": results}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
