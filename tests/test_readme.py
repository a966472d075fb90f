"""The code blocks of README.md and docs/index.md run as written.

The ``python`` blocks run, each in a fresh namespace, in a temporary folder holding a copy of
the bundled photo as ``cat.jpg``. Every ``gradcam ...`` line of a shell block of the README and
of every docs page parses with the command line's own parser (usage synopses, with ``[...]``,
``{a,b}`` or ``a|b``, are not commands); every ``make TARGET`` names a target of the Makefile.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
from pathlib import Path

import pytest

from gradcam import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "index.md"]
PHOTO = ROOT / "src" / "gradcam" / "data" / "cat_and_coffee.jpg"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SHELL = {"sh", "bash", "shell", "console"}
#: Commands cheap enough to run, not just parse.
CHEAP = {"methods"}


def blocks(page: Path, languages: set[str]) -> list[str]:
    """The bodies of the fenced code blocks of ``page`` in one of ``languages``."""
    return [body for lang, body in FENCE.findall(page.read_text()) if lang in languages]


def shell_lines(page: Path) -> list[str]:
    """The commands of ``page``'s shell blocks: continuations joined, prompts and comments cut."""
    lines = []
    for body in blocks(page, SHELL):
        for line in re.sub(r"\s*\\\n\s*", " ", body).splitlines():
            command = re.split(r"\s#", line.strip().removeprefix("$ "))[0].strip()
            if command:
                lines.append(command)
    return lines


def _python_blocks() -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(ROOT)}#{i}", body)
        for page in PAGES
        for i, body in enumerate(blocks(page, {"python"}))
    ]


def _gradcam_lines() -> list[tuple[str, str]]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [
        (page.name, line)
        for page in pages
        for line in shell_lines(page)
        if line.startswith("gradcam ") and not re.search(r"[\[\]{}|]|\.\.\.", line)
    ]


def test_the_pages_have_code() -> None:
    assert len(_python_blocks()) >= len(PAGES)  # each page shows the Python API
    assert _gradcam_lines()  # and the docs show commands


@pytest.mark.parametrize(("where", "code"), _python_blocks(), ids=[w for w, _ in _python_blocks()])
def test_python_block_runs(
    where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(PHOTO, tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__readme__"})
    written = [p.name for p in tmp_path.iterdir() if p.name != "cat.jpg"]
    for name in re.findall(r"\.save\(\"([^\"]+)\"\)", code):
        assert name in written


def _parser() -> argparse.ArgumentParser:
    # The command line's own parser: a flag a page names but the CLI lacks fails here.
    build = getattr(cli, "build_parser", None) or cli._build_parser
    parser: argparse.ArgumentParser = build()
    return parser


@pytest.mark.parametrize(
    ("where", "line"), _gradcam_lines(), ids=[line for _, line in _gradcam_lines()]
)
def test_gradcam_line_parses(where: str, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = shlex.split(line)[1:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: {line!r} does not parse with gradcam's command line")
    assert args.command == argv[0]
    if argv[0] in CHEAP:  # runs in well under a second: run it as written
        assert cli.main(argv) == 0
        assert capsys.readouterr().out


def test_make_lines_name_targets() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = [
        word
        for page in PAGES
        for line in shell_lines(page)
        if line.startswith("make ")
        for word in line.split()[1:]
    ]
    assert named
    assert set(named) <= targets, set(named) - targets


def test_shell_lines_read_continuations_and_comments(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\n$ gradcam explain a.jpg \\\n    --top-k 2   # two maps\n```\n")
    assert shell_lines(page) == ["gradcam explain a.jpg --top-k 2"]
