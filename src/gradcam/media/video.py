"""Video clips: reading with bounded memory, each model's own preprocessing, overlays.

:func:`read_video` decodes a file through PyAV into ``(N, H, W, 3)`` uint8 frames, refusing a
file that is not a video, is truncated, or exceeds the caps (:data:`MAX_FRAMES` frames,
:data:`MAX_SOURCE_PIXELS` pixels a frame); frames above :data:`MAX_FRAME_PIXELS` are kept at
reduced size, so memory stays below ``MAX_FRAMES * MAX_FRAME_PIXELS * 3`` bytes (about 550 MB).
:class:`VideoPreprocess` samples the clip a model expects and applies torchvision's
``VideoClassification`` transform (resize, centre crop, normalize); :func:`video_preprocess`
reads its numbers from torchvision's weights. :meth:`VideoPreprocess.frame_maps` puts a clip's
maps back on the video's frames, and :func:`write_video_outputs` writes the animated overlay,
the key frames and the maps.

Examples:
    >>> video = read_video(skimage_gif)          # 24 frames, 14 pixels wide and 25 high
    >>> prep = VideoPreprocess(clip_len=8, resize_size=(16,), crop_size=(16, 16))
    >>> prep(video.frames).shape
    torch.Size([1, 3, 8, 16, 16])
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from gradcam.errors import MediaLoadError, ModelLoadError
from gradcam.images import _reduction
from gradcam.outputs import output_folder, write_atomic
from gradcam.viz import overlay

__all__ = [
    "MAX_FRAMES",
    "MAX_FRAME_PIXELS",
    "MAX_SOURCE_PIXELS",
    "VIDEO_SUFFIXES",
    "Video",
    "VideoPreprocess",
    "read_video",
    "video_preprocess",
    "write_frame_maps",
    "write_key_frames",
    "write_video_outputs",
    "write_video_overlay",
]

#: Most frames decoded from one file; a longer video is refused (cut the part to explain).
MAX_FRAMES = 600
#: Pixels kept a frame: a larger frame is decoded at reduced size (every side divided by the
#: same integer). Every torchvision video model resizes to 256 pixels or fewer a side.
MAX_FRAME_PIXELS = 640 * 480
#: Pixels a frame may have in the file (4096 x 4096): larger frames are refused before decoding
#: (an animated GIF can declare a 65535 x 65535 canvas in a few bytes).
MAX_SOURCE_PIXELS = 4096 * 4096
#: The suffixes read as video.
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".gif")

PathLike = str | os.PathLike[str]


# eq=False: tensors have no single truth value, so field-by-field equality cannot be defined.
@dataclass(frozen=True, eq=False)
class Video:
    """A decoded video.

    Attributes:
        frames: ``(N, H, W, 3)`` uint8 RGB frames, possibly reduced (see ``source_size``).
        fps: frames per second (the stream's average rate; 10 when the file gives none).
        source_size: ``(width, height)`` of the frames in the file.
    """

    frames: Tensor
    fps: float
    source_size: tuple[int, int]


def _fault(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without its errno and file name."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).splitlines()[0] if reason else type(exc).__name__


def read_video(
    path: PathLike,
    *,
    max_frames: int = MAX_FRAMES,
    max_pixels: int = MAX_FRAME_PIXELS,
    max_source_pixels: int = MAX_SOURCE_PIXELS,
) -> Video:
    """Decode every frame of a video file, with caps on frames and pixels.

    Raises:
        MediaLoadError: the file is missing, not a video, has no video stream or one frame
            only, is truncated (fewer frames decoded than its header declares, or a decoding
            error), has more than ``max_frames`` frames or frames over ``max_source_pixels``.

    Examples:
        >>> video = read_video(skimage_gif)
        >>> tuple(video.frames.shape), video.frames.dtype, video.source_size
        ((24, 25, 14, 3), torch.uint8, (14, 25))
        >>> read_video(skimage_gif, max_frames=10)
        Traceback (most recent call last):
        ...
        gradcam.errors.MediaLoadError: no_time_for_that_tiny.gif: more than 10 frames (the \
cap, max_frames): cut the part to explain
    """
    import av

    file = Path(path)
    name = file.name
    if not file.is_file():
        raise MediaLoadError(f"{name}: no such file")
    try:
        container = av.open(str(file), metadata_errors="ignore")
    except (av.FFmpegError, OSError) as exc:
        raise MediaLoadError(
            f"{name}: not a readable video: corrupt, truncated or not a video ({_fault(exc)})"
        ) from None
    with container:
        if not container.streams.video:
            raise MediaLoadError(f"{name}: no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height <= 0:
            raise MediaLoadError(f"{name}: the video stream declares no frame size")
        if width * height > max_source_pixels:
            raise MediaLoadError(
                f"{name}: frames of {width}x{height} pixels exceed the cap of "
                f"{max_source_pixels} pixels (max_source_pixels)"
            )
        factor = _reduction((width, height), max_pixels)
        size = (math.ceil(width / factor), math.ceil(height / factor))
        declared = stream.frames
        # When the header gives the frame count (MP4, AVI), frames go straight into one
        # buffer: stacking a list at the end would hold every frame twice.
        buffer = (
            np.empty((declared, size[1], size[0], 3), dtype=np.uint8)
            if 0 < declared <= max_frames
            else None
        )
        extra: list[np.ndarray] = []
        count = 0
        try:
            for frame in container.decode(stream):
                if count == max_frames:
                    raise MediaLoadError(
                        f"{name}: more than {max_frames} frames (the cap, max_frames): cut the "
                        "part to explain"
                    )
                if frame.width * frame.height > max_source_pixels:
                    raise MediaLoadError(
                        f"{name}: a frame of {frame.width}x{frame.height} pixels exceeds the "
                        f"cap of {max_source_pixels} pixels (max_source_pixels)"
                    )
                array = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                if buffer is not None and count < len(buffer):
                    buffer[count] = array
                else:
                    extra.append(array)
                count += 1
        except MediaLoadError:
            raise
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise MediaLoadError(f"{name}: corrupt or truncated video ({_fault(exc)})") from None
        rate = stream.average_rate or stream.guessed_rate
    if declared and count < declared:
        raise MediaLoadError(
            f"{name}: truncated video: {count} of the {declared} frames its header "
            "declares could be decoded"
        )
    if count == 0:
        raise MediaLoadError(f"{name}: no frame could be decoded (truncated or empty video)")
    if count == 1:
        raise MediaLoadError(f"{name}: one frame only: explain it as an image")
    if buffer is None:
        frames = np.stack(extra)
    elif extra:
        frames = np.concatenate([buffer, np.stack(extra)])
    else:
        frames = buffer
    fps = float(rate) if rate else 10.0
    return Video(torch.from_numpy(frames), fps, (width, height))


@dataclass(frozen=True)
class VideoPreprocess:
    """Sample a clip from the frames and turn it into a ``(1, 3, T, h, w)`` model input.

    ``clip_len`` frames are taken at the centres of ``clip_len`` equal segments of the video
    (frames repeat when the video is shorter); each is resized (``resize_size``: one number
    sets the shorter side, two set ``(height, width)``), centre-cropped to ``crop_size``, scaled
    to [0, 1] and normalized with ``mean`` and ``std`` by torchvision's own
    ``VideoClassification`` transform, so a model sees what its weights were trained on.

    Examples:
        >>> VideoPreprocess(clip_len=4).frame_indices(8).tolist()
        [1, 3, 5, 7]
        >>> VideoPreprocess(clip_len=4).frame_indices(2).tolist()
        [0, 0, 1, 1]
    """

    clip_len: int = 16
    resize_size: tuple[int, ...] = (128, 171)
    crop_size: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)

    def __post_init__(self) -> None:
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be at least 1, got {self.clip_len}")
        if len(self.resize_size) not in (1, 2):
            raise ValueError(f"resize_size has one or two numbers, got {self.resize_size}")

    def frame_indices(self, count: int) -> Tensor:
        """The indices of the ``clip_len`` frames sampled from ``count`` frames."""
        centres = (torch.arange(self.clip_len, dtype=torch.float64) + 0.5) * count / self.clip_len
        return centres.floor().long().clamp(0, count - 1)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of a frame after the resize, as torchvision computes it."""
        if len(self.resize_size) == 2:
            return self.resize_size[0], self.resize_size[1]
        short, long = sorted((height, width))
        side = self.resize_size[0]
        other = int(side * long / short)
        return (side, other) if height <= width else (other, side)

    def crop_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the centre crop in the frame's own pixels."""
        resized_h, resized_w = self.resized_size(height, width)
        crop_h, crop_w = self.crop_size
        # torchvision's center_crop rounds the offsets the same way.
        top = round((resized_h - crop_h) / 2.0)
        left = round((resized_w - crop_w) / 2.0)
        scale_y, scale_x = height / resized_h, width / resized_w
        return (
            left * scale_x,
            top * scale_y,
            (left + crop_w) * scale_x,
            (top + crop_h) * scale_y,
        )

    def __call__(self, frames: Tensor) -> Tensor:
        """The normalized ``(1, 3, clip_len, *crop_size)`` float32 input of ``(N, H, W, 3)``
        uint8 frames."""
        from torchvision.transforms._presets import VideoClassification

        transform = VideoClassification(
            crop_size=self.crop_size,
            resize_size=self.resize_size,
            mean=self.mean,
            std=self.std,
        )
        clip = frames[self.frame_indices(frames.shape[0])].permute(0, 3, 1, 2)
        result: Tensor = transform(clip.unsqueeze(0))
        return result.contiguous()

    def frame_maps(self, maps: Tensor, count: int, height: int, width: int) -> Tensor:
        """Put a clip's ``(T, h, w)`` maps back on ``count`` frames of ``height`` x ``width``.

        In time, frame ``n`` interpolates linearly between the clip frames sampled around it
        (the first and last clip frames hold at the ends). In space, the map is resized
        bilinearly onto the centre crop; outside the crop the model saw nothing and the map is
        0. Values stay in the maps' own range.

        Examples:
            >>> prep = VideoPreprocess(clip_len=2, resize_size=(4, 4), crop_size=(4, 4))
            >>> maps = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])
            >>> prep.frame_maps(maps, 4, 4, 4)[:, 0, 0].tolist()   # clip frames are 1 and 3
            [0.0, 0.0, 0.5, 1.0]
        """
        if maps.dim() != 3 or maps.shape[0] != self.clip_len:
            raise ValueError(
                f"maps must be (clip_len={self.clip_len}, h, w), got {tuple(maps.shape)}"
            )
        maps = maps.detach().float().cpu()
        sampled = self.frame_indices(count).numpy()
        unique, inverse = np.unique(sampled, return_inverse=True)
        # A frame sampled more than once (a short video) gets the mean of its clip frames.
        merged = torch.stack(
            [maps[torch.from_numpy(inverse == i)].mean(0) for i in range(len(unique))]
        )
        position = np.interp(np.arange(count), unique, np.arange(len(unique)))
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, len(unique) - 1)
        weight = torch.from_numpy(position - low).float().view(-1, 1, 1)
        timed = merged[low] * (1 - weight) + merged[high] * weight
        x0, y0, x1, y1 = (round(v) for v in self.crop_box(height, width))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        placed = torch.zeros(count, height, width)
        if x1 > x0 and y1 > y0:
            placed[:, y0:y1, x0:x1] = F.interpolate(
                timed.unsqueeze(1), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False
            ).squeeze(1)
        return placed


