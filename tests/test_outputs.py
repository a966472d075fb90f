"""gradcam.outputs: every output path checked once, before work; files written atomically."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gradcam.errors import GradCAMError
from gradcam.outputs import output_file, output_folder, spreadsheet_safe, write_atomic


def test_output_folder_made_with_parents(tmp_path: Path) -> None:
    assert output_folder(tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize("name", ["file.txt", "file.txt/under"])
def test_output_folder_refuses_a_file_or_a_path_under_one(tmp_path: Path, name: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(GradCAMError, match="is a file, or lies under one"):
        output_folder(tmp_path / name)


def test_output_folder_on_a_read_only_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(GradCAMError, match=r"cannot create output folder .*: Read-only file"):
        output_folder(tmp_path / "new")


def test_output_file_refuses_an_input_under_another_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "study.db").write_bytes(b"data")
    (tmp_path / "link.db").symlink_to(tmp_path / "study.db")
    monkeypatch.chdir(tmp_path)
    for spelling in ["study.db", "./study.db", str(tmp_path / "study.db"), "link.db"]:
        with pytest.raises(GradCAMError, match="is an input of this command"):
            output_file(spelling, inputs=["study.db"])
    assert (tmp_path / "study.db").read_bytes() == b"data"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("folder", "is a folder"),
        ("missing/out.csv", r"its folder .*missing does not exist"),
        ("file.txt/out.csv", "file.txt is a file"),
    ],
)
def test_output_file_refusals(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(GradCAMError, match=message):
        output_file(tmp_path / name)


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    target.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_write_atomic_replaces_whole(tmp_path: Path) -> None:
    target = write_atomic(tmp_path / "t.csv", lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_spreadsheet_formulas_are_quoted(start: str) -> None:
    # OWASP's "CSV Injection": a leading single quote makes any of these plain text.
    cell = f'{start}HYPERLINK("http://evil","x")'
    assert spreadsheet_safe(cell) == "'" + cell


def test_spreadsheet_plain_cells_are_kept() -> None:
    kept = ["cat", "", "1", "-1", "+2", "-0.5", 3, -2, None, "a=b", "'=x"]
    assert [spreadsheet_safe(c) for c in kept] == kept
    assert spreadsheet_safe("-1+1") == "'-1+1"  # arithmetic is a formula, not a number


def test_write_atomic_gives_the_mode_a_plain_write_would(tmp_path: Path) -> None:
    fresh = write_atomic(tmp_path / "new.csv", lambda tmp: tmp.write_text("x"))
    plain = tmp_path / "plain.csv"
    plain.write_text("x")
    assert fresh.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    plain.chmod(0o640)
    assert write_atomic(plain, lambda tmp: tmp.write_text("y")).stat().st_mode & 0o777 == 0o640


def test_a_read_only_file_system_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gradcam.outputs

    monkeypatch.setattr(gradcam.outputs, "_read_only", lambda folder: True)
    with pytest.raises(GradCAMError, match="read-only file system"):
        output_file(tmp_path / "a.csv")
    with pytest.raises(GradCAMError, match="read-only file system"):
        output_folder(tmp_path)
