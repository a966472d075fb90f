"""gradcam.explain_data: ``explain --data`` on the evaluate runner (batched, shards, resume)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gradcam
from gradcam.cli import main
from gradcam.errors import GradCAMError
from gradcam.evaluate import read_maps, read_rows, read_synthetic
from gradcam.explain_data import ExplainData, explain_dataset


@pytest.fixture(scope="module")
def shapes() -> gradcam.LoadedModel:
    return gradcam.load_model("shapes")


def test_rows_and_maps_equal_explaining_each_image_alone(
    shapes: gradcam.LoadedModel, tmp_path: Path
) -> None:
    data = read_synthetic(tmp_path / "bench", 5)
    result = explain_dataset(
        shapes, data, methods=["gradcam", "guided-backprop"], top_k=2, out=tmp_path / "run",
        batch_size=2,
    )  # fmt: skip
    assert [r["index"] for r in read_rows(tmp_path / "run")] == [0, 1, 2, 3, 4]
    cam = gradcam.GradCAM(shapes.module, shapes.default_layer)
    for row in result.rows:
        image = gradcam.load_image(data.samples[row["index"]].path)
        alone = cam(shapes.preprocess(image), gradcam.TopK(2))
        assert row["classes"] == alone.classes[0].tolist()
        assert row["names"] == [shapes.class_names[c] for c in row["classes"]]
        np.testing.assert_allclose(row["scores"], alone.scores[0].numpy(), rtol=1e-5)
        maps = read_maps(tmp_path / "run", row["index"])
        np.testing.assert_allclose(maps["gradcam"], alone.raw[0].numpy(), atol=1e-5)
        assert maps["guided-backprop"].shape == (2, 3, 128, 128)


def test_given_classes_are_explained_for_every_image(shapes: gradcam.LoadedModel) -> None:
    result = explain_dataset(shapes, read_synthetic("bench", 2), classes=[3, 1])
    assert [r["classes"] for r in result.rows] == [[3, 1], [3, 1]]


def test_settings_are_checked_before_any_image() -> None:
    with pytest.raises(GradCAMError, match="unknown method"):
        ExplainData(methods=("nope",))
    with pytest.raises(GradCAMError, match="top-k must be between 1 and 100"):
        ExplainData(top_k=0)
    with pytest.raises(GradCAMError, match="has no option 'window'"):
        ExplainData(options={"gradcam": {"window": 3}})


def test_the_command_resumes_and_refuses_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "run")
    args = ["explain", "--data", "synthetic", "--synthetic-images", "4", "--out", out]
    assert main([*args, "--limit", "2"]) == 0
    assert len(read_rows(out)) == 2
    assert main(args) == 2  # the folder holds rows: never overwritten without --resume
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert len(read_rows(out)) == 4
    assert main([*args, "--resume", "--top-k", "3"]) == 2
    assert "top_k" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain"], "give IMAGE files to explain, or a dataset with --data"),
        (["explain", "a.jpg", "--data", "synthetic"], "not both"),
        (["explain", "--data", "synthetic", "--figure"], "--figure apply to IMAGE files"),
        (["explain", "--data", "synthetic", "--method", "nope"], "unknown method 'nope'"),
    ],
)
def test_bad_invocations_are_one_line_before_work(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_bad_image_is_reported_and_the_rest_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    torch.manual_seed(0)
    from PIL import Image

    Image.fromarray(np.uint8(np.random.default_rng(0).integers(0, 255, (64, 64, 3)))).save(
        folder / "a.png"
    )
    (folder / "b.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    assert main(["explain", "--data", str(folder), "--model", "shapes", "--out", str(out)]) == 1
    rows = read_rows(out)
    assert [r["error"] is None for r in rows] == [True, False]
    assert "b.png" in capsys.readouterr().err
