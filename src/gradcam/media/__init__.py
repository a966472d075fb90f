"""The files users have beyond photos: video clips, 3-D volumes and 1-D signals.

Each module reads one kind of file into plain tensors with bounded memory, turns it into the
model's input, and writes what a user opens afterwards; nothing here runs a model, so the
writers take any maps in [0, 1] (the ``.maps`` of a result, or tensors you make):

- :mod:`gradcam.media.video`: ``.mp4``, ``.avi``, ``.webm``, ``.mov``, ``.mkv`` and animated
  ``.gif`` through PyAV; torchvision's video transforms per model; an animated overlay (GIF,
  WebP, MP4), a strip of key frames and the maps per frame.
- :mod:`gradcam.media.volume`: ``.nii`` / ``.nii.gz`` through nibabel and ``.npy``, keeping the
  affine and header; the map as a NIfTI file on the input's grid and the three slices through
  its peak.
- :mod:`gradcam.media.signal`: ``.npy`` and ``.csv`` series; the signal drawn coloured by its
  map.

PyAV and nibabel come with the ``media`` extra (``pip install gradcam[media]``); they are
imported only when a file is read or written. Every refusal is a one-line
:class:`~gradcam.errors.MediaLoadError`, and every file is written through
:func:`gradcam.outputs.write_atomic`, so nothing is ever written half.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from gradcam.errors import MediaLoadError

__all__ = ["media_kind"]

MediaKind = Literal["video", "volume", "signal"]


def media_kind(path: str | os.PathLike[str]) -> MediaKind | None:
    """Which reader a file needs: ``"video"``, ``"volume"``, ``"signal"``, or ``None`` (a photo
    or anything else, left to :func:`gradcam.load_image`).

    By suffix (see ``VIDEO_SUFFIXES``, ``VOLUME_SUFFIXES``, ``SIGNAL_SUFFIXES``); a ``.npy``
    file by its number of dimensions, read from its header only: 1 or 2 is a signal
    ``(L,)`` / ``(C, L)``, 3 or 4 a volume.

    Raises:
        MediaLoadError: a ``.npy`` file whose header cannot be read, or of another rank.

    Examples:
        >>> np.save("ecg.npy", np.zeros((2, 100))); np.save("ct.npy", np.zeros((4, 4, 4)))
        >>> [media_kind(p) for p in ["a.MP4", "b.gif", "c.nii.gz", "ecg.npy", "ct.npy", "d.jpg"]]
        ['video', 'video', 'volume', 'signal', 'volume', None]
    """
    from gradcam.media.signal import SIGNAL_SUFFIXES
    from gradcam.media.video import VIDEO_SUFFIXES
    from gradcam.media.volume import VOLUME_SUFFIXES

    file = Path(path)
    name = file.name.lower()
    suffix = ".nii.gz" if name.endswith(".nii.gz") else file.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == ".npy":
        import numpy as np

        try:
            rank = np.load(file, mmap_mode="r", allow_pickle=False).ndim
        except (OSError, ValueError, EOFError) as exc:
            raise MediaLoadError(f"{file.name}: not a readable .npy array ({exc})") from None
        if rank in (1, 2):
            return "signal"
        if rank in (3, 4):
            return "volume"
        raise MediaLoadError(
            f"{file.name}: a {rank}-D array is neither a signal (1-D or 2-D) nor a volume "
            "(3-D or 4-D)"
        )
    if suffix in VOLUME_SUFFIXES:
        return "volume"
    if suffix in SIGNAL_SUFFIXES:
        return "signal"
    return None
