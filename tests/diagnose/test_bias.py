"""``gradcam diagnose bias``: the statistics on hand-made maps and regions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_shapes_coco
from PIL import Image

from gradcam.cli import main
from gradcam.diagnose.bias import OWN, diagnose_bias, mean_interval, summarize_bias
from gradcam.errors import GradCAMError
from gradcam.evaluate.datasets import Annotation, Dataset, Sample
from gradcam.models import LoadedModel

RED, GREEN, STRIPE, CORNER = range(4)


def test_mean_interval_is_the_student_t_interval() -> None:
    # t(0.975, 2) = 4.3027 from the table; s = 0.1; s / sqrt(3) = 0.057735.
    mean, low, high = mean_interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert low == pytest.approx(0.6 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert high == pytest.approx(0.6 + 4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert mean_interval([0.3]) == (0.3, 0.0, 1.0)
    assert mean_interval([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2, 0.2))
    assert mean_interval([0.0, 1.0, 0.0, 1.0])[1:] == (0.0, 1.0)  # clipped to [0, 1]
    with pytest.raises(ValueError):
        mean_interval([])


def test_regions_relied_on_more_than_the_object_are_flagged() -> None:
    records = [("nurse", OWN, v) for v in (0.1, 0.2, 0.3)]
    records += [("nurse", "face", v) for v in (0.6, 0.7, 0.8)]
    records += [("nurse", "badge", v) for v in (0.15, 0.25)]
    records += [("doctor", OWN, 0.5), ("doctor", OWN, 0.5), ("doctor", "face", 0.1)]
    found = {(s.class_name, s.region): s for s in summarize_bias(records)}
    face = found["nurse", "face"]
    assert face.flagged and face.significant and face.images == 3
    assert face.mean == pytest.approx(0.7)
    assert not found["nurse", "badge"].flagged  # 0.2 == the object's 0.2: not more
    assert not found["doctor", "face"].flagged
    order = [s.region for s in summarize_bias(records) if s.class_name == "nurse"]
    assert order == ["face", OWN, "badge"] or order == ["face", "badge", OWN]


@pytest.fixture()
def striped(tmp_path: Path) -> Dataset:
    """Two images of a red band (rows 0-7): the red map is the band, spread evenly."""
    band = np.zeros((32, 32, 3), dtype=np.uint8)
    band[0:8, :, 0] = 255
    paths = []
    for name in ("a.png", "b.png"):
        Image.fromarray(band).save(tmp_path / name)
        paths.append(tmp_path / name)
    first = (
        Annotation(RED, (0, 0, 15, 7)),  # half the band: 0.5
        Annotation(STRIPE, (0, 0, 31, 1)),  # two of its eight rows: 0.25
        Annotation(CORNER, (16, 0, 31, 7)),  # the other half: 0.5
    )
    second = (
        Annotation(RED, (0, 0, 7, 7)),  # a quarter: 0.25
        Annotation(STRIPE, (0, 6, 31, 31)),  # 0.25
        Annotation(CORNER, (8, 0, 31, 7)),  # 0.75
    )
    samples = [Sample(paths[0], (RED,), first), Sample(paths[1], (RED,), second)]
    return Dataset("striped", ("red", "green", "stripe", "corner"), samples)


def test_fractions_on_hand_made_maps(
    red_green: LoadedModel, striped: Dataset, tmp_path: Path
) -> None:
    result = diagnose_bias(red_green, striped, tmp_path / "run", progress=False)
    table = {(r["class"], r["region"]): r for r in result.summary}
    assert set(table) == {("red", OWN), ("red", "stripe"), ("red", "corner")}
    assert table["red", OWN]["mean_fraction"] == pytest.approx(0.375)
    assert table["red", "stripe"]["mean_fraction"] == pytest.approx(0.25)
    assert table["red", "stripe"]["ci_low"] == pytest.approx(0.25)  # no spread
    assert table["red", "corner"]["mean_fraction"] == pytest.approx(0.625)
    assert table["red", "corner"]["flagged"] and not table["red", "corner"]["significant"]
    assert not table["red", "stripe"]["flagged"]
    assert (tmp_path / "run" / "report.html").is_file()
    only = diagnose_bias(red_green, striped, tmp_path / "only", regions=["stripe"], progress=False)
    assert {r["region"] for r in only.summary} == {OWN, "stripe"}


def test_resume_continues_a_run(red_green: LoadedModel, striped: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = diagnose_bias(red_green, striped, out, regions=["corner"], limit=1, progress=False)
    assert {r["images"] for r in first.summary} == {1}
    again = diagnose_bias(red_green, striped, out, regions=["corner"], resume=True, progress=False)
    assert {r["images"] for r in again.summary} == {2}
    with pytest.raises(GradCAMError, match="other settings"):
        diagnose_bias(red_green, striped, out, regions=["stripe"], resume=True, progress=False)


def test_bad_inputs(red_green: LoadedModel, striped: Dataset, tmp_path: Path) -> None:
    with pytest.raises(GradCAMError, match="no region kind 'hat'"):
        diagnose_bias(red_green, striped, tmp_path / "a", regions=["hat"])
    with pytest.raises(GradCAMError, match="no images"):
        diagnose_bias(red_green, Dataset("empty", (), []), tmp_path / "b")
    strangers = Dataset("strangers", ("cat", "dog"), striped.samples)
    with pytest.raises(GradCAMError, match="no label that is one of the model's classes"):
        diagnose_bias(red_green, strangers, tmp_path / "c")
    with pytest.raises(GradCAMError, match="explain"):
        diagnose_bias(red_green, striped, tmp_path / "d", explain="both")


def test_cli_on_coco_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Synthetic scenes as COCO, with a 'corner' region kind beside the shapes."""
    coco = write_shapes_coco(tmp_path, ["star", "circle", "star"])
    folder = tmp_path / "images"
    out = tmp_path / "out"
    args = ["diagnose", "bias", str(folder), "--annotations", str(coco), "--model", "shapes"]
    assert main([*args, "--out", str(out)]) == 1  # the broken image is reported and skipped
    printed, err = capsys.readouterr()
    assert "| star | corner |" in printed and f"| star | {OWN} |" in printed
    assert "broken.png: cannot be read" in err
    assert main([*args, "--regions", "hat", "--out", str(tmp_path / "x")]) == 2
    assert "no region kind 'hat'" in capsys.readouterr().err
