"""gradcam.media.video: real GIF in, overlays out; caps and truncated files refused in one line."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from gradcam.errors import GradCAMError, MediaLoadError, ModelLoadError
from gradcam.media.video import (
    VideoPreprocess,
    read_video,
    video_preprocess,
    write_video_outputs,
    write_video_overlay,
)

pytest.importorskip("av")

GIF = Path(skimage.data.__file__).parent / "no_time_for_that_tiny.gif"


def _one_line(exc: pytest.ExceptionInfo[MediaLoadError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_real_gif_is_read_frame_by_frame() -> None:
    video = read_video(GIF)
    pil = Image.open(GIF)
    assert tuple(video.frames.shape) == (pil.n_frames, pil.height, pil.width, 3)
    pil.seek(5)
    expected = np.asarray(pil.convert("RGB"))
    # PyAV and Pillow decode the same palette frame to nearly the same pixels.
    assert np.abs(video.frames[5].numpy().astype(int) - expected.astype(int)).mean() < 2.0
    assert video.fps == pytest.approx(1000 / 70, rel=0.05)


def test_outputs_of_a_real_gif(tmp_path: Path) -> None:
    video = read_video(GIF)
    prep = VideoPreprocess(clip_len=8, resize_size=(16,), crop_size=(16, 16))
    maps = torch.rand(8, 16, 16)
    written = write_video_outputs(
        tmp_path / "out", video, maps, prep, formats=(".gif", ".webp", ".mp4")
    )
    names = [p.name for p in written]
    assert names == [
        "video_overlay.gif",
        "video_overlay.webp",
        "video_overlay.mp4",
        "video_keyframes.png",
        "video_maps.npz",
    ]
    count, height, width = video.frames.shape[:3]
    for path in written[:2]:
        animation = Image.open(path)
        assert animation.n_frames == count  # one picture a video frame
        assert animation.size == (width, height)
    mp4 = read_video(written[2])
    assert mp4.frames.shape[0] == count
    assert mp4.frames.shape[1:3] == (height // 2 * 2, width // 2 * 2)
    assert Image.open(written[3]).size == (8 * width + 7 * 2, height)
    saved = np.load(written[4])
    assert np.array_equal(saved["maps"], maps.numpy())
    assert saved["frame_index"].tolist() == prep.frame_indices(count).tolist()
    assert saved["time_s"] == pytest.approx(saved["frame_index"] / video.fps)
    assert not list((tmp_path / "out").glob(".*.tmp"))


@pytest.mark.parametrize(
    "name",
    ["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v1_b", "mvit_v2_s", "swin3d_t", "swin3d_s"],
)
def test_preprocessing_is_torchvisions(name: str) -> None:
    from torchvision import models

    prep = video_preprocess(name)
    frames = (torch.rand(40, 60, 80, 3) * 255).to(torch.uint8)
    expected = models.get_model_weights(name).DEFAULT.transforms()(
        frames[prep.frame_indices(40)].permute(0, 3, 1, 2)
    )
    assert torch.equal(prep(frames)[0], expected)
    clip_len = {"s3d": 128, "swin3d_t": 32, "swin3d_s": 32}.get(name, 16)
    assert prep.clip_len == clip_len


def test_unknown_model_has_no_preprocessing() -> None:
    with pytest.raises(ModelLoadError, match="no video preprocessing for 'resnet18'"):
        video_preprocess("resnet18")


def test_frame_maps_sit_on_the_crop() -> None:
    prep = VideoPreprocess(clip_len=2, resize_size=(8, 8), crop_size=(4, 4))
    placed = prep.frame_maps(torch.ones(2, 4, 4), count=3, height=16, width=16)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:12, 4:12] = True
    assert torch.equal(placed[:, inside], torch.ones(3, 64))
    assert torch.equal(placed[:, ~inside], torch.zeros(3, 256 - 64))


def test_frame_maps_interpolate_in_time() -> None:
    prep = VideoPreprocess(clip_len=2, resize_size=(2, 2), crop_size=(2, 2))
    maps = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])
    # Clip frames are video frames 2 and 6 of 8.
    assert prep.frame_indices(8).tolist() == [2, 6]
    placed = prep.frame_maps(maps, 8, 2, 2)[:, 0, 0].tolist()
    assert placed == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_too_many_frames(tmp_path: Path) -> None:
    with pytest.raises(MediaLoadError) as exc:
        read_video(GIF, max_frames=23)
    assert "more than 23 frames" in _one_line(exc)
    assert read_video(GIF, max_frames=24).frames.shape[0] == 24


def test_too_many_pixels() -> None:
    with pytest.raises(MediaLoadError) as exc:
        read_video(GIF, max_source_pixels=14 * 25 - 1)
    assert "frames of 14x25 pixels exceed the cap" in _one_line(exc)


def test_large_frames_are_kept_reduced(tmp_path: Path) -> None:
    video = read_video(GIF, max_pixels=100)
    assert tuple(video.frames.shape[1:3]) == (13, 7)  # both sides halved: 91 pixels
    assert video.source_size == (14, 25)


def _gif_bomb(path: Path, side: int = 60000) -> Path:
    """A 2-frame GIF whose canvas is ``side`` x ``side`` pixels, in about 70 bytes."""
    frame = (
        b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 100 ms
        + b"\x2c"
        + struct.pack("<HHHH", 0, 0, 1, 1)
        + b"\x00"
        + b"\x02\x02\x44\x01\x00"  # one pixel of colour 0
    )
    data = (
        b"GIF89a"
        + struct.pack("<HH", side, side)
        + b"\x80\x00\x00"
        + b"\x00\x00\x00\xff\xff\xff"
        + frame * 2
        + b"\x3b"
    )
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (10000, "frames of 10000x10000 pixels exceed the cap of 16777216 pixels"),
        # FFmpeg itself refuses a canvas over 2**31 / 8 pixels: the stream has no size.
        (60000, "the video stream declares no frame size"),
    ],
)
def test_gif_bomb_is_refused_before_decoding(tmp_path: Path, side: int, message: str) -> None:
    bomb = _gif_bomb(tmp_path / "bomb.gif", side)
    assert bomb.stat().st_size < 100
    with pytest.raises(MediaLoadError) as exc:
        read_video(bomb)
    assert message in _one_line(exc)


def test_truncated_mp4(tmp_path: Path) -> None:
    frames = (torch.rand(12, 32, 48, 3) * 255).to(torch.uint8)
    whole = write_video_overlay(tmp_path / "clip.mp4", frames, torch.rand(3, 4, 4), fps=12)
    assert read_video(whole).frames.shape[0] == 12
    data = whole.read_bytes()
    for keep in (0.2, 0.5, 0.95):
        cut = tmp_path / f"cut{keep}.mp4"
        cut.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(MediaLoadError) as exc:
            read_video(cut)
        assert "truncated" in _one_line(exc)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a video at all", "not a readable video"), (None, "no such file")],
)
def test_not_a_video(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaLoadError) as exc:
        read_video(path)
    assert message in _one_line(exc)


def test_one_frame_is_an_image(tmp_path: Path) -> None:
    path = tmp_path / "still.gif"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    with pytest.raises(MediaLoadError, match="one frame only: explain it as an image"):
        read_video(path)


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(GradCAMError, match="No space left on device"):
        write_video_overlay(tmp_path / "clip.gif", frames, torch.rand(4, 8, 8), fps=5)
    assert list(tmp_path.iterdir()) == []


def test_overlay_suffix_is_checked_before_work(tmp_path: Path) -> None:
    with pytest.raises(MediaLoadError, match=r"\.gif, \.webp or \.mp4"):
        write_video_overlay(
            tmp_path / "clip.avi",
            torch.zeros(2, 4, 4, 3, dtype=torch.uint8),
            torch.rand(2, 4, 4),
            5,
        )
    assert list(tmp_path.iterdir()) == []


def test_overlay_keeps_one_scale_for_the_clip(tmp_path: Path) -> None:
    frames = torch.full((2, 4, 4, 3), 128, dtype=torch.uint8)
    maps = torch.stack([torch.full((4, 4), 0.1), torch.full((4, 4), 0.9)])
    path = write_video_overlay(tmp_path / "c.webp", frames, maps, fps=5)
    animation = Image.open(path)
    first = np.asarray(animation.convert("RGB"), dtype=float)
    animation.seek(1)
    second = np.asarray(animation.convert("RGB"), dtype=float)
    # Not stretched per frame: a weak frame (0.1, blue in jet) and a strong one (0.9, red).
    assert first[..., 2].mean() > first[..., 0].mean()
    assert second[..., 0].mean() > second[..., 2].mean()


def _encode(path: Path, codec: str, frames: torch.Tensor, container_format: str) -> Path:
    import av

    with av.open(str(path), mode="w", format=container_format) as container:
        stream: Any = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for array in frames.numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("name", "codec", "container_format"),
    [
        ("clip.avi", "mpeg4", "avi"),
        ("clip.webm", "libvpx-vp9", "webm"),
        ("clip.mkv", "libx264", "matroska"),
    ],
)
def test_other_containers(tmp_path: Path, name: str, codec: str, container_format: str) -> None:
    import av

    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {codec} encoder")
    frames = torch.zeros(6, 16, 24, 3, dtype=torch.uint8)
    frames[:, :, :12, 0] = 200  # red on the left
    video = read_video(_encode(tmp_path / name, codec, frames, container_format))
    assert tuple(video.frames.shape) == (6, 16, 24, 3)
    assert video.frames[:, :, :10, 0].float().mean() > 150
    assert video.frames[:, :, 14:, 0].float().mean() < 50


def test_audio_only_file(tmp_path: Path) -> None:
    import av

    path = tmp_path / "sound.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream: Any = container.add_stream("aac", rate=8000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for _ in range(3):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(MediaLoadError, match=r"sound\.mp4: no video stream"):
        read_video(path)


def test_output_folder_checked_before_work(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    video = read_video(GIF)
    prep = VideoPreprocess(clip_len=2, resize_size=(8,), crop_size=(8, 8))
    with pytest.raises(GradCAMError, match="is a file, or lies under one"):
        write_video_outputs(tmp_path / "f.txt" / "out", video, torch.rand(2, 8, 8), prep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_truncated_avi_is_counted_against_its_header(tmp_path: Path) -> None:
    # FFmpeg reads a cut AVI without an error: only the header's frame count tells.
    frames = (torch.rand(12, 32, 48, 3) * 255).to(torch.uint8)
    whole = _encode(tmp_path / "clip.avi", "mpeg4", frames, "avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: int(len(whole) * 0.8)])
    with pytest.raises(MediaLoadError) as exc:
        read_video(cut)
    assert "truncated video:" in _one_line(exc)
    assert "of the 12 frames its header declares" in str(exc.value)
