"""The paper's protocols on volumes and clips: hand-computed 3-D boxes, IoU and pointing, the
benchmarks' datasets, and Grad-CAM on the shipped 3-D nets measured against chance (tests
that fail when the maps are wrong)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gradcam.cli import main
from gradcam.errors import GradCAMError
from gradcam.evaluate import (
    Ablations,
    Localization,
    ModelSpec,
    Pointing,
    Road,
    box_iou,
    open_dataset,
    pointing_hit,
    run,
)
from gradcam.evaluate.datasets import DatasetError, read_synthetic_nd
from gradcam.evaluate.runner import decode_sample
from gradcam.maps import bounding_box, peak, peak_point, region_box


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --out, synthetic samples are written under ./gradcam_eval: keep them here."""
    monkeypatch.chdir(tmp_path)


def test_region_box_3d_by_hand() -> None:
    m = torch.zeros(6, 8, 10)
    m[1:3, 2:5, 3:7] = 1.0  # 2 x 3 x 4 = 24 voxels
    m[4, 7, 9] = 0.5  # a separate corner voxel: smaller
    assert region_box(m) == (3, 2, 1, 6, 4, 2)
    # 26-connectivity: a voxel touching only by a corner joins the segment.
    m[3, 5, 7] = 1.0
    assert region_box(m) == (3, 2, 1, 7, 5, 3)
    # Below 15% of the maximum a voxel is not part of any segment.
    m[0, 0, 0] = 0.1
    assert region_box(m) == (3, 2, 1, 7, 5, 3)
    assert region_box(torch.zeros(2, 3, 4)) == (0, 0, 0, 3, 2, 1)


def test_2d_box_and_peak_are_unchanged() -> None:
    m = torch.zeros(8, 8)
    m[2:4, 3:6] = 1.0
    assert bounding_box(m) == region_box(m) == (3, 2, 5, 3)
    assert peak(m) == peak_point(m) == (3, 2)
    with pytest.raises(ValueError, match=r"needs a \(h, w\) map"):
        bounding_box(torch.zeros(2, 2, 2))


def test_box_iou_3d_by_hand() -> None:
    # 2x2x2 (8 voxels) and 3x2x2 (12) overlapping in 1x2x2 (4): 4 / 16.
    assert box_iou((0, 0, 0, 1, 1, 1), (1, 0, 0, 3, 1, 1)) == 0.25
    assert box_iou((0, 0, 0, 1, 1, 1), (2, 2, 2, 3, 3, 3)) == 0.0
    with pytest.raises(ValueError, match="ranks"):
        box_iou((0, 0, 1, 1), (0, 0, 0, 1, 1, 1))


