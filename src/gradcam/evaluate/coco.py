"""COCO's file format, in one place: run-length encoded masks, boxes, and the JSON writer.

* :func:`encode_rle` / :func:`decode_rle`: COCO's run-length encoding of a boolean mask, as a
  list of counts or as the compressed string that ``pycocotools`` writes;
* :func:`coco_bbox` / :func:`box_from_bbox`: COCO's ``[x, y, width, height]`` boxes to and
  from this project's 0-based inclusive pixel boxes;
* :func:`write_coco`: an annotation file, written atomically.

:func:`gradcam.evaluate.datasets.read_coco` reads the files; the synthetic benchmark
(:func:`gradcam.evaluate.datasets.write_benchmark`) writes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradcam.evaluate.metrics import Box

__all__ = ["box_from_bbox", "coco_bbox", "decode_rle", "encode_rle", "write_coco"]

_OFFSET = 48  # the compressed string stores 6-bit groups as the characters '0' to 'o'


def _runs(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return [int(r) for r in runs]


def _compress(runs: Sequence[int]) -> str:
    # pycocotools' rleToString: from the fourth count on, each is stored as the difference
    # from the count two before it (the same kind of run), then in 5-bit groups, low first,
    # with bit 5 set while more groups follow and bit 4 of the last group as the sign.
    chars = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            chars.append(chr((group | 0x20 if more else group) + _OFFSET))
    return "".join(chars)


def _decompress(counts: str) -> list[int]:
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position == len(counts):
                raise ValueError(f"truncated RLE string: it ends inside count {len(runs) + 1}")
            group = ord(counts[position]) - _OFFSET
            if not 0 <= group < 64:
                raise ValueError(
                    f"invalid character {counts[position]!r} at {position} of the RLE string"
                )
            value |= (group & 0x1F) << (5 * shift)
            more = bool(group & 0x20)
            position += 1
            shift += 1
            if not more and group & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def encode_rle(mask: np.ndarray, *, compressed: bool = False) -> dict[str, Any]:
    """COCO's run-length encoding of a boolean (H, W) mask.

    Runs alternate background and foreground, starting with background (so the first count
    is 0 when the first pixel is foreground), over the pixels in column-major order. With
    ``compressed``, the counts are the string ``pycocotools.mask.encode`` writes: from the
    fourth count on each is stored as its difference from the count two before it, in 5-bit
    groups (low first) offset by 48 into ASCII, bit 5 meaning "more groups follow".

    Args:
        mask: a 2-D array, read as booleans.
        compressed: write ``counts`` as the compressed string instead of a list of ints.

    Returns:
        ``{"counts": [...] or "...", "size": [H, W]}``.

    Raises:
        ValueError: if ``mask`` is not 2-D.

    Examples:
        >>> encode_rle(np.array([[0, 1], [1, 1]], dtype=bool))
        {'counts': [1, 3], 'size': [2, 2]}
        >>> encode_rle(np.array([[0, 1], [1, 1]], dtype=bool), compressed=True)
        {'counts': '13', 'size': [2, 2]}
    """
    array = np.asarray(mask, dtype=bool)
    if array.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {array.shape}")
    runs = _runs(array)
    counts: list[int] | str = _compress(runs) if compressed else runs
    return {"counts": counts, "size": [int(array.shape[0]), int(array.shape[1])]}


def decode_rle(counts: str | Sequence[int], height: int, width: int) -> np.ndarray:
    """Decode a COCO run-length encoding (compressed string or list of counts) to a mask.

    The inverse of :func:`encode_rle`, for either form of ``counts``.

    Args:
        counts: the compressed string, or the run lengths (background first).
        height: the mask's rows.
        width: the mask's columns.

    Returns:
        A boolean (height, width) mask.

    Raises:
        ValueError: naming the problem: a truncated string or one with a character outside
            COCO's alphabet, a negative or non-integer count, or counts that do not cover
            exactly ``height * width`` pixels.

    Examples:
        >>> decode_rle([1, 2, 3], 2, 3).astype(int).tolist()
        [[0, 1, 0], [1, 0, 0]]
        >>> decode_rle("123", 2, 3).astype(int).tolist()
        [[0, 1, 0], [1, 0, 0]]
        >>> decode_rle("12P", 2, 3)  # 'P' says another 5-bit group follows, and none does
        Traceback (most recent call last):
        ...
        ValueError: truncated RLE string: it ends inside count 3
    """
    if isinstance(counts, str):
        runs = _decompress(counts)
    else:
        runs = list(counts)
        if not all(isinstance(r, int | np.integer) and not isinstance(r, bool) for r in runs):
            raise ValueError("RLE counts must be integers")
    if any(r < 0 for r in runs):
        raise ValueError("RLE counts must not be negative")
    covered = sum(runs)
    if covered != height * width:
        raise ValueError(f"RLE counts cover {covered} pixels, not {height}x{width}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(width, height).T


def coco_bbox(box: Box) -> list[int]:
    """COCO's ``[x, y, width, height]`` of a 0-based inclusive pixel box.

    Examples:
        >>> coco_bbox((2, 3, 6, 8))
        [2, 3, 5, 6]
    """
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def box_from_bbox(bbox: Sequence[float]) -> Box:
    """The 0-based inclusive pixel box of COCO's ``[x, y, width, height]`` (rounded).

    The inverse of :func:`coco_bbox` on whole pixels; a box narrower than a pixel keeps one.

    Raises:
        ValueError: if ``bbox`` is not four finite numbers with a non-negative size.

    Examples:
        >>> box_from_bbox([2.0, 3.0, 5.0, 6.0])
        (2, 3, 6, 8)
    """
    if isinstance(bbox, str | bytes) or len(bbox) != 4:
        raise ValueError(f"bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not all(np.isfinite((x, y, w, h))) or w < 0 or h < 0:
        raise ValueError(f"bbox must be four finite numbers with width, height >= 0, got {bbox}")
    return (round(x), round(y), max(round(x + w) - 1, round(x)), max(round(y + h) - 1, round(y)))


def write_coco(
    path: str | os.PathLike[str],
    images: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a COCO annotation file; readers never see it half written.

    Args:
        path: the JSON file to write (its folder is created).
        images: ``{"id", "file_name", "width", "height"}`` per image.
        categories: ``{"id", "name"}`` per class.
        annotations: ``{"id", "image_id", "category_id", "bbox", ...}`` per object.
        info: COCO's free-form ``info`` record.

    Returns:
        The path written.

    Examples:
        >>> path = write_coco("coco/instances.json", [], [{"id": 0, "name": "cat"}], [])
        >>> sorted(json.loads(path.read_text()))
        ['annotations', 'categories', 'images', 'info']
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "info": dict(info or {}),
        "images": [dict(i) for i in images],
        "categories": [dict(c) for c in categories],
        "annotations": [dict(a) for a in annotations],
    }
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    partial.replace(target)
    return target
