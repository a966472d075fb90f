"""The Video tab's callback as a plain, typed function: no Gradio in here.

A :class:`VideoSession` serves one video model (a torchvision Kinetics-400 classifier such as
``r3d_18``, or a user's ``nn.Conv3d`` model) to every visitor of the page. For an uploaded
short clip and a class (default: the top-1 prediction) it runs
:func:`gradcam.explain_media.explain_media`, the same call as ``gradcam explain clip.mp4``:
the model's own clip sampling and preprocessing, Grad-CAM ``L^c = ReLU(sum_k alpha_k^c A^k)``
on the clip's ``(T, h, w)`` grid at the model's last 3-D convolutional block, put back on the
video's frames and blended over them as an animated WebP (which a browser plays), an MP4, a
key frames strip and the maps per frame (``.npz``). WebP rather than GIF: Pillow encodes an
animated GIF frame by frame with a palette search, 20 times slower (60 frames of 320 x 240:
54 s against 2.6 s on the shared 2-core machine), where the demo's visitor waits for it.

Limits: uploads are at most ``max_bytes``; clips of more than :data:`MAX_VIDEO_FRAMES` frames
are refused in one line (the overlay is drawn and encoded frame by frame, so its cost grows
with the clip); frames are decoded at most :data:`MAX_VIDEO_FRAME_PIXELS` pixels (larger ones
at reduced size). Results are cached per (upload's SHA-256, class) and their files kept in
the session's folder, at most ``max_folder_bytes`` (least recently written first).
A request holds the model's lock for the whole call (decoding, the passes and writing the
files are one library call), so video requests run one at a time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gradcam.demo.session import (
    FOLDER_PREFIX,
    MAX_FOLDER_BYTES,
    Prediction,
    prune_folder,
    requested_class,
    upload_key,
)
from gradcam.errors import GradCAMError, MediaLoadError
from gradcam.explain_media import check_media, explain_media, file_kind
from gradcam.media.video import VIDEO_SUFFIXES
from gradcam.methods.registry import GRAD_CAM
from gradcam.models import LoadedModel
from gradcam.util import LRU

__all__ = [
    "MAX_VIDEO_FRAMES",
    "MAX_VIDEO_FRAME_PIXELS",
    "OVERLAY_FORMATS",
    "VideoSession",
    "VideoViews",
]

#: Most frames of an uploaded clip (4 s at 30 fps, 12 s at 10 fps); a longer one is refused
#: in one line. Every frame is overlaid and encoded into the GIF and the MP4.
MAX_VIDEO_FRAMES = 120

#: Pixels kept a frame of an uploaded clip (320 x 240); larger frames are decoded at reduced
#: size (both sides divided by one integer). Torchvision's video models see 112 to 224 pixels.
MAX_VIDEO_FRAME_PIXELS = 320 * 240

#: The overlays written: the animated WebP shown on the page, the MP4 to download.
OVERLAY_FORMATS = (".webp", ".mp4")


@dataclass(frozen=True)
class VideoViews:
    """What the Video tab shows for one clip and class.

    Attributes:
        key: SHA-256 of the uploaded file's bytes.
        predictions: the model's top-5 classes for the clip.
        class_id, class_name, score: the explained class and its score ``y^c``.
        layer: the dotted name of the layer ``A``.
        overlay: the animated WebP of the map over every frame.
        video: the same as MP4.
        key_frames: eight overlaid frames side by side (PNG).
        maps: the maps per clip frame (``.npz``: ``maps``, ``frame_index``, ``time_s``, ``box``).
        peak: the map's maximum: ``{"frame", "x", "y"}`` in the file's frames and pixels.
        input_shape: the model's input ``(1, 3, T, h, w)``.
        seconds: time spent (0 when cached).
        cached: whether the views came from the cache.
    """

    key: str
    predictions: tuple[Prediction, ...]
    class_id: int
    class_name: str
    score: float
    layer: str
    overlay: Path
    video: Path
    key_frames: Path
    maps: Path
    peak: dict[str, int] | None
    input_shape: tuple[int, ...]
    seconds: float
    cached: bool = False

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file of the views."""
        return (self.overlay, self.video, self.key_frames, self.maps)


