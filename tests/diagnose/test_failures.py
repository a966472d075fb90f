"""``gradcam diagnose failures``: a dataset whose failures and their kinds are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_shapes_coco
from helpers.state import assert_unchanged, snapshot
from PIL import Image

from gradcam.cli import main
from gradcam.diagnose.failures import Failures, diagnose_failures
from gradcam.errors import GradCAMError
from gradcam.evaluate.datasets import Annotation, Dataset, Sample, read_photos
from gradcam.evaluate.store import read_rows
from gradcam.models import LoadedModel

RED, GREEN = 0, 1


def _write(folder: Path, name: str, pixels: np.ndarray) -> Path:
    path = folder / name
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _canvas() -> np.ndarray:
    return np.zeros((32, 32, 3), dtype=np.uint8)


@pytest.fixture()
def known(tmp_path: Path) -> Dataset:
    """Five images labeled "red" (and one unreadable file) with known outcomes."""
    # A yellowish object, more green than red: called green while the green map lies on it.
    # The box covers its left half, so every map puts exactly half its mass inside.
    right = _canvas()
    right[4:12, 4:12] = (100, 200, 0)
    # A small red square and a big green one 13 pixels away: called green, looking at green.
    wrong = _canvas()
    wrong[2:8, 2:8] = (255, 0, 0)
    wrong[20:32, 20:32] = (0, 255, 0)
    correct = _canvas()
    correct[10:20, 10:20] = (255, 0, 0)
    bare = _canvas()
    bare[0:10, 0:10] = (0, 255, 0)
    samples = [
        Sample(_write(tmp_path, "right.png", right), (RED,), (Annotation(RED, (4, 4, 7, 11)),)),
        Sample(_write(tmp_path, "wrong.png", wrong), (RED,), (Annotation(RED, (2, 2, 7, 7)),)),
        Sample(_write(tmp_path, "correct.png", correct), (RED,), (Annotation(RED, (10,) * 4),)),
        Sample(_write(tmp_path, "bare.png", bare), (RED,)),
        Sample(tmp_path / "broken.png", (RED,)),
        Sample(_write(tmp_path, "unlabeled.png", correct)),
    ]  # fmt: skip
    (tmp_path / "broken.png").write_bytes(b"not a png")
    return Dataset("known", ("red", "green"), samples)


def test_failures_grouped_by_where_the_model_looked(
    red_green: LoadedModel, known: Dataset, tmp_path: Path
) -> None:
    before = snapshot(red_green.module)
    result = diagnose_failures(red_green, known, tmp_path / "run", progress=False)
    assert_unchanged(before, red_green.module)
    rows = {Path(r["image"]).stem: r for r in result.rows}
    right, wrong = rows["right"], rows["wrong"]
    assert right["misclassified"] and right["predicted_name"] == "green"
    assert right["kind"] == "right-object" and right["points_at_object"]
    for key in ("gradcam_true_mass", "gradcam_predicted_mass", "guided_predicted_mass"):
        assert right[key] == pytest.approx(0.5)
    assert wrong["kind"] == "wrong-object" and not wrong["points_at_object"]
    assert wrong["gradcam_true_mass"] == pytest.approx(1.0)
    assert wrong["gradcam_predicted_mass"] == pytest.approx(0.0)
    assert wrong["guided_true_mass"] == pytest.approx(1.0)
    # y^red = mean red = 36 * 255 / 1024 / 255 on the [0, 1] scale.
    assert wrong["true_score"] == pytest.approx(36 / 1024)
    assert wrong["predicted_score"] == pytest.approx(144 / 1024)
    assert not rows["correct"]["misclassified"] and rows["correct"]["kind"] is None
    assert rows["bare"]["kind"] == "unannotated"
    assert "broken.png" in rows["broken"]["error"]
    assert "no class label" in rows["unlabeled"]["error"]
    summary = result.summary[0]
    assert summary["images"] == 4 and summary["misclassified"] == 3
    assert (summary["right-object"], summary["wrong-object"], summary["unannotated"]) == (1, 1, 1)
    assert summary["mean_gradcam_true_mass"] == pytest.approx(0.75)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Looked at the right object, named it wrong (1)" in html
    assert "Looked at the wrong thing (1)" in html
    assert html.count("<img") == 3 * 5
    assert "http://" not in html and "https://" not in html


def test_top5_counts_only_labels_outside_the_top5(
    red_green: LoadedModel, known: Dataset, tmp_path: Path
) -> None:
    # With two classes every label is in the top 5: no failures.
    result = diagnose_failures(red_green, known, tmp_path / "run", top5=True, progress=False)
    assert result.summary[0]["misclassified"] == 0


def test_resume_skips_done_images_and_refuses_to_overwrite(
    red_green: LoadedModel, known: Dataset, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    diagnose_failures(red_green, known, out, limit=2, batch_size=1, progress=False)
    assert len(read_rows(out)) == 2
    with pytest.raises(GradCAMError, match="--resume"):
        diagnose_failures(red_green, known, out, progress=False)
    result = diagnose_failures(red_green, known, out, resume=True, batch_size=1, progress=False)
    assert len(result.rows) == len(known.samples)
    assert result.summary[0]["misclassified"] == 3


def test_bad_datasets_are_refused(red_green: LoadedModel, known: Dataset, tmp_path: Path) -> None:
    with pytest.raises(GradCAMError, match="no images"):
        diagnose_failures(red_green, Dataset("empty", (), []), tmp_path / "a")
    unlabeled = Dataset("unlabeled", (), [Sample(s.path) for s in known.samples])
    with pytest.raises(GradCAMError, match="no class labels"):
        diagnose_failures(red_green, unlabeled, tmp_path / "b")
    three = Dataset("three", ("a", "b", "c"), known.samples)
    with pytest.raises(GradCAMError, match="classes"):
        diagnose_failures(red_green, three, tmp_path / "c")
    with pytest.raises(GradCAMError, match="nope"):
        diagnose_failures(red_green, known, tmp_path / "d", layer="nope")


def test_real_photos_the_rocket_is_misread(lite0: LoadedModel, tmp_path: Path) -> None:
    photos = read_photos(annotated=True)
    result = diagnose_failures(lite0, photos, tmp_path / "photos", progress=False)
    failed = [r for r in result.rows if r["misclassified"]]
    assert [Path(r["image"]).name for r in failed] == ["rocket.jpg"]
    rocket = failed[0]
    assert rocket["true_name"] == "missile" and rocket["predicted_name"] == "drilling platform"
    assert rocket["kind"] in ("right-object", "wrong-object")
    assert 0.0 <= rocket["gradcam_predicted_mass"] <= 1.0


def test_cli_reports_counts_and_exits_2_on_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(["diagnose", "failures", "synthetic", "--synthetic-images", "8", "--out", str(out)])
    assert code == 0
    assert "of 8 images misclassified" in capsys.readouterr().out
    assert (out / "report.html").is_file()
    assert main(["diagnose", "failures", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["diagnose", "failures", str(empty), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "no images" in err and "Traceback" not in err


def test_cli_on_coco_data_with_a_bad_file_and_a_report_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two stars labeled "circle": two failures of the shapes CNN, of which the report shows one.
    drawn, labels = ["star", "star", "circle"], ["circle"] * 3
    coco = write_shapes_coco(tmp_path, drawn, labels, corner=False)
    out = tmp_path / "out"
    args = ["diagnose", "failures", str(tmp_path / "images"), "--annotations", str(coco)]
    code = main([*args, "--model", "shapes", "--report-limit", "1", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 1 and "broken.png: cannot be read" in err
    assert "2 of 3 images misclassified: 2 looked at the right object" in printed
    html = (out / "report.html").read_text()
    assert "The first 1 are shown; all 2 are in the rows" in html
    assert html.count("<img") == 5


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tolerance": -5.0}, "tolerance must be a number at least 0 pixels, got -5.0"),
        ({"tolerance": float("nan")}, "tolerance must be a number at least 0 pixels, got nan"),
        ({"report_limit": -5}, "report_limit must be an integer at least 0, got -5"),
    ],
)
def test_meaningless_settings_are_refused_before_any_work(
    options: dict[str, float], match: str, red_green: LoadedModel, known: Dataset, tmp_path: Path
) -> None:
    """Issue 30 item 17: each ran the whole dataset (a NaN tolerance pointed nowhere)."""
    with pytest.raises(GradCAMError, match=match):
        diagnose_failures(red_green, known, tmp_path / "out", progress=False, **options)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags", [["--tolerance", "nan"], ["--report-limit", "-5"]])
def test_cli_refuses_meaningless_settings(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "out")]
    assert main(["diagnose", "failures", "photos", "--model", "shapes", *flags, *out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be" in err and "Traceback" not in err


@pytest.mark.parametrize("data", ["photos", "synthetic"])
def test_out_under_a_file_is_one_line(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 30 item 12: with synthetic data the benchmark was written under --out first."""
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    args = ["diagnose", "failures", data, "--synthetic-images", "2", "--model", "shapes"]
    assert main([*args, "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "is a file, or lies under one" in err and "Traceback" not in err


def test_true_object_outside_the_image_is_an_error_row(
    red_green: LoadedModel, tmp_path: Path
) -> None:
    """Issue 30 item 5: a box wholly outside became most of the image (a negative slice end)."""
    green = _canvas()
    green[:, :] = (0, 255, 0)
    outside = Annotation(RED, (-50, -50, -41, -41))
    sample = Sample(_write(tmp_path, "g.png", green), (RED,), (outside,))
    dataset = Dataset("out", ("red", "green"), [sample])
    result = diagnose_failures(red_green, dataset, tmp_path / "o", progress=False)
    (error,) = [row["error"] for row in result.failed]
    assert error.count("g.png") == 1
    assert "the true object (red): box (-50, -50, -41, -41) lies wholly outside the 32x32" in error


def test_protocol_refuses_its_own_settings() -> None:
    with pytest.raises(GradCAMError, match="tolerance must be a number at least 0 pixels"):
        Failures(tolerance=float("inf"))
    with pytest.raises(GradCAMError, match="panel_height must be an integer between 1 and 4096"):
        Failures(panel_height=0)


def test_worker_processes_give_the_same_rows(tmp_path: Path) -> None:
    """``--workers``: the same rows from two local processes as from this one."""
    from gradcam.evaluate.datasets import read_synthetic
    from gradcam.models import load_model

    shapes = load_model("shapes")
    data = read_synthetic(tmp_path / "data", 6)
    one = diagnose_failures(shapes, data, tmp_path / "one", batch_size=2, progress=False)
    two = diagnose_failures(shapes, data, tmp_path / "two", batch_size=2, workers=2, progress=False)
    assert two.rows == one.rows and two.summary == one.summary
    with pytest.raises(GradCAMError, match="workers must be at least 1"):
        diagnose_failures(shapes, data, tmp_path / "none", workers=0, progress=False)
