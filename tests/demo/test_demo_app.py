"""The page's layout and its ``/explain`` callback, without a server; ``gradcam serve`` options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from helpers.photos import SKIMAGE_DATA

import gradcam
from gradcam.cli import main
from gradcam.demo import DemoSession
from gradcam.demo.app import (
    OUTPUTS,
    build_app,
    bundled_photos,
    download_outputs,
    explain_outputs,
    sweep_outputs,
    theme,
    view_outputs,
)


@pytest.fixture(scope="module")
def session(lite0: gradcam.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> DemoSession:
    return DemoSession(lite0, folder=tmp_path_factory.mktemp("downloads"))


def test_explain_outputs(session: DemoSession) -> None:
    outputs = explain_outputs(session, str(SKIMAGE_DATA / "chelsea.png"), "tiger cat", None)
    assert len(outputs) == len(OUTPUTS) == 10
    summary, top5, class_name, *pictures, maps, figure = outputs
    assert class_name == "tiger cat" and "**tiger cat** (class 282" in summary
    assert len(top5) == 5 and all(0 < p < 1 for p in top5.values())
    assert [p.size for p in pictures] == [(451, 300)] * 5
    with np.load(maps, allow_pickle=False) as arrays:
        assert arrays["classes"].tolist() == [282]
    assert Path(figure).suffix == ".png" and Path(figure).is_file()


def test_views_come_before_downloads(session: DemoSession, tmp_path: Path) -> None:
    cat = str(SKIMAGE_DATA / "chelsea.png")
    shown = view_outputs(session, cat, "lynx", None)
    assert len(shown) == 8 and shown[2] == "lynx"
    maps, figure = download_outputs(session, cat, "lynx", None)
    assert maps is not None and Path(maps).name.endswith("_287-lynx_head-act.npz")
    assert figure is not None and Path(figure).is_file()
    notes = tmp_path / "notes.png"
    notes.write_text("no")
    assert download_outputs(session, str(notes), None, None) == (None, None)
    assert download_outputs(session, None, None, None) == (None, None)


def test_sweep_outputs(session: DemoSession, tmp_path: Path) -> None:
    cat = str(SKIMAGE_DATA / "chelsea.png")
    grid, note = sweep_outputs(session, cat, "tabby")
    assert note == "Grad-CAM of **tabby** at 5 depths."
    # Three titled panels (18 px titles, 6 px gaps) in the first row, two in the second.
    assert grid is not None and grid.size == (3 * 451 + 2 * 6, 2 * (300 + 18))
    assert sweep_outputs(session, None, None) == (
        None,
        "Upload a photo, or pick one of the examples.",
    )
    notes = tmp_path / "notes.png"
    notes.write_text("no")
    assert sweep_outputs(session, str(notes), None) == (
        None,
        "**Error:** notes.png: not an image file (unrecognized format)",
    )


def test_explain_outputs_messages(session: DemoSession, tmp_path: Path) -> None:
    waiting = explain_outputs(session, None, None, None)
    assert waiting[0].startswith("Upload a photo") and set(waiting[1:]) == {None}
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    failed = explain_outputs(session, str(notes), None, None)
    assert failed[0] == "**Error:** notes.jpg: not an image file (unrecognized format)"
    assert set(failed[1:]) == {None}
    cat = str(SKIMAGE_DATA / "chelsea.png")
    assert explain_outputs(session, cat, "catt", None)[0].startswith("**Error:** no class named")
    assert "no spatial layer named 'nope'" in explain_outputs(session, cat, None, "nope")[0]


def test_layout_and_api(session: DemoSession) -> None:
    added: list[str] = []

    def captioning(_: DemoSession) -> None:  # how issue 5's tabs plug in
        with gr.Tab("Captioning"):
            added.append("Captioning")

    app = build_app(session, tabs=[captioning])
    assert isinstance(app, gr.Blocks) and added == ["Captioning"]
    app = build_app(session)
    named = [d.get("api_name") for d in app.config["dependencies"] if d.get("api_name")]
    assert "explain" in named


def test_untrained_model_is_flagged_on_the_page(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="random weights"):
        untrained = gradcam.load_model("resnet18", "random")
    app = build_app(DemoSession(untrained, folder=tmp_path))
    texts = [c.get("props", {}).get("value") for c in app.config["components"]]
    assert any("random weights" in str(text) for text in texts)
    trained = build_app(DemoSession(gradcam.load_model("shapes"), folder=tmp_path))
    texts = [c.get("props", {}).get("value") for c in trained.config["components"]]
    assert not any("random weights" in str(text) for text in texts)


def test_theme_uses_local_fonts_only() -> None:
    styled = theme()
    assert styled._stylesheets == []  # no Google Fonts (or any) stylesheet to fetch
    assert all(isinstance(font, str) for font in (*styled._font, *styled._font_mono))


def test_bundled_photos_are_real_photos() -> None:
    photos = bundled_photos()
    names = [p.name for p in photos]
    assert names[:2] == ["cat_and_coffee.jpg", "grace_hopper.jpg"]
    for path in photos:
        assert min(gradcam.load_image(path).size) >= 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port must be in 1..65535, got 0"),
        (["--port", "70000"], "--port must be in 1..65535, got 70000"),
        (["--max-file-size", "0"], "--max-file-size must be positive, got 0.0"),
        (["--model", "resnet5O"], "unknown model 'resnet5O'; did you mean resnet50"),
    ],
)
def test_serve_bad_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *args]) == 2
    assert f"gradcam: error: {message}" in capsys.readouterr().err


def test_serve_help_says_localhost(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "127.0.0.1" in capsys.readouterr().out


def test_bench_demo_quick_smoke() -> None:
    """One round of the latency benchmark, so the script cannot rot (no timing checks)."""
    script = Path(__file__).parents[2] / "benchmarks" / "bench_demo.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--no-http"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| session: class seen before (cache) |" in proc.stdout


@pytest.mark.parametrize("chosen", ["unicorn", "5000", "-1"])
def test_explain_with_a_bad_class_returns_no_files(
    lite0: gradcam.LoadedModel, tmp_path: Path, chosen: str
) -> None:
    # A fresh folder: the error must write nothing, not the top-1 class's maps.
    session = DemoSession(lite0, folder=tmp_path)
    outputs = explain_outputs(session, str(SKIMAGE_DATA / "chelsea.png"), chosen, None)
    summary, top5, class_name, *pictures, maps, figure = outputs
    assert summary.startswith("**Error:**") and ("unicorn" in summary or "out of range" in summary)
    assert class_name is None and top5 is None and pictures == [None] * 5
    assert (maps, figure) == (None, None)
    assert list(tmp_path.iterdir()) == []
