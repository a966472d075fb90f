"""``gradcam evaluate`` run in this process: resumes of every protocol, the manifest, and one
line (exit 2) for every meaningless flag or unusable folder."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from gradcam.cli import main
from gradcam.evaluate import read_rows
from gradcam.synthetic.model import SHAPES_WEIGHTS

SYNTHETIC = ["--data", "synthetic", "--synthetic-images", "3"]
# Small settings per protocol: the point is the resume, not the numbers.
SMALL = {
    "localization": [],
    "pointing": [],
    "ablations": [],
    "faithfulness": ["--method", "gradcam", "--window", "64", "--stride", "64"],
    "sanity": ["--method", "gradcam", "--points", "2"],
}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --out, synthetic images are written under ./gradcam_eval: keep them here."""
    monkeypatch.chdir(tmp_path)


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the command, expect exit 2 and return its one-line error."""
    code = main(["evaluate", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) >= 1 and err[-1].startswith("gradcam: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("protocol", list(SMALL))
def test_every_protocol_resumes(
    protocol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two images, then the third with --resume: tuple settings read back from run.json as
    lists must not refuse the resume (they did for faithfulness, sanity and ablations)."""
    args = ["evaluate", protocol, *SYNTHETIC, *SMALL[protocol], "--out", str(tmp_path)]
    assert main([*args, "--limit", "2"]) == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith(protocol)]
    first = sorted((folder / "rows").iterdir())
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert [r["index"] for r in read_rows(folder)] == [0, 1, 2]
    parts = sorted((folder / "rows").iterdir())
    assert parts[: len(first)] == first and len(parts) == len(first) + 1  # only image 2 ran


def test_the_manifest_records_the_weights_and_refuses_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One worker used to record `weights: null`, so other weights resumed into the run."""
    weights = tmp_path / "shapes.pt"
    state = torch.load(SHAPES_WEIGHTS, weights_only=True)
    torch.save(state, weights)
    out = tmp_path / "out"
    args = ["evaluate", "localization", *SYNTHETIC, "--out", str(out), "--weights", str(weights)]
    assert main([*args, "--limit", "1"]) == 0
    manifest = json.loads((out / "localization-gradcam" / "run.json").read_text())
    assert manifest["model"] == "shapes" and manifest["weights"] == str(weights)
    assert manifest["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert manifest["method"] == "gradcam" and manifest["threshold"] == 0.15
    assert manifest["dataset"]["name"] == "synthetic-shapes-0-3"
    assert manifest["dataset"]["images"] == 3
    # The same file name, other weights: refused, naming the hash.
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, weights)
    capsys.readouterr()
    line = _error(capsys, *args[1:], "--resume")
    assert "holds a run with other settings (weights_sha256: " in line
    # Another setting: named with both values.
    torch.save(torch.load(SHAPES_WEIGHTS, weights_only=True), weights)
    line = _error(capsys, *args[1:], "--resume", "--threshold", "0.3")
    assert "(threshold: 0.15 -> 0.3)" in line


def _unlabeled(tmp_path: Path) -> str:
    folder = tmp_path / "holiday"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "red.png")
    return str(folder)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit", "-3"], "limit must be at least 1 image, got -3"),
        (["--limit", "0"], "limit must be at least 1 image, got 0"),
        (["--threshold", "-1"], "threshold must be a fraction of the map's maximum"),
        (["--threshold", "5"], "threshold must be a fraction .* got 5.0"),
        (["--threshold", "nan"], "threshold must be a fraction .* got nan"),
        (["--ray-timeout", "0"], "ray timeout must be a positive number of seconds"),
    ],
)
def test_meaningless_flags(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data", _unlabeled(tmp_path), "--model", "shapes"]
    line = _error(capsys, "faithfulness" if "--limit" in flags else "localization", *data, *flags)
    assert re.search(message, line), line


def test_pointing_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _error(capsys, "pointing", *SYNTHETIC, "--tolerance", "-5")
    assert "tolerance must be a number at least 0 pixels, got -5.0" in line
    line = _error(capsys, "pointing", *SYNTHETIC, "--recall-threshold", "nan")
    assert "recall_threshold must be a number at least 0" in line


def test_a_recall_threshold_above_every_map_is_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The threshold is on the raw map's scale (the model's): 7 may suit some model, so it is
    run, and the table and a warning say that it rejected every map."""
    code = main(["evaluate", "pointing", *SYNTHETIC, "--recall-threshold", "1e9"])
    captured = capsys.readouterr()
    assert code == 0
    assert "--recall-threshold 1000000000.0 is above every map's maximum" in captured.err
    assert "| 100.0 |" in captured.out


def test_localization_on_a_folder_without_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _error(capsys, "localization", "--data", _unlabeled(tmp_path), "--model", "shapes")
    assert "dataset 'holiday' has no labels: localization scores maps against" in line


def test_an_output_folder_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "results.txt"
    taken.write_text("my notes")
    line = _error(capsys, "localization", *SYNTHETIC, "--out", str(taken))
    assert line == f"gradcam: error: output folder {taken} is a file, or lies under one"
    assert taken.read_text() == "my notes"


def test_an_unknown_layer_in_workers_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker's LayerError comes back as itself, not as a broken pool blamed on memory."""
    line = _error(
        capsys, "localization", *SYNTHETIC, "--batch-size", "1", "--workers", "2",
        "--layer", "nope",
    )  # fmt: skip
    assert "nope" in line and "layer" in line and "worker process died" not in line


def test_an_unreachable_ray_cluster_is_an_error_in_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = _error(capsys, "localization", *SYNTHETIC, "--ray", "127.0.0.1:1", "--ray-timeout", "2")
    assert "cannot reach the Ray cluster at 127.0.0.1:1 within 2 s" in line