class VideoSession:
    """One video model served to every visitor: the Video tab's callback, without a server.

    Args:
        loaded: a model taking clips (:func:`gradcam.load_model` of ``"r3d_18"``, ...).
        max_bytes: largest file accepted, in bytes.
        max_frames: most frames of a clip (:data:`MAX_VIDEO_FRAMES`).
        max_frame_pixels: pixels kept a frame (:data:`MAX_VIDEO_FRAME_PIXELS`).
        folder: where the files are written (default: a new temporary folder, deleted by
            :meth:`close`).
        max_folder_bytes: files kept in ``folder``, in bytes.
        cache_size: results kept in memory, per (upload, class).

    Raises:
        GradCAMError: ``loaded`` does not take clips (:func:`gradcam.explain_media.check_media`).

    Examples:
        >>> loaded = gradcam.load_model("r3d_18", "random", input_size=(4, 32, 32))
        >>> session = VideoSession(loaded)
        >>> views = session.explain(skimage_gif)      # the top-1 class
        >>> views.overlay.suffix, views.input_shape
        ('.webp', (1, 3, 4, 32, 32))
        >>> session.explain(skimage_gif).cached
        True
        >>> session.close()
        >>> VideoSession(shapes)
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: the Video tab's clip is a video (3-D: a clip), but model \
'shapes' takes 2-D images (its first convolution is nn.Conv2d): choose a video model \
(--model r3d_18, ...) or a FILE.py:FACTORY whose first layer is nn.Conv3d
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        max_frames: int = MAX_VIDEO_FRAMES,
        max_frame_pixels: int = MAX_VIDEO_FRAME_PIXELS,
        folder: str | os.PathLike[str] | None = None,
        max_folder_bytes: int = MAX_FOLDER_BYTES,
        cache_size: int = 16,
    ) -> None:
        check_media(loaded, "video", "the Video tab's clip", [GRAD_CAM])
        self.loaded = loaded
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self.max_frame_pixels = max_frame_pixels
        self.max_folder_bytes = max_folder_bytes
        self._owns_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._model_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._views: LRU[tuple[str, int | None], VideoViews] = LRU(cache_size)

    def close(self) -> None:
        """Delete the folder if this session made it (a folder given is left)."""
        if self._owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's class names, by class id."""
        return self.loaded.class_names

    def _known(self, key: tuple[str, int | None]) -> VideoViews | None:
        with self._cache_lock:
            known = self._views.get(key)
        if known is None:
            return None
        try:  # the files may have been pruned since: then the clip is explained again
            for path in known.files:
                os.utime(path)
        except FileNotFoundError:
            return None
        return replace(known, seconds=0.0, cached=True)

    def explain(
        self, path: str | os.PathLike[str] | None, class_name: str | int | None = None
    ) -> VideoViews:
        """Grad-CAM of one class over an uploaded clip: the animated overlay and the top-5.

        Args:
            path: the uploaded file (``.mp4``, ``.webm``, ``.avi``, ``.mov``, ``.mkv``, an
                animated ``.gif``).
            class_name: a class name or id; ``None`` or ``""`` explains the top-1 prediction.

        Raises:
            GradCAMError: no file, too large, not a video, truncated or corrupt
                (:class:`~gradcam.errors.MediaLoadError`), more than ``max_frames`` frames,
                an unknown class; one line naming the upload.
        """
        started = time.perf_counter()
        name, digest = upload_key(path, self.max_bytes, "no clip given: upload a short video")
        shown = os.path.basename(name)
        if file_kind(name) != "video":
            raise MediaLoadError(
                f"{shown}: not a video clip: upload {', '.join(VIDEO_SUFFIXES)} "
                "(an animated GIF; a photo goes to the Classification tab)"
            )
        class_id = requested_class(self.loaded, class_name)
        known = self._known((digest, class_id))
        if known is not None:
            return known
        which = "top" if class_id is None else str(class_id)
        out = self.folder / f"{digest[:16]}_{which}"
        try:
            with self._model_lock:
                summary = explain_media(
                    self.loaded,
                    name,
                    out,
                    classes=None if class_id is None else [class_id],
                    source=shown,
                    max_frames=self.max_frames,
                    max_frame_pixels=self.max_frame_pixels,
                    video_formats=OVERLAY_FORMATS,
                )
        except GradCAMError as exc:
            # The server's temporary path means nothing to the visitor: name the upload only.
            raise type(exc)(str(exc).replace(name, shown)) from None
        views = self._views_of(digest, out, summary, started)
        with self._cache_lock:
            self._views.put((digest, class_id), views)
            self._views.put((digest, views.class_id), views)
        prune_folder(self.folder, self.max_folder_bytes, keep=views.overlay)
        return views

    @staticmethod
    def _views_of(digest: str, out: Path, summary: dict[str, Any], started: float) -> VideoViews:
        entry = summary["maps"][0]
        files = {Path(f).name.rsplit("_", 1)[-1]: out / f for f in entry["files"]}
        predictions = tuple(
            Prediction(int(p["class"]), str(p["name"]), float(p["score"]), float(p["probability"]))
            for p in summary["predictions"]
        )
        return VideoViews(
            key=digest,
            predictions=predictions,
            class_id=int(entry["class"]),
            class_name=str(entry["name"]),
            score=float(entry["score"]),
            layer=str(summary["layer"]),
            overlay=files["overlay.webp"],
            video=files["overlay.mp4"],
            key_frames=files["keyframes.png"],
            maps=files["maps.npz"],
            peak=entry["peak"],
            input_shape=tuple(int(n) for n in summary["input_shape"]),
            seconds=time.perf_counter() - started,
        )

    def summary(self, views: VideoViews) -> str:
        """One line of Markdown: class, score, layer, the clip's grid, the peak, the time."""
        _, _, steps, height, width = views.input_shape
        where = "from the cache" if views.cached else f"in {views.seconds:.1f} s"
        peak = (
            ""
            if views.peak is None
            else f"; peak at frame {views.peak['frame']}, ({views.peak['x']}, {views.peak['y']})"
        )
        return (
            f"**{views.class_name}** (class {views.class_id}, score {views.score:.2f}): "
            f"Grad-CAM at layer `{views.layer}` on a clip of {steps} frames of "
            f"{height}×{width}{peak}; computed {where}."
        )
