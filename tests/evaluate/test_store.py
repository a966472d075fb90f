"""The run folder: Parquet rows and npz maps written batch by batch, read back, resumed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradcam.errors import GradCAMError
from gradcam.evaluate.store import ResultStore, differences, make_folder, read_maps, read_rows

RUN = {"protocol": "localization", "method": "gradcam", "dataset": "d", "model": "m"}


def _row(index: int, error: str | None = None) -> dict[str, object]:
    row: dict[str, object] = {"index": index, "image": f"{index}.png", "error": error}
    if error is None:
        row.update(classes=(3, 1), boxes=[[0, 0, 4, 5]], loc_top1=True, gradcam={"auc": 0.5})
    return row


def test_rows_and_maps_round_trip(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, RUN, resume=False)
    first = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    # The first part has no error (a null column), the second has one and lacks other keys.
    store.write([_row(1), _row(0)], [{"gradcam": first}, {"gradcam": first + 1}])
    store.write([_row(2, "2.png: no such file")], [{}])
    rows = read_rows(tmp_path)
    assert [r["index"] for r in rows] == [0, 1, 2]  # dataset order, whatever the write order
    assert rows[0]["classes"] == [3, 1] and rows[0]["gradcam"] == {"auc": 0.5}
    assert rows[0]["error"] is None and rows[2]["error"] == "2.png: no such file"
    assert rows[2]["classes"] is None
    np.testing.assert_array_equal(read_maps(tmp_path, 1)["gradcam"], first)
    assert read_maps(tmp_path, 2) == {}
    store.finish([{"method": "gradcam"}])
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "run.json").is_file()
    assert not list(tmp_path.rglob("*.tmp"))


def test_finished_work_is_never_overwritten(tmp_path: Path) -> None:
    ResultStore(tmp_path, RUN, resume=False).write([_row(0)], [{}])
    with pytest.raises(GradCAMError, match="already holds results of a run: pass --resume"):
        ResultStore(tmp_path, RUN, resume=False)
    with pytest.raises(GradCAMError, match=r'other settings \(method: "gradcam" -> "cam"\)'):
        ResultStore(tmp_path, {**RUN, "method": "cam"}, resume=True)
    resumed = ResultStore(tmp_path, RUN, resume=True)
    assert resumed.done == {0}
    resumed.write([_row(1)], [{}])
    assert sorted(p.name for p in (tmp_path / "rows").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]


def test_a_stray_shard_without_rows_is_not_a_finished_batch(tmp_path: Path) -> None:
    """A run killed between the shard and the rows part: the batch counts as not done."""
    store = ResultStore(tmp_path, RUN, resume=False)
    store.write([_row(0)], [{"gradcam": np.zeros((1, 1), np.float32)}])
    (tmp_path / "maps" / "part-00001.npz").write_bytes(b"half written")
    resumed = ResultStore(tmp_path, RUN, resume=True)
    assert resumed.done == {0}
    resumed.write([_row(1)], [{"gradcam": np.ones((1, 1), np.float32)}])
    assert read_maps(tmp_path, 1)["gradcam"][0, 0] == 1.0


def test_settings_that_read_back_as_lists_resume() -> None:
    """run.json reads tuples back as lists: the comparison must not see a difference."""
    run = {**RUN, "variants": ("gradcam", "no-relu"), "options": {"cam": {"size": (2, 3)}}}
    stored = {**RUN, "variants": ["gradcam", "no-relu"], "options": {"cam": {"size": [2, 3]}}}
    assert differences(stored, run) == []


def test_differences_name_the_setting_and_both_values() -> None:
    before = {**RUN, "dataset": {"name": "d", "seed": 0}, "weights_sha256": "a" * 64}
    after = {**RUN, "dataset": {"name": "d", "seed": 1}, "weights_sha256": "b" * 64, "x": 1}
    assert differences(before, after) == [
        "dataset.seed: 0 -> 1",
        f'weights_sha256: "{"a" * 36}... -> "{"b" * 36}...',
        "x: null -> 1",
    ]


def test_a_tuple_setting_resumes(tmp_path: Path) -> None:
    run = {**RUN, "variants": ("gradcam", "no-relu")}
    ResultStore(tmp_path, run, resume=False).write([_row(0)], [{}])
    assert ResultStore(tmp_path, run, resume=True).done == {0}


def test_an_output_folder_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("not a folder")
    for folder in (file, file / "below"):
        with pytest.raises(GradCAMError, match="is a file, or lies under one"):
            ResultStore(folder, RUN, resume=False)
    assert make_folder(tmp_path / "a" / "b").is_dir()