def video_preprocess(model_name: str) -> VideoPreprocess:
    """The preprocessing of a torchvision video model, read from its default weights.

    Resize, crop, mean and std come from the weights' ``transforms()``; the clip length from
    the ``clip_len`` their documentation gives (16 for r3d_18, mc3_18, r2plus1d_18 and MViT,
    32 for Swin3D, 128 for S3D). Nothing is downloaded.

    Raises:
        ModelLoadError: ``model_name`` is not a torchvision video model.

    Examples:
        >>> video_preprocess("r3d_18")
        VideoPreprocess(clip_len=16, resize_size=(128, 171), crop_size=(112, 112), \
mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989))
        >>> video_preprocess("swin3d_t").clip_len, video_preprocess("mvit_v2_s").resize_size
        (32, (256,))
    """
    from torchvision import models

    if model_name not in models.list_models(module=models.video):
        known = ", ".join(models.list_models(module=models.video))
        raise ModelLoadError(f"no video preprocessing for {model_name!r}: known are {known}")
    weights = models.get_model_weights(model_name).DEFAULT  # type: ignore[attr-defined]
    transform = weights.transforms()
    found = re.search(r"clip_len=(\d+)", weights.meta.get("_docs", ""))
    if found is None:
        raise ModelLoadError(f"torchvision gives no clip length for {model_name!r}")
    return VideoPreprocess(
        clip_len=int(found.group(1)),
        resize_size=tuple(transform.resize_size),
        crop_size=(transform.crop_size[0], transform.crop_size[1]),
        mean=(transform.mean[0], transform.mean[1], transform.mean[2]),
        std=(transform.std[0], transform.std[1], transform.std[2]),
    )


