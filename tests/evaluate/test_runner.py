"""The runner: the same rows in one process, in local processes and on Ray; resume after a
kill; a failing image isolated from its batch. All on the synthetic shapes benchmark."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam.errors import GradCAMError
from gradcam.evaluate import (
    Faithfulness,
    Localization,
    ModelSpec,
    Pointing,
    read_maps,
    read_rows,
    run,
)
from gradcam.evaluate.base import Scored
from gradcam.evaluate.datasets import Dataset, Sample, read_synthetic
from gradcam.evaluate.runner import manifest, score_chunk

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


def test_limit_must_be_positive(synthetic: Dataset) -> None:
    for limit in (0, -3):
        with pytest.raises(GradCAMError, match=f"limit must be at least 1 image, got {limit}"):
            run(Pointing(), SHAPES, synthetic, limit=limit)


def test_a_model_loaded_in_python_is_told_apart_by_its_weights(
    synthetic: Dataset, tmp_path: Path
) -> None:
    """Without a file to name, the manifest hashes the model's parameters."""
    loaded = SHAPES.load()
    run(Localization(), loaded, synthetic, out=tmp_path, limit=2, progress=False)
    recorded = json.loads((tmp_path / "run.json").read_text())
    assert recorded.pop("where") == {"dataset": {"root": synthetic.identity["root"]}}
    assert recorded["model"] == "shapes" and len(recorded["state_sha256"]) == 64
    assert recorded == manifest(Localization(), loaded, synthetic)  # the same model: the same
    other = SHAPES.load()
    with torch.no_grad():
        next(other.module.parameters()).add_(1.0)
    with pytest.raises(GradCAMError, match="other settings \\(state_sha256: "):
        run(Localization(), other, synthetic, out=tmp_path, resume=True, progress=False)


def test_a_spec_reuses_its_loaded_model_and_never_ships_it(synthetic: Dataset) -> None:
    loaded = SHAPES.load()
    spec = ModelSpec("shapes", loaded=loaded)
    assert spec.load() is loaded and spec == SHAPES
    assert pickle.loads(pickle.dumps(spec)).loaded is None  # workers load their own


def test_progress_moves_within_images_in_workers(synthetic: Dataset) -> None:
    """Faithfulness in two workers, two images a batch: the parent hears of occlusion's
    windows as they run, in fractions of an image, and the counts add up to the images."""
    told: list[float] = []
    protocol = Faithfulness(methods=("gradcam",), window=16, stride=16, steps=2)
    run(protocol, SHAPES, synthetic, batch_size=2, workers=2, limit=4, progress=told.append)
    assert sum(told) == pytest.approx(4.0)
    assert any(0 < t < 1 for t in told), told  # heard of before a batch was done


def test_an_unreachable_ray_cluster_fails_within_the_timeout(synthetic: Dataset) -> None:
    message = r"cannot reach the Ray cluster at 127\.0\.0\.1:1 within 1 s"
    with pytest.raises(GradCAMError, match=message):
        run(Pointing(), SHAPES, synthetic, ray="127.0.0.1:1", ray_timeout=1.0, progress=False)
    with pytest.raises(GradCAMError, match="is not HOST:PORT"):
        run(Pointing(), SHAPES, synthetic, ray="head-without-port", ray_timeout=1.0)


def test_a_host_that_is_not_a_ray_head_is_given_up_on(tmp_path: Path) -> None:
    """A port that accepts connections but does not speak Ray: ray.init alone retries for
    minutes; the command gives up after --ray-timeout (the subprocess timeout catches a hang)."""
    pytest.importorskip("ray")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        proc = subprocess.run(
            [
                GRADCAM, "evaluate", "pointing", "--data", "synthetic", "--synthetic-images",
                "2", "--out", str(tmp_path), "--ray", f"127.0.0.1:{port}", "--ray-timeout", "3",
            ],
            capture_output=True,
            text=True,
            timeout=150,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"the Ray cluster at 127.0.0.1:{port} did not answer within 3 s" in proc.stderr


ORPHAN_SCRIPT = """
import sys
from gradcam.evaluate import Faithfulness, ModelSpec, run
from gradcam.evaluate.datasets import read_synthetic

if __name__ == "__main__":
    data = read_synthetic(sys.argv[1] + "/data", 40)
    run(Faithfulness(methods=("gradcam",), window=8, stride=4), ModelSpec("shapes"), data,
        out=sys.argv[1] + "/run", batch_size=1, workers=2, progress=False)
"""


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its reaper has not looked yet


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "evaluate.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    try:
        # Once a batch is on disk, the workers are scoring.
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("run/rows/*.parquet")) and time.monotonic() < deadline:
            assert parent.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)
        workers = _children(parent.pid)
        assert len(workers) >= 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers outlived their parent"


