"""The seeds protocol: exact on tiny maps, masks and a model whose map is its input, then on
the shipped shapes CNN and the synthetic scenes, a VOC folder, and bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.models import ChannelNet, channel_model
from helpers.state import assert_unchanged, snapshot
from PIL import Image
from torch import nn

import gradcam
from gradcam.evaluate import open_dataset, read_voc, run
from gradcam.evaluate.datasets import Annotation, Dataset, Sample
from gradcam.evaluate.seeds import BACKGROUND, Seeds, seed_counts, seeds, truth_masks
from gradcam.images import Preprocess
from gradcam.synthetic import ShapeNet


def _box_mask(box: tuple[int, int, int, int], size: tuple[int, int] = (32, 48)) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


RED = (4, 6, 15, 20)  # 12 x 15 = 180 red pixels
MASK = (4, 6, 19, 20)  # the annotated object: 16 x 15 = 240 pixels, the red box and more


@pytest.fixture
def red_boxes(tmp_path: Path) -> Dataset:
    image = Image.new("RGB", (48, 32))
    image.paste((255, 0, 0), (RED[0], RED[1], RED[2] + 1, RED[3] + 1))
    image.save(tmp_path / "a.png")
    image.save(tmp_path / "b.png")
    masked = Sample(tmp_path / "a.png", (0,), (Annotation(0, MASK, _box_mask(MASK)),))
    unmasked = Sample(tmp_path / "b.png", (0,), (Annotation(0, MASK),))
    return Dataset("red", ("red", "green"), [masked, unmasked])


def test_seeds_by_hand() -> None:
    maps = torch.tensor([[[0.0, 1.0, 4.0, 10.0, 2.5]], [[2.0, 0.0, 1.0, 1.0, 0.0]]])
    # Scaled by their maxima: [0, .1, .4, 1, .25] and [1, 0, .5, .5, 0]; the best of the two
    # is [1 (class 1), .1, .5 (class 1), 1 (class 0), .25 (class 0)].
    expected = [[0, 1, 0, 0, 0], [0, 0, 0, 1, 1], [1, 0, 1, 0, 0]]
    assert seeds(maps).int()[:, 0].tolist() == expected
    # A higher foreground threshold leaves .25 unseeded; background stays at or below .1.
    assert seeds(maps, foreground=0.3).int()[:, 0].tolist() == [
        [0, 1, 0, 0, 0],
        [0, 0, 0, 1, 0],
        [1, 0, 1, 0, 0],
    ]


def test_seeds_of_an_empty_map_are_background() -> None:
    planes = seeds(torch.zeros(1, 2, 3))
    assert planes[0].all() and not planes[1].any()


def test_seeds_on_ties_go_to_the_first_class() -> None:
    planes = seeds(torch.ones(2, 1, 2))
    assert planes[1].all() and not planes[2].any() and not planes[0].any()


def test_seeds_need_maps() -> None:
    with pytest.raises(gradcam.GradCAMError, match=r"got shape \(0, 2, 2\)"):
        seeds(torch.zeros(0, 2, 2))
    with pytest.raises(gradcam.GradCAMError, match=r"got shape \(2, 2\)"):
        seeds(torch.zeros(2, 2))


def test_seed_counts_by_hand() -> None:
    seeded = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 1, 1]]], dtype=torch.bool)
    truth = torch.tensor([[[1, 0, 0, 0]], [[0, 1, 1, 1]]], dtype=torch.bool)
    assert seed_counts(seeded, truth) == ([1, 2], [2, 2], [1, 3])
    ignore = torch.tensor([[False, False, False, True]])
    assert seed_counts(seeded, truth, ignore) == ([1, 1], [2, 1], [1, 2])
    with pytest.raises(gradcam.GradCAMError, match="differ"):
        seed_counts(seeded, truth[:1])


def test_truth_masks_from_annotations(tmp_path: Path) -> None:
    a, b = _box_mask((0, 0, 1, 1), (4, 4)), _box_mask((2, 2, 3, 3), (4, 4))
    sample = Sample(tmp_path / "x.png", (0, 3), (Annotation(0, None, a), Annotation(3, None, b)))
    planes, ignore = truth_masks(sample, [0, 3], (4, 4))
    assert ignore is None
    assert planes[1].numpy().tolist() == a.tolist() and planes[2].numpy().tolist() == b.tolist()
    assert int(planes[0].sum()) == 16 - 8
    # A class not asked for is still an object, not background.
    planes, _ = truth_masks(sample, [3], (4, 4))
    assert int(planes[0].sum()) == 8
    with pytest.raises(gradcam.GradCAMError, match="a mask of 4x4 pixels for an image of 5x4"):
        truth_masks(sample, [0, 3], (4, 5))


def test_protocol_by_hand(red_boxes: Dataset) -> None:
    model = channel_model("red")
    before = snapshot(model.module)
    result = run(Seeds(), model, red_boxes, progress=False)
    assert_unchanged(before, model.module)
    row, bad = result.rows
    assert "no masks" in bad["error"]
    assert row["classes"] == [BACKGROUND, 0] and row["names"] == ["background", "red"]
    # The red map is 1 on the 180 red pixels and 0 elsewhere: those are red seeds, the other
    # 1356 pixels background. The object mask has 240 pixels, 180 of them red.
    assert row["seeded"] == [1536 - 180, 180]
    assert row["truth"] == [1536 - 240, 240]
    assert row["intersection"] == [1536 - 240, 180]
    overall, background, red = result.summary
    assert red == {
        "method": "gradcam",
        "class": "red",
        "images": 1,
        "precision": 100.0,
        "recall": 75.0,
        "iou": 75.0,
        "miou": None,  # the "all" row's
        "coverage": 11.72,  # 180 / 1536 pixels seeded red
        "precision_pixels": 100.0,
    }
    assert background["precision"] == background["iou"] == 95.58  # 1296 / 1356
    assert background["recall"] == 100.0
    assert overall["miou"] == 85.29 and overall["images"] == 1  # (75 + 95.58) / 2
    assert overall["coverage"] == 100.0 and overall["precision_pixels"] == 96.09  # 1476/1536


def test_thresholds_change_the_seeds(red_boxes: Dataset) -> None:
    # Red is 1.0 on its pixels: no foreground fraction below 1 changes them.
    strict = run(
        Seeds(foreground=0.99, background=0.5), channel_model("red"), red_boxes, progress=False
    )
    assert strict.rows[0]["seeded"] == [1536 - 180, 180]


def test_seeds_of_the_shapes_cnn_on_synthetic_scenes(tmp_path: Path) -> None:
    shapes = gradcam.load_model("shapes")
    data = open_dataset("synthetic", count=16, workdir=tmp_path)
    before = snapshot(shapes.module)
    summaries = {}
    for method in ("gradcam", "cam"):
        result = run(Seeds(method), shapes, data, progress=False)
        assert not result.failed
        summaries[method] = result.summary
    assert_unchanged(before, shapes.module)
    for summary in summaries.values():
        overall, *per_class = summary
        assert overall["images"] == 16
        assert per_class[0]["class"] == "background"
        assert len(per_class) == 1 + len({r["classes"][1] for r in result.rows})
        assert 0.0 < overall["miou"] < 100.0
    # The trained model's seeds are far better than those of the same network untrained.
    torch.manual_seed(0)
    untrained = dataclasses.replace(shapes, module=ShapeNet().eval())
    chance = run(Seeds(), untrained, data, progress=False).summary[0]
    assert summaries["gradcam"][0]["miou"] > chance["miou"] + 20.0
    assert summaries["gradcam"][0]["precision_pixels"] > chance["precision_pixels"] + 10.0
    # At the layer CAM needs (GAP then one linear layer), Grad-CAM's weights are CAM's
    # divided by Z (section 3.1): the same seeds.
    assert summaries["gradcam"][0]["miou"] == summaries["cam"][0]["miou"]


def _voc(root: Path) -> None:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main", "SegmentationClass"):
        (root / folder).mkdir(parents=True)
    (root / "ImageSets" / "Main" / "val.txt").write_text("000001\n000002\n")
    for name in ("000001", "000002"):
        Image.new("RGB", (6, 4), (200, 10, 10)).save(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations" / f"{name}.xml").write_text(
            "<annotation><size><width>6</width><height>4</height></size><object><name>cat"
            "</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox>"
            "</object></annotation>"
        )
    index = np.zeros((4, 6), dtype=np.uint8)
    index[0:3, 0:3] = 8  # cat is VOC class 7: palette index 8
    index[3, :] = 255  # void border
    Image.fromarray(index, mode="L").save(root / "SegmentationClass" / "000001.png")


def test_voc_segmentation_masks(tmp_path: Path) -> None:
    _voc(tmp_path)
    data = read_voc(tmp_path)
    planes, ignore = truth_masks(data.samples[0], [7], (4, 6))
    assert ignore is not None and int(ignore.sum()) == 6
    assert int(planes[1].sum()) == 9 and int(planes[0].sum()) == 24 - 9 - 6
    with pytest.raises(gradcam.GradCAMError, match="no masks"):
        truth_masks(data.samples[1], [7], (4, 6))  # not in the segmentation split
    with pytest.raises(gradcam.GradCAMError, match="6x4 pixels, not 4x6"):
        truth_masks(data.samples[0], [7], (6, 4))
    (tmp_path / "SegmentationClass" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(gradcam.GradCAMError, match="not a readable segmentation mask"):
        truth_masks(data.samples[0], [7], (4, 6))


def test_a_voc_run_ignores_void_pixels(tmp_path: Path) -> None:
    _voc(tmp_path)
    data = read_voc(tmp_path)
    model = gradcam.LoadedModel(
        "red",
        nn.Sequential(ChannelNet(), nn.Linear(2, 20)).eval(),
        Preprocess(4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        data.class_names,
        "0.features",
        True,
    )
    result = run(Seeds(), model, data, progress=False)
    good, bad = result.rows
    assert "no masks" in bad["error"]
    assert good["pixels"] == 24 - 6 and good["truth"] == [24 - 9 - 6, 9]


def test_bad_settings() -> None:
    with pytest.raises(gradcam.GradCAMError, match="foreground must be a fraction"):
        Seeds(foreground=float("nan"))
    with pytest.raises(gradcam.GradCAMError, match=r"background \(0.5\) must not be above"):
        Seeds(background=0.5)
    with pytest.raises(gradcam.GradCAMError, match="unknown method"):
        Seeds("gradcram")


def test_datasets_without_labels_or_masks(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    boxes_only = Dataset("boxes", ("red",), [Sample(tmp_path / "a.png", (0,), (Annotation(0),))])
    with pytest.raises(gradcam.GradCAMError, match="has no segmentation masks"):
        run(Seeds(), channel_model("red"), boxes_only, progress=False)
    unlabeled = Dataset("photos", (), [Sample(tmp_path / "a.png")])
    with pytest.raises(gradcam.GradCAMError, match="has no labels"):
        run(Seeds(), channel_model("red"), unlabeled, progress=False)


def test_streamed_and_resumed_runs_give_the_same_summary(
    red_boxes: Dataset, tmp_path: Path
) -> None:
    here = run(Seeds(), channel_model("red"), red_boxes, progress=False)
    streamed = run(Seeds(), channel_model("red"), red_boxes, progress=False, out=tmp_path / "run")
    resumed = run(
        Seeds(), channel_model("red"), red_boxes, progress=False, out=tmp_path / "run", resume=True
    )
    assert streamed.summary == here.summary == resumed.summary
    assert streamed.rows[0]["seeded"] == here.rows[0]["seeded"]
