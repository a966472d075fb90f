"""Regions of ``diagnose bias`` and ``failures``: boxes and polygons clipped to the photo,
non-finite coordinates refused (issue 30, item 5)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradcam.diagnose.bias import diagnose_bias
from gradcam.diagnose.regions import clip_box, region_mask
from gradcam.errors import GradCAMError
from gradcam.evaluate.datasets import Annotation, Dataset, Sample, read_coco
from gradcam.models import LoadedModel


def test_box_partly_outside_is_clipped() -> None:
    mask = region_mask([Annotation(0, box=(-5, -5, 1, 2))], (4, 4), (4, 4))
    assert mask is not None
    assert mask.sum() == 6 and mask[:3, :2].all()


@pytest.mark.parametrize("box", [(-50, -50, -41, -41), (10, 0, 20, 3), (0, 9, 3, 12)])
def test_box_wholly_outside_is_refused(box: tuple[int, int, int, int]) -> None:
    # (-50, -50, -41, -41) once became union[0:-40, 0:-40]: most of the image.
    with pytest.raises(GradCAMError, match="lies wholly outside the 8x8 image"):
        region_mask([Annotation(0, box=box)], (8, 8), (8, 8))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_box_is_refused(bad: float) -> None:
    with pytest.raises(GradCAMError, match="four finite numbers"):
        clip_box((0, 0, bad, 3), (8, 8))


def _coco(folder: Path, segmentation: list[list[float]], bbox: list[float]) -> Dataset:
    Image.new("RGB", (30, 20)).save(folder / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
        "categories": [{"id": 0, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": bbox,
             "segmentation": segmentation, "iscrowd": 0}
        ],
    }  # fmt: skip
    (folder / "coco.json").write_text(json.dumps(coco))
    return read_coco(folder / "coco.json", folder)


def test_huge_polygon_covers_the_image(tmp_path: Path) -> None:
    """A polygon reaching 1e12 px was drawn by Pillow as one pixel."""
    square = [[0, 0, 1e12, 0, 1e12, 1e12, 0, 1e12]]
    dataset = _coco(tmp_path, square, [0, 0, 1e12, 1e12])
    mask = dataset.samples[0].annotations[0].mask
    assert mask is not None and mask.all()


def test_polygon_near_the_image_is_drawn_as_given(tmp_path: Path) -> None:
    triangle = [[-25.5, -3.0, 50.0, 4.2, 7.3, 35.0]]
    mask = _coco(tmp_path, triangle, [0, 0, 1, 1]).samples[0].annotations[0].mask
    from PIL import ImageDraw

    canvas = Image.new("1", (30, 20), 0)
    ImageDraw.Draw(canvas).polygon(triangle[0], fill=1, outline=1)
    assert mask is not None and np.array_equal(mask, np.asarray(canvas, dtype=bool))


def test_nan_vertex_is_refused(tmp_path: Path) -> None:
    dataset = _coco(tmp_path, [[0, 0, 10, 0, math.nan, 10]], [0, 0, 10, 10])
    assert not dataset.samples
    assert "not a finite number" in dataset.problems[0]


def test_bias_names_the_region_outside_the_image(red_green: LoadedModel, tmp_path: Path) -> None:
    """The region once got mass 0.96 and was flagged; now its image is an error row."""
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "a.png")
    annotations = (Annotation(0, box=(0, 0, 31, 31)), Annotation(2, box=(-50, -50, -41, -41)))
    sample = Sample(tmp_path / "a.png", (0,), annotations, (32, 32))
    dataset = Dataset("outside", ("red", "green", "badge"), [sample])
    result = diagnose_bias(red_green, dataset, tmp_path / "out", progress=False)
    assert not [row for row in result.summary if row["region"] == "badge"]
    (error,) = [row["error"] for row in result.failed]
    assert "region 'badge': box (-50, -50, -41, -41) lies wholly outside" in error
