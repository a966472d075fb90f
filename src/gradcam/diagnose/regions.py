"""Annotated regions as masks at the model's input size, and how much of a map falls on them.

Annotations are in the photo's pixels (boxes inclusive, masks of the photo's size); maps are at
the model's input size (the photo scaled, aspect kept). A region is drawn at the photo's size
and scaled to the input with nearest-neighbour sampling, so both meet on the map's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from gradcam.evaluate.datasets import Annotation

__all__ = ["mass_inside", "region_mask"]


def region_mask(
    annotations: Sequence[Annotation], image_size: tuple[int, int], size: tuple[int, int]
) -> np.ndarray | None:
    """The union of the annotations' masks (or boxes, where an instance has no mask), as a
    boolean (H, W) array of ``size`` = (H, W); ``None`` when nothing is annotated.

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
            x0, y0, x1, y1 = ann.box
            union[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
            found = True
    if not found:
        return None
    if (height, width) == tuple(size):
        return union
    scaled = Image.fromarray(union).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(scaled, dtype=bool)


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
