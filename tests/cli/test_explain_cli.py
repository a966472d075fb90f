"""``gradcam explain`` (and ``caption``/``vqa``) refusing bad output folders and options in
one line, before any work (issue 30, items 12 and 17)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


# Videos, volumes and signals (issue 26, item 4): gradcam.explain_media behind the command.


def _gif() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / "no_time_for_that_tiny.gif"


FACTORIES = """
from torch import nn


def volume_net():
    return nn.Sequential(
        nn.Conv3d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2)
    )


def signal_net():
    return nn.Sequential(
        nn.Conv1d(1, 4, 5), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2)
    )
"""


def test_explain_a_video_a_volume_and_a_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("av")
    nib = pytest.importorskip("nibabel")
    out = tmp_path / "out"
    code = main(
        ["explain", str(_gif()), "--model", "r3d_18", "--weights", "random", "--size", "4,32,32",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    folder = out / "no-time-for-that-tiny"
    assert len(list(folder.glob("gradcam_1_*_overlay.gif"))) == 1
    assert len(list(folder.glob("gradcam_1_*_overlay.mp4"))) == 1
    (tmp_path / "nets.py").write_text(FACTORIES)
    anatomical = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    code = main(
        ["explain", str(anatomical), "--model", f"{tmp_path / 'nets.py'}:volume_net",
         "--weights", "random", "--size", "12,12,12", "--class", "0", "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    written = nib.load(out / "anatomical" / "gradcam_1_class-0_map.nii.gz")
    assert written.shape == (33, 41, 25)
    assert (out / "anatomical" / "gradcam_1_class-0_peak_slices.png").is_file()
    np.save(tmp_path / "ecg.npy", np.sin(np.linspace(0, 9, 200)).astype(np.float32))
    code = main(
        ["explain", str(tmp_path / "ecg.npy"), "--model", f"{tmp_path / 'nets.py'}:signal_net",
         "--weights", "random", "--class", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (out / "ecg" / "gradcam_1_class-1_map.png").is_file()
    assert '"kind": "signal"' in (out / "ecg" / "summary.json").read_text()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--model", "shapes"], "is a video (3-D: a clip), but model 'shapes' takes 2-D images"),
        (["--model", "shapes", "--figure"], "--figure apply to photos, not to"),
    ],
)
def test_video_refusals_are_one_line_before_any_work(
    extra: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["explain", str(_gif()), *extra, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_size_is_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["explain", str(_gif()), "--size", "4,x", "--out", str(tmp_path / "out")])
    assert "--size: not numbers separated by commas: '4,x'" in capsys.readouterr().err


def test_a_truncated_video_is_reported_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("av")
    import torch

    from gradcam.media.video import write_video_overlay

    frames = (torch.rand(12, 32, 48, 3) * 255).to(torch.uint8)
    whole = write_video_overlay(tmp_path / "clip.mp4", frames, torch.rand(3, 4, 4), fps=12)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:2000])
    code = main(
        ["explain", str(cut), "--model", "r3d_18", "--weights", "random", "--layer", "layer4",
         "--size", "4,16,16", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "gradcam: error: cut.mp4:" in err and "explained 0 of 1 files" in err
    assert not (tmp_path / "out" / "cut").exists()