def _frame_maps(maps: Tensor, count: int, height: int, width: int) -> Tensor:
    """``(T, h, w)`` maps resized trilinearly to ``(count, height, width)``, clipped to [0, 1]."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (T, h, w), got shape {tuple(maps.shape)}")
    values = torch.nan_to_num(maps.detach().float().cpu())
    if tuple(values.shape) != (count, height, width):
        values = F.interpolate(
            values[None, None], size=(count, height, width), mode="trilinear", align_corners=False
        )[0, 0]
    return values.clamp(0.0, 1.0)


def _pictures(
    frames: Tensor, maps: Tensor, colormap: str, alpha: float, indices: list[int] | None = None
) -> list[Image.Image]:
    count, height, width = frames.shape[:3]
    placed = _frame_maps(maps, count, height, width)
    chosen = range(count) if indices is None else indices
    return [
        overlay(Image.fromarray(frames[i].numpy()), placed[i], colormap, alpha, normalized=True)
        for i in chosen
    ]


def write_video_overlay(
    path: PathLike,
    frames: Tensor,
    maps: Tensor,
    fps: float,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Path:
    """Write the maps blended over the frames as an animation a browser plays.

    The format follows the suffix: ``.gif`` and ``.webp`` (Pillow, looping), ``.mp4`` (H.264
    through PyAV; odd sides lose their last pixel row or column, as H.264 needs even sides).
    ``maps`` is ``(T, h, w)`` in [0, 1] on one scale for the whole clip (not stretched per
    frame), resized trilinearly to the ``(N, H, W, 3)`` uint8 ``frames``: one picture a frame.

    Examples:
        >>> frames = torch.zeros(3, 8, 8, 3, dtype=torch.uint8)
        >>> path = write_video_overlay("clip.gif", frames, torch.rand(2, 4, 4), fps=10)
        >>> Image.open(path).n_frames
        3
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".gif", ".webp", ".mp4"):
        raise MediaLoadError(f"{target.name}: an overlay is written as .gif, .webp or .mp4")
    pictures = _pictures(frames, maps, colormap, alpha)
    duration = max(1, round(1000.0 / fps))
    if suffix == ".mp4":
        return write_atomic(target, lambda tmp: _write_mp4(tmp, pictures, fps))
    kind = "GIF" if suffix == ".gif" else "WEBP"
    return write_atomic(
        target,
        lambda tmp: pictures[0].save(
            tmp, format=kind, save_all=True, append_images=pictures[1:], duration=duration, loop=0
        ),
    )


