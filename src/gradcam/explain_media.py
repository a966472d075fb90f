"""Explaining a video clip, a 3-D volume or a 1-D signal end to end: what ``gradcam explain``
does for files that are not photos.

:func:`explain_media` reads the file by :func:`gradcam.media.media_kind`, makes the model's
input with :func:`media_preprocess`, runs the methods with
:func:`gradcam.explain.explain_input` (the passes :func:`gradcam.explain.explain_image` shares
for photos) and writes, per method and explained class, under the stem
``{method}_{rank}_{class}``:

- video: the animated overlay as ``.gif`` and ``.mp4``, the key frames as a PNG strip and the
  maps per frame as ``.npz`` (:func:`gradcam.media.video.write_video_outputs`);
- volume: the map as ``.nii.gz`` on the input's grid with its affine, and the three slices
  through its peak as a PNG (:func:`gradcam.media.volume.write_volume_outputs`);
- signal: the signal coloured by its map as a PNG, and the map as ``.npy``
  (:func:`gradcam.media.signal.write_signal_outputs`);

plus a ``summary.json``. Before the file is read, :func:`check_media` refuses a model whose
input rank (read from its first convolution, :func:`gradcam.models.input_signature`) is not the
file's, and pixel-space methods, whose maps have no picture here; every file is computed before
the first one is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from gradcam.errors import GradCAMError, MediaLoadError
from gradcam.explain import explain_input, top_predictions
from gradcam.layers import resolve_layer
from gradcam.media import MediaKind, media_kind
from gradcam.media.signal import (
    MAX_DRAWN_CHANNELS,
    SignalPreprocess,
    read_signal,
    resample_signal_map,
    write_signal_outputs,
)
from gradcam.media.video import (
    MAX_FRAME_PIXELS,
    MAX_FRAMES,
    VideoPreprocess,
    read_video,
    video_preprocess,
    write_video_outputs,
)
from gradcam.media.volume import (
    VolumePreprocess,
    peak_voxel,
    read_volume,
    resample_map,
    write_volume_outputs,
)
from gradcam.methods import method_spec
from gradcam.models import LoadedModel, video_models
from gradcam.outputs import output_folder, write_atomic
from gradcam.paths import slug

__all__ = ["INPUT_RANKS", "check_media", "explain_media", "file_kind", "media_preprocess"]

#: The spatial rank of each kind of file: what a model's first convolution must take.
INPUT_RANKS: dict[str, int] = {"signal": 1, "image": 2, "video": 3, "volume": 3}

# Channels each kind of file gives the model (a signal: its own, known once read).
_CHANNELS = {"image": 3, "video": 3, "volume": 1}
_RANK_WORDS = {1: "1-D signals", 2: "2-D images", 3: "3-D clips or volumes"}

MediaPreprocess = VideoPreprocess | VolumePreprocess | SignalPreprocess


def file_kind(path: str | os.PathLike[str]) -> MediaKind | None:
    """:func:`gradcam.media.media_kind`, except that a ``.gif`` of one frame is a photo
    (``None``): only an animated GIF is a video.

    Examples:
        >>> from PIL import Image
        >>> Image.new("RGB", (4, 4)).save("still.gif")
        >>> file_kind("still.gif"), file_kind(skimage_gif), file_kind("cat.jpg")
        (None, 'video', None)
    """
    kind = media_kind(path)
    if kind == "video" and Path(path).suffix.lower() == ".gif":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                frames = int(getattr(image, "n_frames", 1))
        except (OSError, UnidentifiedImageError):
            return kind  # the video reader says what is wrong with it
        return kind if frames > 1 else None
    return kind


def check_media(
    loaded: LoadedModel,
    kind: MediaKind | Literal["image"],
    name: str,
    methods: Sequence[str] = (),
) -> None:
    """Refuse, in one line naming both, a model that does not take this kind of file, and
    methods whose maps have no picture for it.

    The model's input is read from its first convolution (``loaded.input_rank`` and
    ``input_channels``): ``nn.Conv2d`` takes images, ``nn.Conv3d`` clips and volumes,
    ``nn.Conv1d`` signals. A clip has 3 channels, a volume 1. A model without convolution is
    refused for media (its input cannot be told) and left alone for photos.

    Raises:
        GradCAMError: the ranks or channels differ, or a pixel-space method (Guided Backprop,
            Guided Grad-CAM, ...) is asked for on a clip, volume or signal.

    Examples:
        >>> check_media(gradcam.load_model("shapes"), "video", "clip.mp4")
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: clip.mp4 is a video (3-D: a clip), but model 'shapes' \
takes 2-D images (its first convolution is nn.Conv2d): choose a video model (--model r3d_18, \
...) or a FILE.py:FACTORY whose first layer is nn.Conv3d
    """
    rank = loaded.input_rank
    if rank is None:
        if kind == "image":
            return
        raise GradCAMError(
            f"{name} is a {kind}, but model {loaded.name!r} has no convolution to tell which "
            "input it takes: give a model whose first layer is nn.Conv1d, nn.Conv2d or nn.Conv3d"
        )
    wanted = INPUT_RANKS[kind]
    if rank != wanted:
        what = {
            "image": "an image (2-D)",
            "video": "a video (3-D: a clip)",
            "volume": "a volume (3-D)",
            "signal": "a signal (1-D)",
        }[kind]
        hint = {
            "image": "choose an image model (--model resnet50, ...)",
            "video": "choose a video model (--model r3d_18, ...) or a FILE.py:FACTORY whose "
            "first layer is nn.Conv3d",
            "volume": "choose a FILE.py:FACTORY whose first layer is nn.Conv3d",
            "signal": "choose a FILE.py:FACTORY whose first layer is nn.Conv1d",
        }[kind]
        raise GradCAMError(
            f"{name} is {what}, but model {loaded.name!r} takes {_RANK_WORDS[rank]} (its first "
            f"convolution is nn.Conv{rank}d): {hint}"
        )
    channels = _CHANNELS.get(kind)
    if channels is not None and loaded.input_channels not in (None, channels) and kind != "image":
        raise GradCAMError(
            f"{name} is a {kind} of {channels} channel{'s' * (channels > 1)}, but model "
            f"{loaded.name!r} takes {loaded.input_channels}"
        )
    if kind != "image":
        pixel = [m for m in methods if method_spec(m).kind == "pixel"]
        if pixel:
            raise GradCAMError(
                f"{', '.join(pixel)} give{'s' * (len(pixel) == 1)} pixel-space maps, drawn for "
                f"photos only: on a {kind}, choose heatmap methods (gradcam, gradcam++, ...)"
            )


def media_preprocess(loaded: LoadedModel, kind: MediaKind) -> MediaPreprocess:
    """How a file of ``kind`` becomes ``loaded``'s input.

    - video: a torchvision video model's own transform (:func:`video_preprocess`: clip length,
      resize, crop, Kinetics mean and std), else :class:`VideoPreprocess`'s defaults (16
      frames, 112 x 112, Kinetics mean and std); ``loaded.input_size`` ``(T, H, W)`` sets the
      clip length and the crop (the shorter side resized to the crop's);
    - volume: :class:`VolumePreprocess` (z-scored), resized to ``input_size`` ``(D, H, W)``
      when given;
    - signal: :class:`SignalPreprocess` (z-scored per channel), resampled to ``input_size``
      ``(L,)`` when given.

    Examples:
        >>> loaded = gradcam.load_model("r3d_18", "random", input_size=(4, 32, 40))
        >>> media_preprocess(loaded, "video").crop_size, media_preprocess(loaded, "video").mean
        ((32, 40), (0.43216, 0.394666, 0.37645))
    """
    size = loaded.input_size
    if kind == "video":
        base = video_preprocess(loaded.name) if loaded.name in video_models() else VideoPreprocess()
        if size is None:
            return base
        clip, height, width = size
        return dataclasses.replace(
            base, clip_len=clip, resize_size=(min(height, width),), crop_size=(height, width)
        )
    if kind == "volume":
        return VolumePreprocess(size=None if size is None else (size[0], size[1], size[2]))
    return SignalPreprocess(length=None if size is None else size[0])


def _video_peak(
    heat: Tensor, prep: VideoPreprocess, count: int, height: int, width: int, scale: float
) -> dict[str, int] | None:
    """The map's maximum as a video frame and ``(x, y)`` in the file's pixels."""
    found = peak_voxel(heat)
    if found is None:
        return None
    t, i, j = found
    x0, y0, x1, y1 = prep.crop_box(height, width)
    steps_y, steps_x = heat.shape[1], heat.shape[2]
    return {
        "frame": int(prep.frame_indices(count)[t]),
        "x": int((x0 + (j + 0.5) * (x1 - x0) / steps_x) * scale),
        "y": int((y0 + (i + 0.5) * (y1 - y0) / steps_y) * scale),
    }


#: Writes one map of a file: ``(folder, map, stem)`` to the files written and the peak.
_Writer = Callable[[Path, Tensor, str], tuple[list[Path], dict[str, Any] | None]]


def _read(
    kind: MediaKind,
    file: Path,
    loaded: LoadedModel,
    prep: Any,
    max_frames: Any,
    max_frame_pixels: Any,
    volume_index: int | None,
    video_formats: Any,
) -> tuple[Tensor, _Writer]:
    """Read ``file`` as ``kind`` into the model's input, and the writer of its maps."""
    if kind == "video":
        video = read_video(file, max_frames=max_frames, max_pixels=max_frame_pixels)

        def write_video(folder: Path, heat: Tensor, stem: str) -> tuple[list[Path], Any]:
            written = write_video_outputs(
                folder, video, heat, prep, stem=stem, formats=video_formats
            )
            count, height, width = video.frames.shape[:3]
            scale = video.source_size[0] / width
            return list(written), _video_peak(heat, prep, count, height, width, scale)

        return prep(video.frames), write_video
    if kind == "volume":
        volume = read_volume(file, index=volume_index)

        def write_volume(folder: Path, heat: Tensor, stem: str) -> tuple[list[Path], Any]:
            written = write_volume_outputs(folder, volume, heat, stem=stem)
            found = peak_voxel(resample_map(heat, tuple(volume.data.shape)))
            return list(written), None if found is None else {"voxel": list(found)}

        return prep(volume), write_volume
    signal = read_signal(file)
    x = prep(signal)
    channels = x.shape[1]
    if loaded.input_channels is not None and channels != loaded.input_channels:
        raise GradCAMError(
            f"{file.name} is a signal of {channels} channels, but model {loaded.name!r} "
            f"takes {loaded.input_channels}"
        )
    if channels > MAX_DRAWN_CHANNELS:
        raise GradCAMError(
            f"{file.name}: {channels} channels, at most {MAX_DRAWN_CHANNELS} are drawn"
        )

    def write_signal(folder: Path, heat: Tensor, stem: str) -> tuple[list[Path], Any]:
        written = write_signal_outputs(folder, signal, heat, stem=stem)
        found = peak_voxel(resample_signal_map(heat, signal.data.shape[1]).view(1, 1, -1))
        return list(written), None if found is None else {"sample": found[2]}

    return x, write_signal


def explain_media(
    loaded: LoadedModel,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("gradcam",),
    classes: Sequence[int] | None = None,
    top_k: int = 1,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    volume_index: int | None = None,
    source: str | None = None,
    max_frames: int = MAX_FRAMES,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    video_formats: tuple[str, ...] = (".gif", ".mp4"),
) -> dict[str, Any]:
    """Explain one video, volume or signal file with ``loaded`` and write what a user opens.

    Args:
        loaded: a model from :func:`gradcam.load_model` that takes the file's rank (a
            torchvision video model, or a ``FILE.py:FACTORY``; ``input_size`` sets the grid).
        path: the file: ``.mp4``, ``.avi``, ``.webm``, ``.mov``, ``.mkv``, animated ``.gif``;
            ``.nii``, ``.nii.gz``, 3-D or 4-D ``.npy``; ``.csv``, 1-D or 2-D ``.npy``.
        out_dir: the folder of this file's results.
        methods: heatmap methods from :func:`gradcam.methods.methods`.
        classes: class ids to explain; ``None`` explains the ``top_k`` best.
        top_k: how many of the best classes to explain.
        options: per method name, its options.
        volume_index: which volume of a 4-D volume file.
        source: the file's name in ``summary.json`` (default: ``path``).
        max_frames: a video with more frames is refused (:func:`gradcam.media.video.read_video`;
            the web demo's cap is lower).
        max_frame_pixels: video frames with more pixels are decoded at reduced size, which
            the overlays then have.
        video_formats: the animated overlays written for a video (``.gif``, ``.webp``,
            ``.mp4``; :func:`gradcam.media.video.write_video_overlay`).

    Returns:
        The summary written to ``summary.json``: the file, its kind, the model, layer, input
        shape, the top-5 predictions and, per map, its method, rank, class, score, peak (video:
        frame and file pixel; volume: voxel of the file; signal: sample) and files.

    Raises:
        MediaLoadError: the file is not a video, volume or signal, or is unreadable (truncated,
            NaN voxels, a wrong NIfTI header, ...; see the readers).
        GradCAMError: the model does not take this kind of file (:func:`check_media`), a
            signal with more channels than the model takes or than are drawn, an input too
            small for the model, a wrong class.

    Examples:
        >>> _ = Path("nets.py").write_text(
        ...     "from torch import nn\\n"
        ...     "def signal_net():\\n"
        ...     "    return nn.Sequential(nn.Conv1d(1, 4, 5), nn.ReLU(), "
        ...     "nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2))\\n"
        ... )
        >>> np.save("ecg.npy", np.sin(np.linspace(0, 20, 400))[None])
        >>> loaded = gradcam.load_model("nets.py:signal_net", "random")  # a Conv1d model
        >>> summary = explain_media(loaded, "ecg.npy", "out/ecg")
        >>> summary["kind"], summary["input_shape"], summary["maps"][0]["files"]
        ('signal', [1, 1, 400], ['gradcam_1_class-0_map.png', 'gradcam_1_class-0_map.npy'])
    """
    file = Path(path)
    kind = file_kind(file)
    if kind is None:
        raise MediaLoadError(f"{file.name}: not a video, volume or signal file")
    names = list(dict.fromkeys(methods))
    check_media(loaded, kind, file.name, names)
    prep = media_preprocess(loaded, kind)
    output_folder(out_dir, create=False)
    x, write = _read(
        kind, file, loaded, prep, max_frames, max_frame_pixels, volume_index, video_formats
    )
    layer = resolve_layer(loaded.module, loaded.default_layer)
    results = explain_input(
        loaded, x, methods=names, classes=classes, top_k=top_k, layer=layer, options=options
    )
    # Every map is computed before the first file is written.
    planned: list[tuple[str, int, int, str, float, Tensor]] = []
    for name, result in results.items():
        for k in range(result.classes.shape[1]):
            class_id = int(result.classes[0, k])
            label = loaded.class_names[class_id] if class_id >= 0 else ""
            heat = torch.nan_to_num(result.maps[0, k].detach().float()).clamp(0.0, 1.0)
            planned.append((name, k + 1, class_id, label, float(result.scores[0, k]), heat))
    folder = output_folder(out_dir)
    maps = []
    for name, rank, class_id, label, score, heat in planned:
        stem = f"{name}_{rank}_{slug(label or f'target-{rank}', fallback='target')}"
        peak: Any
        written, peak = write(folder, heat, stem)
        maps.append(
            {
                "kind": name,
                "rank": rank,
                "class": class_id,
                "name": label,
                "score": round(score, 5),
                "peak": peak,
                "files": [p.name for p in written],
            }
        )
    summary = {
        "file": str(path) if source is None else source,
        "kind": kind,
        "model": loaded.name,
        "layer": layer.name,
        "input_shape": list(x.shape),
        "predictions": top_predictions(loaded, results),
        "maps": maps,
    }
    text = json.dumps(summary, indent=2) + "\n"
    write_atomic(folder / "summary.json", lambda tmp: tmp.write_text(text))
    return summary