def test_model_spec_identity_of_weights_that_are_no_file(tmp_path: Path) -> None:
    """``random`` and torchvision weights names name no file: no hash, no 'cannot be read'."""
    assert ModelSpec("resnet18", "random").identity()["weights_sha256"] is None
    assert ModelSpec("resnet18", "IMAGENET1K_V1").identity()["weights_sha256"] is None
    file = tmp_path / "w.pt"
    file.write_bytes(b"x")
    digest = ModelSpec("resnet18", str(file)).identity()["weights_sha256"]
    assert digest == hashlib.sha256(b"x").hexdigest()


def test_a_run_folder_copied_with_its_data_resumes_there(tmp_path: Path) -> None:
    """The dataset's absolute root is where it lies, not what it is (issue 30, item 18): a
    copied run resumes on the copied data; data that changed (one image's bytes) is refused."""
    import shutil

    first = read_synthetic(tmp_path / "a" / "data", 3)
    run(Localization(), SHAPES, first, out=tmp_path / "a" / "run", limit=2, progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    copied = read_synthetic(tmp_path / "b" / "data", 3)
    result = run(Localization(), SHAPES, copied, out=tmp_path / "b" / "run", resume=True,
                 progress=False)  # fmt: skip
    assert [r["index"] for r in read_rows(tmp_path / "b" / "run")] == [0, 1, 2]
    assert result.rows
    recorded = json.loads((tmp_path / "b" / "run" / "run.json").read_text())
    assert recorded["where"]["dataset"]["root"] == str((tmp_path / "b" / "data").resolve())
    image = copied.samples[2].path
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(GradCAMError, match=r"other settings \(dataset\.samples_sha256: "):
        run(Localization(), SHAPES, copied, out=tmp_path / "b" / "run", resume=True,
            progress=False)  # fmt: skip


def _live_children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` and that are not zombies, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_while_workers_start_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: a worker still importing torch printed its
    own KeyboardInterrupt traceback (issue 30, item 15). Workers ignore it; the parent stops
    them and prints one line."""
    args = ["evaluate", "localization", "--data", "synthetic", "--synthetic-images", "16"]
    command = [GRADCAM, *args, "--workers", "2", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while len(_live_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = _live_children(proc.pid)
        time.sleep(0.5)  # the workers are importing torch
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "gradcam: interrupted"
    time.sleep(1)
    assert workers and not [pid for pid in workers if _running(pid)]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_huge_photo_is_decoded_under_the_cap_with_its_annotations_scaled(
    tmp_path: Path,
) -> None:
    """A 10 KB palette PNG of 3000 x 3000 was decoded at full size by every dataset command
    (issue 30, item 8): now under MAX_PIXELS, with its box and mask in the decoded pixels."""
    from PIL import Image

    from gradcam.evaluate.datasets import Annotation, Sample
    from gradcam.evaluate.runner import decode_sample
    from gradcam.images import MAX_PIXELS

    path = tmp_path / "huge.png"
    Image.new("P", (3000, 3000)).save(path)
    mask = np.zeros((3000, 3000), dtype=bool)
    mask[300:1500, 600:900] = True
    sample = Sample(
        path, (0,), (Annotation(0, box=(600, 300, 899, 1499), mask=mask),), size=(3000, 3000)
    )
    decoded, image = decode_sample(sample)
    assert image.size == (1500, 1500) and image.width * image.height <= MAX_PIXELS
    [annotation] = decoded.annotations
    assert annotation.box == (300, 150, 449, 749)
    assert annotation.mask is not None and annotation.mask.shape == (1500, 1500)
    assert annotation.mask[150:750, 300:450].all() and annotation.mask.sum() == 600 * 150
    assert decoded.size == (1500, 1500)
    small = Sample(path.with_name("small.png"), (0,), (Annotation(0, box=(1, 2, 3, 4)),), (8, 8))
    Image.new("RGB", (8, 8)).save(small.path)
    assert decode_sample(small)[0] is small
