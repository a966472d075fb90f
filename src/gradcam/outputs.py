"""The one home of how gradcam checks and writes what a command outputs.

Every command checks each output path once, before any work (no model pass, no file written,
no progress bar drawn), with :func:`output_folder` for a folder of results and
:func:`output_file` for a single file; both raise a one-line :class:`~gradcam.errors.GradCAMError`
naming the path and what is wrong with it. A file is then written through
:func:`write_atomic`: into a temporary file beside it, renamed over the target only once it is
complete, so a crash or Ctrl-C never leaves half a file and a reader never sees one.

Examples:
    >>> folder = output_folder("results/run1")
    >>> path = output_file(folder / "table.csv", inputs=["study.db"])
    >>> write_atomic(path, lambda tmp: tmp.write_text("a,b\\n")).read_text()
    'a,b\\n'
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gradcam.errors import GradCAMError

__all__ = ["output_file", "output_folder", "spreadsheet_safe", "write_atomic"]

PathLike = str | os.PathLike[str]


def output_folder(folder: PathLike, *, create: bool = True) -> Path:
    """Create ``folder`` (and its parents) for results, or say in one line why it cannot be.

    With ``create=False`` nothing is made: the folder is only checked to be creatable (its
    nearest existing ancestor a writable folder), so a command can check its output before
    checks that may still refuse the call leave an empty folder behind.

    Raises:
        GradCAMError: ``folder`` is a file, lies under a file, or cannot be written (a
            read-only file system, no permission).

    Examples:
        >>> output_folder("out/a").is_dir()
        True
        >>> _ = Path("f.txt").write_text("x")
        >>> output_folder("f.txt/sub")
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: output folder f.txt/sub is a file, or lies under one
        >>> output_folder("later/b", create=False).exists()
        False
    """
    path = Path(folder)
    if not create:
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            raise GradCAMError(f"output folder {path} is a file, or lies under one")
        if _read_only(existing):
            raise GradCAMError(f"cannot write to output folder {path}: read-only file system")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise GradCAMError(f"cannot write to output folder {path}: permission denied")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise GradCAMError(f"output folder {path} is a file, or lies under one") from None
    except OSError as exc:
        raise GradCAMError(f"cannot create output folder {path}: {exc.strerror}") from None
    if _read_only(path):
        raise GradCAMError(f"cannot write to output folder {path}: read-only file system")
    if not os.access(path, os.W_OK | os.X_OK):
        raise GradCAMError(f"cannot write to output folder {path}: permission denied")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def output_file(path: PathLike, *, inputs: Iterable[PathLike] = ()) -> Path:
    """Check that ``path`` can be written as one output file, before any work.

    The file's folder must exist and be writable (it is not created: a typo in a folder name
    is an error, not a new tree); ``path`` must not be a folder, nor the same file as any of
    the command's ``inputs`` (``study report S.db --csv S.db`` would replace the study).

    Raises:
        GradCAMError: naming the path and what is wrong with it.

    Examples:
        >>> _ = Path("study.db").write_text("x")
        >>> output_file("study.db", inputs=["./study.db"])
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: output file study.db is an input of this command: \
choose another name
        >>> output_file("missing/answers.csv")
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: cannot write output file missing/answers.csv: its \
folder missing does not exist
    """
    target = Path(path)
    for source in inputs:
        if _same_file(target, Path(source)):
            raise GradCAMError(
                f"output file {target} is an input of this command: choose another name"
            )
    if target.is_dir():
        raise GradCAMError(f"output file {target} is a folder")
    parent = target.parent
    if not parent.exists():
        raise GradCAMError(f"cannot write output file {target}: its folder {parent} does not exist")
    if not parent.is_dir():
        raise GradCAMError(f"cannot write output file {target}: {parent} is a file")
    if _read_only(parent):
        raise GradCAMError(f"cannot write output file {target}: read-only file system")
    if not os.access(parent, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        raise GradCAMError(f"cannot write output file {target}: permission denied")
    return target


def _mode_of(target: Path) -> int:
    """The mode the file would have if written in place: its own if it exists, else the
    umask's (read by setting it and putting it back, as no other call tells it)."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def write_atomic(path: PathLike, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` by ``write(tmp)`` into a temporary file in the same folder, then rename.

    The rename is atomic on one file system: readers see the old file or the whole new one,
    and a failure (an exception, Ctrl-C) removes the temporary file and leaves the old one.

    Raises:
        GradCAMError: the folder cannot be written (read-only file system, no space).

    Examples:
        >>> write_atomic("table.csv", lambda tmp: tmp.write_text("x\\n")).read_text()
        'x\\n'
    """
    target = Path(path)
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise GradCAMError(f"cannot write output file {target}: {exc.strerror}") from None
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        # mkstemp makes the file private (0600): give it the mode a plain open would.
        os.chmod(tmp, _mode_of(target))
        os.replace(tmp, target)
    except OSError as exc:
        raise GradCAMError(f"cannot write output file {target}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


# What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def spreadsheet_safe(cell: object) -> object:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula.

    A text cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
    leading single quote, as OWASP's "CSV Injection" page recommends: a class name such as
    ``=HYPERLINK(...)`` would otherwise run when the file is opened. A plain number written
    as text (``-1``, ``+2.5``) is left alone, since a spreadsheet reads it as that number;
    anything that is not text (``int``, ``None``) is returned as it is. The ``csv`` module
    does the quoting of commas, quotes and line breaks.

    Examples:
        >>> [spreadsheet_safe(c) for c in ["=1+1", "@SUM(A1)", "-1", -2, "cat", "-cmd|x"]]
        ["'=1+1", "'@SUM(A1)", '-1', -2, 'cat', "'-cmd|x"]
    """
    if isinstance(cell, str) and cell.startswith(_FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell
