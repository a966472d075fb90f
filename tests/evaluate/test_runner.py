"""The runner: the same rows in one process, in local processes and on Ray; resume after a
kill; a failing image isolated from its batch. All on the synthetic shapes benchmark."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gradcam.errors import GradCAMError
from gradcam.evaluate import Localization, ModelSpec, Pointing, read_maps, read_rows, run
from gradcam.evaluate.datasets import Dataset, Sample, read_synthetic
from gradcam.evaluate.protocols import Scored
from gradcam.evaluate.runner import score_chunk

GRADCAM = str(Path(sys.executable).with_name("gradcam"))
SHAPES = ModelSpec("shapes")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Ten generated images, and a missing one in the middle."""
    data = read_synthetic(tmp_path_factory.mktemp("synthetic"), 10)
    samples = list(data.samples)
    samples.insert(4, Sample(Path("missing.png"), (0,)))
    return dataclasses.replace(data, samples=samples)


@pytest.fixture(scope="module")
def single(synthetic: Dataset) -> Any:
    return run(Localization(), SHAPES.load(), synthetic, batch_size=3, progress=False)


def test_synthetic_localization_in_one_process(single: Any) -> None:
    assert [r["index"] for r in single.rows] == list(range(11))
    assert "missing.png" in single.rows[4]["error"]
    (summary,) = single.summary
    assert summary["images"] == 10
    # The shipped model classifies these shapes, and its maps find half of them: a box around
    # the whole image (objects span 20-55% of its side) never reaches IoU 0.5.
    assert summary["cls_top1_error"] <= 10.0 and summary["loc_top1_error"] <= 70.0


def test_local_processes_give_the_same_rows(synthetic: Dataset, single: Any) -> None:
    result = run(Localization(), SHAPES, synthetic, batch_size=3, workers=2, progress=False)
    assert result.rows == single.rows
    assert result.summary == single.summary


def test_ray_gives_the_same_rows(synthetic: Dataset, single: Any, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    result = run(
        Localization(), SHAPES, synthetic, batch_size=3, workers=2, ray=True, out=tmp_path,
        progress=False,
    )  # fmt: skip
    assert result.rows == single.rows
    assert result.summary == single.summary
    assert read_maps(tmp_path, 0)["gradcam"].shape == (5, 16, 16)


def test_a_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    """Kill the command (SIGKILL) once some batches are on disk, then resume it."""
    args = ["evaluate", "localization", "--data", "synthetic", "--synthetic-images", "120"]
    whole = subprocess.run(
        [GRADCAM, *args, "--batch-size", "2", "--out", str(tmp_path / "whole")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    rows_dir = out / "localization-gradcam" / "rows"
    # One image per batch, 120 batches: about a second of scoring to be killed in.
    command = [GRADCAM, *args, "--batch-size", "1", "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(rows_dir.glob("*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = len(read_rows(rows_dir))
    assert 3 <= finished < 120, "the run was not killed midway"
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(rows_dir.parent)
    assert [r["index"] for r in rows] == list(range(120))  # nothing redone, nothing missing
    expected = read_rows(tmp_path / "whole" / "localization-gradcam")
    # Each run generated its images under its own --out: all but the paths must agree.
    assert [{**r, "image": None} for r in rows] == [{**r, "image": None} for r in expected]
    assert (rows_dir.parent / "summary.json").read_text() == (
        tmp_path / "whole" / "localization-gradcam" / "summary.json"
    ).read_text()


def test_a_failing_image_is_isolated_from_its_batch(tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b", "c"):
        paths.append(tmp_path / f"{name}.png")
        Image.new("RGB", (8, 8)).save(paths[-1])

    def scorer(samples: Sequence[Sample], images: Sequence[Image.Image]) -> list[Scored]:
        if any(s.path.stem == "b" for s in samples):
            raise GradCAMError("the model rejects b")
        return [({"size": i.width}, {"map": np.zeros(2)}) for i in images]

    rows, maps = score_chunk(scorer, [(k, Sample(p)) for k, p in enumerate(paths)])
    assert [r["error"] for r in rows] == [None, f"{paths[1]}: the model rejects b", None]
    assert rows[0]["size"] == 8 and "size" not in rows[1]
    assert [list(m) for m in maps] == [["map"], [], ["map"]]


def test_bad_settings(synthetic: Dataset) -> None:
    with pytest.raises(GradCAMError, match="workers must be at least 1"):
        run(Pointing(), SHAPES, synthetic, workers=0)
    with pytest.raises(GradCAMError, match="batch size must be at least 1"):
        run(Pointing(), SHAPES, synthetic, batch_size=0)
