"""``gradcam explain --task detection|segmentation`` on a real photo, with torchvision's light
detector and segmenter (random weights: the command's plumbing, not the model, is tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.caches import fill_torchvision
from helpers.photos import photo
from PIL import Image

from gradcam.cli import main
from gradcam.task_explain import load_task_model


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "cat.png"
    photo("chelsea.png").save(path)
    return path


def test_explain_detection_draws_a_map_per_detection(
    cat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    missing = tmp_path / "missing.png"
    code = main(
        [
            "explain", str(cat), str(missing), "--task", "detection",
            "--model", "ssdlite320_mobilenet_v3_large", "--min-score", "0", "--top-k", "2",
            "--weights", "random", "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == 1  # the missing file is reported, the photo still explained
    captured = capsys.readouterr()
    assert "random weights" in captured.err and "missing.png" in captured.err
    summary = json.loads((tmp_path / "out" / "cat" / "summary.json").read_text())
    assert summary["task"] == "detection" and summary["layer"] == "backbone.features.0"
    entries = summary["explained"]
    assert len(entries) == 2 and entries[0]["score"] >= entries[1]["score"]
    for entry in entries:
        x1, y1, x2, y2 = entry["box"]
        assert 0 <= x1 <= x2 <= 451 and 0 <= y1 <= y2 <= 300  # chelsea.png is 451 x 300
        with Image.open(tmp_path / "out" / "cat" / entry["file"]) as overlay:
            assert overlay.size == (451, 300)


def test_explain_segmentation_maps_the_largest_regions(cat: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = tmp_path / "out"
    args = ["explain", str(cat), "--task", "segmentation", "--weights", "random", "--out", str(out)]
    assert main([*args, "--model", "lraspp_mobilenet_v3_large", "--top-k", "2"]) == 0
    entries = json.loads((out / "cat" / "summary.json").read_text())["explained"]
    assert 1 <= len(entries) <= 2 and sum(e["area"] for e in entries) <= 1.0
    assert entries[0]["area"] >= entries[-1]["area"] > 0
    assert main([*args, "--model", "lraspp_mobilenet_v3_large", "--class", "dog"]) == 0
    entries = json.loads((out / "cat" / "summary.json").read_text())["explained"]
    assert [e["name"] for e in entries] == ["dog"]


def test_bad_task_arguments(cat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    base = ["explain", str(cat), "--out", out]
    assert main([*base, "--task", "detection", "--model", "resnet50"]) == 2
    assert "unknown detection model 'resnet50'" in capsys.readouterr().err
    assert main([*base, "--task", "segmentation", "--model", "fcn_resnet5"]) == 2
    assert "did you mean fcn_resnet50" in capsys.readouterr().err
    code = main([*base, "--task", "detection", "--model", "fcos_resnet50_fpn", "--min-score", "2"])
    assert code == 2 and "--min-score must be in [0, 1]" in capsys.readouterr().err
    code = main([*base, "--task", "segmentation", "--model", "fcn_resnet50", "--figure"])
    assert code == 2 and "--figure apply to classifiers" in capsys.readouterr().err


def test_class_names_of_torchvision_weights() -> None:
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_task_model("lraspp_mobilenet_v3_large", "segmentation", "random")
    assert loaded.class_names[12] == "dog" and len(loaded.class_names) == 21
    assert not loaded.pretrained


def test_default_weights_from_torch_cache(capsys: pytest.CaptureFixture[str]) -> None:
    name = "lraspp_mobilenet_v3_large"
    _, source = fill_torchvision(name, weights_backbone=None)
    loaded = load_task_model(name, "segmentation")
    assert loaded.pretrained and loaded.class_names[12] == "dog"
    key = "classifier.low_classifier.weight"
    expected = source.state_dict()[key].half().float()
    assert torch.equal(loaded.module.state_dict()[key], expected)


def test_offline_empty_cache(cat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["explain", str(cat), "--task", "detection", "--model", "fcos_resnet50_fpn"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "weights fcos_resnet50_fpn COCO_V1 are not in the cache" in error
    assert "\n" not in error and "Traceback" not in error


@pytest.mark.parametrize(
    "name", ["fcos_resnet50_fpn", "retinanet_resnet50_fpn", "ssdlite320_mobilenet_v3_large"]
)
def test_class_names_of_detectors_with_a_dense_head(name: str) -> None:
    # their last convolution regresses boxes or centerness: the classes come from the head
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_task_model(name, "detection", "random")
    assert len(loaded.class_names) == 91 and loaded.class_names[1] == "person"