def test_pointing_in_the_right_frame() -> None:
    """A clip's object at x 2..3 in frame 0 and x 5..6 in frame 1: a peak on frame 1's
    position in frame 0 misses its mask but falls inside its box (the whole path)."""
    mask = np.zeros((2, 4, 8), dtype=bool)
    mask[0, 1:3, 2:4] = True
    mask[1, 1:3, 5:7] = True
    box = (2, 1, 0, 6, 2, 1)
    wrong_frame = torch.zeros(2, 4, 8)
    wrong_frame[0, 1, 5] = 1.0
    right = torch.zeros(2, 4, 8)
    right[1, 2, 6] = 1.0
    assert pointing_hit(wrong_frame, boxes=[box], tolerance=0)
    assert not pointing_hit(wrong_frame, masks=[mask], tolerance=0)
    assert pointing_hit(wrong_frame, masks=[mask], tolerance=1)  # one frame away
    assert pointing_hit(right, masks=[mask], tolerance=0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> object:
    return read_synthetic_nd("clips", tmp_path_factory.mktemp("clips"), 24)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> object:
    return read_synthetic_nd("volumes", tmp_path_factory.mktemp("volumes"), 16)


def test_datasets_hold_exact_3d_annotations(clips: object, volumes: object) -> None:
    for data, shape in ((clips, (1, 8, 32, 32)), (volumes, (1, 32, 32, 32))):
        assert data.rank == 3  # type: ignore[attr-defined]
        for sample in data.samples[:4]:  # type: ignore[attr-defined]
            decoded, array = decode_sample(sample)
            (annotation,) = decoded.annotations
            assert array.shape == shape and annotation.mask.shape == shape[1:]
            zs, ys, xs = np.nonzero(annotation.mask)
            assert annotation.box == (xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max())
    # Read back, not written again: the same files.
    again = read_synthetic_nd("clips", clips.samples[0].path.parents[1], 24)  # type: ignore[attr-defined]
    assert again.identity["digest"] == clips.identity["digest"]  # type: ignore[attr-defined]


def test_dataset_refusals(tmp_path: Path, volumes: object) -> None:
    with pytest.raises(DatasetError, match="unknown synthetic benchmark 'movies'"):
        read_synthetic_nd("movies", tmp_path, 4)
    with pytest.raises(DatasetError, match="needs 1 to"):
        read_synthetic_nd("clips", tmp_path, 0)
    (tmp_path / "annotations.json").write_text("{}")
    with pytest.raises(DatasetError, match="not a synthetic clips benchmark"):
        read_synthetic_nd("clips", tmp_path, 4)
    # Protocols that score photos only refuse volumes in one line.
    for protocol in (Road(), Ablations()):
        with pytest.raises(GradCAMError, match=r"scores images only; dataset .* holds volumes"):
            protocol.check(volumes)  # type: ignore[arg-type]


def test_bad_sample_file_is_a_row_error(tmp_path: Path, clips: object) -> None:
    data = read_synthetic_nd("clips", tmp_path, 2)
    data.samples[1].path.write_bytes(b"not an npz")
    result = run(Pointing(tolerance=0), ModelSpec("motion"), data, progress=False)
    assert result.rows[0]["error"] is None
    assert "not a sample array" in result.rows[1]["error"]


def _chance(data: object) -> float:
    """The pointing accuracy of a point drawn uniformly at random: the object's share of
    the voxels."""
    return float(np.mean([s.annotations[0].mask.mean() for s in data.samples]))  # type: ignore[attr-defined]


def test_motion_gradcam_points_at_the_moving_square(clips: object) -> None:
    """The motion net's Grad-CAM peaks on the moving square in the frame where it is far
    more often than chance (about 5% of the voxels), and never on its static twin."""
    spec = ModelSpec("motion")
    result = run(Pointing(tolerance=0), spec, clips, progress=False)  # type: ignore[arg-type]
    accuracy = result.summary[0]["accuracy"]
    assert accuracy >= 30.0 and accuracy >= 5 * 100 * _chance(clips)
    located = run(Localization(), spec, clips, progress=False)  # type: ignore[arg-type]
    assert located.summary[0]["cls_top1_error"] <= 10.0
    # Boxes overlap the truth far better than the box of a map with no evidence (the whole
    # clip, the box of a uniform random map).
    ious, whole = [], []
    for row, sample in zip(located.rows, clips.samples, strict=True):  # type: ignore[attr-defined]
        truth = sample.annotations[0].box
        ious.append(box_iou(tuple(row["boxes"][0]), truth))
        whole.append(box_iou((0, 0, 0, 31, 31, 7), truth))
    assert np.mean(ious) > 1.5 * np.mean(whole)


def test_random_weights_point_no_better(clips: object) -> None:
    """The same measurement with random weights: the check above can fail."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        spec = ModelSpec("motion", "random")
        torch.manual_seed(0)
        result = run(Pointing(tolerance=0), spec, clips, progress=False)  # type: ignore[arg-type]
    assert result.summary[0]["accuracy"] < 30.0


def test_shapes3d_gradcam_points_into_the_solid(volumes: object) -> None:
    """The solids net's Grad-CAM peaks inside the solid's voxels (about 2% of the volume)
    far more often than chance; with random weights it does not."""
    located = run(Pointing(tolerance=0), ModelSpec("shapes3d"), volumes, progress=False)  # type: ignore[arg-type]
    accuracy = located.summary[0]["accuracy"]
    assert accuracy >= 25.0 and accuracy >= 10 * 100 * _chance(volumes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(0)
        spec = ModelSpec("shapes3d", "random")
        random = run(Pointing(tolerance=0), spec, volumes, progress=False)  # type: ignore[arg-type]
    assert random.summary[0]["accuracy"] < accuracy - 15.0


def test_evaluate_command_on_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "pointing", "--data", "synthetic-clips", "--synthetic-images", "4"]
    assert main([*args, "--tolerance", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| gradcam | precision |" in out
    assert (tmp_path / "synthetic-clips-0-4" / "annotations.json").is_file()
    assert open_dataset("synthetic-clips", count=4, workdir=tmp_path).rank == 3
    code = main(["evaluate", "road", "--data", "synthetic-clips", "--synthetic-images", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "road scores images only" in err and "Traceback" not in err
