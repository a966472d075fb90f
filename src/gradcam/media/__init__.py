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

__all__: list[str] = []
