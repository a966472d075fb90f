"""A hand-weighted two-class model ("red", "green") whose Grad-CAM maps are known exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from gradcam.images import Preprocess
from gradcam.models import LoadedModel
from gradcam.synthetic import SHAPES, make_scene


def red_green_model() -> LoadedModel:
    """conv1x1 (channel 0 = red, channel 1 = green) -> ReLU -> GAP: ``y^red`` is the mean red
    intensity, and Grad-CAM of a class is its colour channel divided by the pixel count."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 1] = 1.0
    module = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    identity = Preprocess(32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), max_ratio=1.0)
    return LoadedModel("red-green", module, identity, ("red", "green"), "1", True)


@pytest.fixture()
def red_green() -> LoadedModel:
    return red_green_model()


def write_shapes_coco(
    folder: Path,
    shapes: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    corner: bool = True,
    broken: bool = True,
) -> Path:
    """Synthetic one-shape scenes as COCO for the ``shapes`` model: ``labels`` (default: the
    shapes drawn) name each image's annotated class, boxed on its object; a 'corner' region
    kind (with ``corner``) boxes the top-left corner; with ``broken``, one more listed file
    is not an image. Returns the annotation file; the images are in ``folder / "images"``."""
    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for index, shape in enumerate(shapes):
        scene = make_scene(index, shapes=[shape])
        name = f"{index}.png"
        scene.image.save(images_dir / name)
        images.append({"id": index + 1, "file_name": name, "width": 128, "height": 128})
        x0, y0, x1, y1 = scene.objects[0].box
        label = (labels or shapes)[index]
        boxes = [(SHAPES.index(label), [x0, y0, x1 - x0 + 1, y1 - y0 + 1])]
        if corner:
            boxes.append((len(SHAPES), [0, 0, 32, 32]))
        for category, bbox in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": index + 1, "category_id": category,
                 "bbox": bbox, "iscrowd": 0}
            )  # fmt: skip
    if broken:
        (images_dir / "broken.png").write_bytes(b"not an image")
        images.append({"id": len(images) + 1, "file_name": "broken.png", "width": 128,
                       "height": 128})  # fmt: skip
    names = [*SHAPES, "corner"] if corner else list(SHAPES)
    categories = [{"id": i, "name": n} for i, n in enumerate(names)]
    coco = folder / "coco.json"
    coco.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return coco
