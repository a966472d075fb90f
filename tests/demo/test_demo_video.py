"""The Video tab's callback as plain functions: scikit-image's animated GIF through r3d_18 with
random weights gives the library's Grad-CAM as an animated WebP overlay and the model's top-5;
caching; truncated, too long, too large and non-video uploads give one line, not a traceback."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import gradcam
from gradcam.errors import GradCAMError
from gradcam.explain_media import media_preprocess
from gradcam.media.video import read_video, write_video_overlay

pytest.importorskip("av")

from gradcam.demo.video import VideoSession

GIF = Path(skimage.data.__file__).parent / "no_time_for_that_tiny.gif"


@pytest.fixture(scope="module")
def r3d() -> gradcam.LoadedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights, asked for
        return gradcam.load_model("r3d_18", "random", input_size=(4, 32, 32))


@pytest.fixture(scope="module")
def video(r3d: gradcam.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> VideoSession:
    return VideoSession(r3d, folder=tmp_path_factory.mktemp("videos"))


def test_gif_overlay_is_the_librarys_gradcam(video: VideoSession, r3d: gradcam.LoadedModel) -> None:
    views = video.explain(GIF)
    x = media_preprocess(r3d, "video")(read_video(GIF).frames)  # type: ignore[arg-type]
    logits = r3d.module(x)[0]
    assert [p.class_id for p in views.predictions] == logits.topk(5).indices.tolist()
    assert views.class_id == int(logits.argmax()) == views.predictions[0].class_id
    assert views.class_name == r3d.class_names[views.class_id]
    assert views.input_shape == (1, 3, 4, 32, 32) and views.layer == "layer4"
    expected = gradcam.GradCAM(r3d.module, r3d.default_layer)(x, views.class_id).maps[0, 0]
    with np.load(views.maps) as saved:
        assert np.allclose(saved["maps"], expected.detach().numpy(), atol=1e-5)
    with Image.open(views.overlay) as shown:  # one picture per frame of the upload, animated
        assert shown.format == "WEBP" and shown.n_frames == 24 and shown.size == (14, 25)
    assert views.video.suffix == ".mp4" and views.key_frames.suffix == ".png"
    assert not views.cached and views.seconds > 0


def test_cached_per_upload_and_class(video: VideoSession, tmp_path: Path) -> None:
    first = video.explain(GIF)
    copy = tmp_path / "same.gif"  # the same bytes under another name: the same result
    copy.write_bytes(GIF.read_bytes())
    again = video.explain(copy)
    assert again.cached and again.seconds == 0 and again.overlay == first.overlay
    assert video.explain(GIF, first.class_name).cached  # the top-1 asked for by name
    other = first.predictions[1]
    chosen = video.explain(GIF, other.class_id)
    assert not chosen.cached and chosen.class_id == other.class_id
    assert chosen.overlay != first.overlay and chosen.overlay.is_file()
    assert "Grad-CAM at layer `layer4`" in video.summary(chosen)
    # files pruned since: explained again, not a link to a missing file
    chosen.overlay.unlink()
    assert not video.explain(GIF, other.class_id).cached


def _one_line(exc: pytest.ExceptionInfo[GradCAMError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_truncated_video_is_one_line(video: VideoSession, tmp_path: Path) -> None:
    frames = read_video(GIF).frames
    whole = write_video_overlay(tmp_path / "clip.mp4", frames, torch.zeros(3, 4, 4), fps=10)
    cut = tmp_path / "upload" / "cut.mp4"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(GradCAMError) as exc:
        video.explain(cut)
    message = _one_line(exc)
    assert message.startswith("cut.mp4: ") and "truncated" in message
    assert str(tmp_path) not in message  # the server's path means nothing to the visitor


def test_caps_and_wrong_uploads(r3d: gradcam.LoadedModel, tmp_path: Path) -> None:
    capped = VideoSession(r3d, max_frames=10, max_bytes=GIF.stat().st_size)
    try:
        with pytest.raises(GradCAMError) as exc:
            capped.explain(GIF)
        assert "more than 10 frames" in _one_line(exc)
        big = tmp_path / "big.gif"
        big.write_bytes(GIF.read_bytes() + b"\0")
        with pytest.raises(GradCAMError) as exc:
            capped.explain(big)
        assert "big.gif: file too large" in _one_line(exc)
        still = tmp_path / "still.png"
        Image.new("RGB", (8, 8)).save(still)
        with pytest.raises(GradCAMError) as exc:
            capped.explain(still)
        assert "still.png: not a video clip" in _one_line(exc)
        with pytest.raises(GradCAMError) as exc:
            capped.explain(None)
        assert "no clip given" in _one_line(exc)
        with pytest.raises(GradCAMError) as exc:
            capped.explain(GIF, "x" * 500)
        assert "at most 200 are read" in _one_line(exc)
        assert not any(capped.folder.iterdir())  # nothing written for refused uploads
    finally:
        capped.close()
    assert not capped.folder.exists()


def test_an_image_model_is_refused() -> None:
    with pytest.raises(GradCAMError) as exc:
        VideoSession(gradcam.load_model("shapes"))
    assert "takes 2-D images" in _one_line(exc)


def test_tab_callback_and_page(video: VideoSession, tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from gradcam.demo import DemoSession
    from gradcam.demo.app import build_app
    from gradcam.demo.video_tab import VIDEO_OUTPUTS, example_clips, video_outputs, video_tab

    assert example_clips() == [GIF]
    shown = video_outputs(video, str(GIF), "")
    assert len(shown) == len(VIDEO_OUTPUTS)
    summary, top5, name, overlay, key_frames, files = shown
    assert name in top5 and len(top5) == 5 and summary.startswith(f"**{name}**")
    assert Path(overlay).suffix == ".webp" and Path(key_frames).suffix == ".png"
    assert [Path(f).suffix for f in files] == [".mp4", ".npz"]
    broken = tmp_path / "broken.gif"
    broken.write_bytes(GIF.read_bytes()[:300])
    summary, *rest = video_outputs(video, str(broken), None)
    assert summary.startswith("**Error:** broken.gif: ") and "\n" not in summary
    assert rest == [None] * 5
    summary, *rest = video_outputs(video, str(GIF), "no such action")
    assert summary.startswith("**Error:** ") and "no such action" in summary
    assert video_outputs(video, None, None)[1:] == (None,) * 5
    session = DemoSession(gradcam.load_model("shapes"), folder=tmp_path / "downloads")
    page = build_app(session, [video_tab(video)])
    assert "explain_video" in str(page.config)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--video-weights", "w.pt"], "--video-weights given without --video-model"),
        (["--video-model", "r3d_81"], "unknown model 'r3d_81'; did you mean r3d_18"),
        (["--video-model", "shapes"], "the Video tab's clip is a video (3-D: a clip), but model"),
    ],
)
def test_serve_bad_video_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gradio")
    from gradcam.cli import main

    assert main(["serve", "--model", "shapes", *args]) == 2
    assert f"gradcam: error: {message}" in capsys.readouterr().err