def _write_mp4(tmp: Path, pictures: list[Image.Image], fps: float) -> None:
    import av

    width, height = pictures[0].width // 2 * 2, pictures[0].height // 2 * 2
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    # faststart: the index goes first, so a browser plays the file while it downloads.
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream: Any = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for picture in pictures:
            array = np.ascontiguousarray(np.asarray(picture)[:height, :width])
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_key_frames(
    path: PathLike,
    frames: Tensor,
    maps: Tensor,
    *,
    count: int = 8,
    colormap: str = "jet",
    alpha: float = 0.5,
    gap: int = 2,
) -> Path:
    """Write ``count`` overlaid frames, evenly spaced in time, side by side as one PNG.

    The frames are the centres of ``count`` equal segments of the video (all frames when there
    are fewer), separated by ``gap`` white pixels: the picture is
    ``count * W + (count - 1) * gap`` pixels wide and ``H`` high.

    Examples:
        >>> frames = torch.zeros(10, 6, 8, 3, dtype=torch.uint8)
        >>> Image.open(write_key_frames("keys.png", frames, torch.rand(10, 6, 8), count=4)).size
        (38, 6)
    """
    total, height, width = frames.shape[:3]
    shown = min(count, total)
    indices = VideoPreprocess(clip_len=shown).frame_indices(total).tolist()
    tiles = _pictures(frames, maps, colormap, alpha, indices)
    strip = Image.new("RGB", (shown * width + (shown - 1) * gap, height), (255, 255, 255))
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * (width + gap), 0))
    return write_atomic(path, lambda tmp: strip.save(tmp, format="PNG"))


