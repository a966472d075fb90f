"""Annotated regions as masks at the model's input size, and how much of a map falls on them.

Annotations are in the photo's pixels (boxes inclusive, masks of the photo's size); maps are at
the model's input size (the photo scaled, aspect kept). A region is drawn at the photo's size
and scaled to the input with nearest-neighbour sampling, so both meet on the map's grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from gradcam.errors import GradCAMError
from gradcam.evaluate.datasets import Annotation

__all__ = ["clip_box", "mass_inside", "region_mask"]


def region_mask(
    annotations: Sequence[Annotation], image_size: tuple[int, int], size: tuple[int, int]
) -> np.ndarray | None:
    """The union of the annotations' masks (or boxes, where an instance has no mask), as a
    boolean (H, W) array of ``size`` = (H, W); ``None`` when nothing is annotated. Boxes are
    clipped to the photo (:func:`clip_box`).

    Raises:
        GradCAMError: a box with a coordinate that is not finite or with no pixel in the
            photo, or a region with no pixel at all.

    Args:
        annotations: the instances of one class or region kind.
        image_size: ``(width, height)`` of the photo the annotations refer to.
        size: ``(H, W)`` of the map.

    Examples:
        >>> mask = region_mask([Annotation(0, box=(0, 0, 4, 9))], (10, 10), (2, 2))
        >>> mask.tolist()
        [[True, False], [True, False]]
    """
    width, height = image_size
    union = np.zeros((height, width), dtype=bool)
    found = False
    for ann in annotations:
        if ann.mask is not None and ann.mask.shape == (height, width):
            union |= ann.mask.astype(bool)
            found = True
        elif ann.box is not None:
            x0, y0, x1, y1 = clip_box(ann.box, image_size)
            union[y0 : y1 + 1, x0 : x1 + 1] = True
            found = True
    if not found:
        return None
    if not union.any():
        raise GradCAMError(f"the region lies wholly outside the {width}x{height} image")
    if (height, width) == tuple(size):
        return union
    scaled = Image.fromarray(union).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(scaled, dtype=bool)


def clip_box(box: Sequence[float], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """An inclusive ``(x0, y0, x1, y1)`` box in pixels clipped to a ``(width, height)`` image.

    Without clipping, a negative end would count from the far side of the image (a box
    wholly above and left of the image would cover most of it).

    Raises:
        GradCAMError: a coordinate that is not a finite number, or a box with no pixel in
            the image.

    Examples:
        >>> clip_box((-5, 2, 30, 3), (10, 10))
        (0, 2, 9, 3)
        >>> clip_box((-50, -50, -41, -41), (10, 10))
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: box (-50, -50, -41, -41) lies wholly outside the 10x10 image
    """
    width, height = image_size
    if len(box) != 4 or not all(
        isinstance(v, (int, float, np.number)) and math.isfinite(v) for v in box
    ):
        raise GradCAMError(f"box {tuple(box)} must be four finite numbers (x0, y0, x1, y1)")
    x0, y0, x1, y1 = (math.floor(v) for v in box)
    if x1 < 0 or y1 < 0 or x0 >= width or y0 >= height or x1 < x0 or y1 < y0:
        raise GradCAMError(f"box {tuple(box)} lies wholly outside the {width}x{height} image")
    return max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)


def mass_inside(heat: Tensor | np.ndarray, mask: np.ndarray) -> float:
    """The fraction of a non-negative map's mass on a region: ``sum(L * M) / sum(L)``.

    A map without mass (all zero) puts nothing anywhere: 0.0, never NaN. Negative values
    (a map before its ReLU) are clipped to 0 first.

    Examples:
        >>> heat = np.array([[3.0, 1.0], [0.0, 0.0]])
        >>> mass_inside(heat, np.array([[True, False], [False, False]]))
        0.75
    """
    values = heat.detach().cpu().double().numpy() if isinstance(heat, Tensor) else heat
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    if values.shape != mask.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the map's {values.shape}")
    total = float(values.sum())
    return float(values[mask].sum()) / total if total > 0 else 0.0
