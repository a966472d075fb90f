"""``gradcam explain`` (and ``caption``/``vqa``) refusing bad output folders and options in
one line, before any work (issue 30, items 12 and 17)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from gradcam.cli import main


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "dot.png"
    Image.new("RGB", (32, 32), "white").save(path)
    return path


def _bad_out(tmp_path: Path, why: str) -> Path:
    afile = tmp_path / "afile"
    afile.write_text("x")
    if why == "a file":
        return afile
    if why == "under a file":
        return afile / "sub"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    return readonly / "out"


@pytest.mark.parametrize("why", ["a file", "under a file", "read-only"])
@pytest.mark.parametrize("command", ["explain", "explain-detection", "caption", "vqa"])
def test_bad_out_is_one_line_before_any_work(
    command: str, why: str, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {
        "explain": ["--model", "no-such-model"],  # refused only if the folder check came later
        "explain-detection": ["--task", "detection", "--model", "no-such-model"],
        "caption": ["--weights", str(tmp_path / "missing.pt")],
        "vqa": ["--question", "what?", "--weights", str(tmp_path / "missing.pt")],
    }[command]
    out = _bad_out(tmp_path, why)
    code = main([command.split("-")[0], str(image), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert f"output folder {out}" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("flag", ["--window", "--stride"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_zero_or_negative_occlusion_flags_are_refused(
    flag: str, value: str, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["explain", str(image), "--model", "shapes", "--method", "occlusion", flag, value]
    code = main([*args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{flag[2:]} must be a positive int" in err and "Traceback" not in err


def test_a_flag_no_chosen_method_takes_is_refused(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["explain", str(image), "--window", "9", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--window is an option of occlusion" in capsys.readouterr().err