def write_frame_maps(
    path: PathLike,
    maps: Tensor,
    frame_index: Tensor,
    fps: float,
    box: tuple[float, float, float, float] | None = None,
) -> Path:
    """Write a clip's maps and where they sit in the video as one ``.npz`` file.

    Arrays: ``maps`` (T, h, w) float32 at the model's grid, ``frame_index`` (T,) the video
    frame each clip frame is, ``time_s`` (T,) its time in seconds, and ``box`` (4,) the
    ``(x0, y0, x1, y1)`` region of the frame the maps cover (the whole frame when not given).

    Examples:
        >>> index = torch.tensor([1, 3, 5, 7])
        >>> path = write_frame_maps("maps.npz", torch.rand(4, 7, 7), index, fps=2.0)
        >>> np.load(path)["time_s"].tolist()
        [0.5, 1.5, 2.5, 3.5]
    """
    if maps.dim() != 3 or frame_index.shape != maps.shape[:1]:
        raise ValueError(
            f"maps must be (T, h, w) with one frame index each, got {tuple(maps.shape)} "
            f"and {tuple(frame_index.shape)}"
        )
    index = frame_index.detach().cpu().long().numpy()
    arrays = {
        "maps": maps.detach().float().cpu().numpy(),
        "frame_index": index,
        "time_s": index / fps,
        "box": np.asarray(box if box is not None else (np.nan,) * 4, dtype=np.float64),
    }

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    return write_atomic(path, save)


def write_video_outputs(
    folder: PathLike,
    video: Video,
    maps: Tensor,
    preprocess: VideoPreprocess,
    *,
    stem: str = "video",
    formats: tuple[str, ...] = (".gif", ".mp4"),
    colormap: str = "jet",
    alpha: float = 0.5,
) -> list[Path]:
    """Write everything a video explanation gives, into ``folder``.

    ``maps`` is one ``(T, h, w)`` map of the clip ``preprocess`` made (the model's input grid,
    in [0, 1]). Written: ``{stem}_overlay{suffix}`` for each of ``formats`` (one picture per
    video frame), ``{stem}_keyframes.png`` and ``{stem}_maps.npz``. The folder is checked
    before any work.

    Examples:
        >>> prep = VideoPreprocess(clip_len=8, resize_size=(16,), crop_size=(16, 16))
        >>> video = read_video(skimage_gif)
        >>> paths = write_video_outputs("out", video, torch.rand(8, 16, 16), prep)
        >>> [p.name for p in paths]
        ['video_overlay.gif', 'video_overlay.mp4', 'video_keyframes.png', 'video_maps.npz']
    """
    where = output_folder(folder)
    count, height, width = video.frames.shape[:3]
    placed = preprocess.frame_maps(maps, count, height, width)
    written = [
        write_video_overlay(
            where / f"{stem}_overlay{suffix}",
            video.frames,
            placed,
            video.fps,
            colormap=colormap,
            alpha=alpha,
        )
        for suffix in formats
    ]
    written.append(
        write_key_frames(
            where / f"{stem}_keyframes.png", video.frames, placed, colormap=colormap, alpha=alpha
        )
    )
    scale = video.source_size[0] / width
    box = tuple(v * scale for v in preprocess.crop_box(height, width))
    written.append(
        write_frame_maps(
            where / f"{stem}_maps.npz",
            maps,
            preprocess.frame_indices(count),
            video.fps,
            (box[0], box[1], box[2], box[3]),
        )
    )
    return written
