"""Results on disk as they come: Parquet parts of per-image rows and ``.npz`` shards of maps.

A run folder holds::

    run.json                  the manifest: what was run (protocol settings, dataset, model)
    rows/part-00000.parquet   one row per image, a part per finished batch
    maps/part-00000.npz       the batch's maps at layer resolution, keys "<index>/<name>"
    summary.json              the report table, written when the run ends

A batch is finished when its Parquet part exists: the shard is written first and each file
appears under its final name by an atomic rename, so a run killed at any moment leaves only
finished batches (and at most one stray shard, overwritten on resume). Resuming skips the
images whose rows are on disk, and is refused when the manifest differs from the new run's: the
message names each setting that differs (``dataset.seed: 0 -> 1``), so two models' or two
settings' rows never mix in one folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradcam.errors import GradCAMError
from gradcam.outputs import output_folder as make_folder

__all__ = ["ResultStore", "differences", "make_folder", "plain", "read_maps", "read_rows"]

_PART = re.compile(r"part-(\d+)\.parquet$")


def plain(value: Any) -> Any:
    """Tuples to lists and numpy scalars to Python ones, recursively, for Arrow."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON: tuples become lists, keys become strings."""
    return json.loads(json.dumps(plain(value)))


def differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Each setting that differs between two manifests, as ``key: before -> after``.

    Both are compared as they read back from JSON, so a tuple equals the list it is stored as;
    nested settings are named by their dotted path.

    Examples:
        >>> differences({"methods": ("gradcam",), "dataset": {"seed": 0}},
        ...             {"methods": ["gradcam"], "dataset": {"seed": 1}})
        ['dataset.seed: 0 -> 1']
    """
    before, after = _as_json(before), _as_json(after)
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in before or key not in after:
                found.append(f"{name}: {_short(before.get(key))} -> {_short(after.get(key))}")
            else:
                found += differences(before[key], after[key], name)
        return found
    if before != after:
        return [f"{prefix or 'run'}: {_short(before)} -> {_short(after)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("part-*.parquet") if _PART.search(p.name))


def read_rows(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All rows of a run folder (or of its ``rows`` folder), in dataset order.

    Examples:
        >>> from gradcam.evaluate import Localization, read_synthetic, run
        >>> _ = run(Localization(), shapes, read_synthetic("bench", 2), out="run", progress=False)
        >>> rows = read_rows("run")
        >>> [row["index"] for row in rows], rows[0]["error"]
        ([0, 1], None)
    """
    root = Path(folder)
    parts = _parts(root / "rows" if (root / "rows").is_dir() else root)
    if not parts:
        return []
    import pyarrow as pa  # here: the commands' parsers import this module, not Parquet
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in parts]
    # A part whose error column holds only None reads back as a null column: promote it.
    table = pa.concat_tables(tables, promote_options="permissive")
    rows: list[dict[str, Any]] = table.to_pylist()
    rows.sort(key=lambda r: int(r["index"]))
    return rows


def read_maps(folder: str | os.PathLike[str], index: int) -> dict[str, np.ndarray]:
    """The maps stored for the image at position ``index`` of the dataset, by name."""
    root = Path(folder)
    maps_dir = root / "maps" if (root / "maps").is_dir() else root
    prefix = f"{index}/"
    for shard in sorted(maps_dir.glob("part-*.npz")):
        with np.load(shard) as data:
            found = {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}
        if found:
            return found
    return {}


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class ResultStore:
    """A run folder being written; see the module docstring for its layout.

    Args:
        folder: where the run's files go.
        run: what is being run, as plain values; a resumed run must match it.
        resume: continue a run in ``folder``; without it, a folder that already holds rows is
            refused (never overwrite finished work).
        where: where the run's inputs lie (absolute paths), written to ``run.json`` under
            ``"where"`` for people to read but not compared on resume: a run folder copied
            elsewhere, with its data, resumes.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        run: dict[str, Any],
        *,
        resume: bool,
        where: dict[str, Any] | None = None,
    ):
        self.folder = Path(folder)
        self.rows_dir = self.folder / "rows"
        self.maps_dir = self.folder / "maps"
        parts = _parts(self.rows_dir) if self.rows_dir.is_dir() else []
        manifest = self.folder / "run.json"
        if parts and not resume:
            raise GradCAMError(
                f"{self.folder} already holds results of a run: pass --resume (resume=True) to "
                "continue it, or choose another output folder"
            )
        if parts and manifest.is_file():
            try:
                before = json.loads(manifest.read_text())
            except (OSError, ValueError) as exc:
                raise GradCAMError(f"{manifest}: cannot be read ({exc})") from None
            if isinstance(before, dict):
                before.pop("where", None)
            changed = differences(before, run)
            if changed:
                raise GradCAMError(
                    f"{self.folder} holds a run with other settings ({'; '.join(changed)}): "
                    "resume with the same settings, or choose another output folder"
                )
        make_folder(self.folder)
        make_folder(self.rows_dir)
        make_folder(self.maps_dir)
        recorded = {**run, "where": where} if where else run
        manifest.write_text(json.dumps(plain(recorded), indent=2) + "\n")
        numbers = [int(m.group(1)) for p in parts if (m := _PART.search(p.name))]
        self._next = max(numbers, default=-1) + 1
        self.done: set[int] = {int(r["index"]) for r in read_rows(self.rows_dir)}

    def write(self, rows: Sequence[dict[str, Any]], maps: Sequence[dict[str, np.ndarray]]) -> None:
        """Write one finished batch: its maps shard, then its rows part (which commits it)."""
        if not rows:
            return
        name = f"part-{self._next:05d}"
        self._next += 1
        arrays = {
            f"{row['index']}/{key}": value
            for row, named in zip(rows, maps, strict=True)
            for key, value in named.items()
        }
        if arrays:

            def save(tmp: Path) -> None:
                with tmp.open("wb") as handle:
                    np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

            _write_atomic(self.maps_dir / f"{name}.npz", save)
        keys = list(dict.fromkeys(k for row in rows for k in row))
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({k: [plain(row.get(k)) for row in rows] for k in keys})
        _write_atomic(self.rows_dir / f"{name}.parquet", lambda tmp: pq.write_table(table, tmp))
        self.done.update(int(row["index"]) for row in rows)

    def rows(self) -> list[dict[str, Any]]:
        """Every row on disk, in dataset order."""
        return read_rows(self.rows_dir)

    def finish(self, summary: list[dict[str, Any]]) -> None:
        """Write the report table as ``summary.json``."""
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
