"""Post-processing of maps, separate from the methods: upsample, normalize, peak, box.

:func:`peak_point` and :func:`region_box` take maps of any rank; their coordinates
come fastest axis first, so an (h, w) map gives ``(x, y)`` and a (d, h, w) volume or (t, h,
w) clip ``(x, y, z)`` or ``(x, y, t)``.

All functions are pure: they return new tensors and never modify their input.

:func:`upsample` and :func:`normalize` take maps of any spatial rank, one code path for all (as
MONAI's CAMs do): (..., L) signals, (..., H, W) images and (..., D, H, W) volumes or (..., T, H,
W) clips. The rank picks the interpolation (:data:`INTERPOLATIONS`: linear, bilinear,
trilinear) and the axes normalized over.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "INTERPOLATIONS",
    "bounding_box",
    "interpolation",
    "normalize",
    "peak",
    "peak_point",
    "region_box",
    "upsample",
]

#: The interpolation :func:`upsample` uses for 1, 2 and 3 spatial dimensions.
INTERPOLATIONS = {1: "linear", 2: "bilinear", 3: "trilinear"}


def interpolation(rank: int) -> str:
    """The ``F.interpolate`` mode for maps of ``rank`` spatial dimensions.

    Raises:
        ValueError: for a rank other than 1, 2 or 3.

    Examples:
        >>> interpolation(1), interpolation(3)
        ('linear', 'trilinear')
    """
    if rank not in INTERPOLATIONS:
        raise ValueError(f"maps must have 1, 2 or 3 spatial dimensions, got {rank}")
    return INTERPOLATIONS[rank]


def upsample(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """Resize (..., *s) maps to (..., *size), as the paper does before overlaying: bilinearly
    for (h, w) maps, linearly for (l,) and trilinearly for (d, h, w) (``align_corners=False``).

    The number of spatial dimensions is ``len(size)``.

    Examples:
        >>> upsample(torch.ones(1, 2, 7, 7), (224, 224)).shape
        torch.Size([1, 2, 224, 224])
        >>> upsample(torch.ones(1, 2, 2, 7, 7), (8, 112, 112)).shape  # a clip's (T, H, W)
        torch.Size([1, 2, 8, 112, 112])
    """
    rank = len(size)
    lead = maps.shape[: maps.dim() - rank]
    flat = maps.reshape(-1, 1, *maps.shape[maps.dim() - rank :]).float()
    out = F.interpolate(flat, size=size, mode=interpolation(rank), align_corners=False)
    return out.reshape(*lead, *size)


def normalize(maps: Tensor, rank: int = 2) -> Tensor:
    """Min-max normalize each map over its last ``rank`` (spatial) dimensions to [0, 1]; a
    constant map becomes all zeros (never NaN).

    Examples:
        >>> normalize(torch.tensor([[1.0, 3.0]]))
        tensor([[0., 1.]])
        >>> normalize(torch.tensor([[1.0, 3.0], [2.0, 2.0]]), rank=1)  # two signals
        tensor([[0., 1.],
                [0., 0.]])
    """
    axes = tuple(range(maps.dim() - rank, maps.dim()))
    low = maps.amin(dim=axes, keepdim=True)
    span = maps.amax(dim=axes, keepdim=True) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))


def peak_point(values: Tensor | np.ndarray) -> tuple[int, ...] | None:
    """Where a map of any rank points: the coordinates of its maximum, fastest axis first
    (``(x, y)`` of an (h, w) map, ``(x, y, z)`` of a (d, h, w) volume, ``(x, y, t)`` of a
    (t, h, w) clip), or ``None`` when it points nowhere.

    The one rule every caller shares (the explain summary, the pointing game, the
    vision-language pointing scores): a map that is empty, has no finite value, or is constant
    (all zeros, say) has no evidence to locate and points nowhere; NaN and infinite values are
    ignored; when several positions share the maximum, the first in row-major order is taken.

    Examples:
        >>> v = torch.zeros(3, 4, 6); v[2, 1, 5] = 1.0
        >>> peak_point(v)
        (5, 1, 2)
    """
    array = np.asarray(
        values.detach().cpu().float() if isinstance(values, Tensor) else values, dtype=np.float64
    )
    if array.ndim < 1:
        raise ValueError(f"a map needs at least one axis, got shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.any():
        return None
    masked = np.where(finite, array, -np.inf)
    top = masked.max()
    if top == array[finite].min():
        return None
    index = np.unravel_index(int(np.argmax(masked)), array.shape)
    return tuple(int(i) for i in reversed(index))


def peak(map2d: Tensor | np.ndarray) -> tuple[int, int] | None:
    """Where an (h, w) map points: ``(x, y)`` of its maximum, or ``None`` when it points
    nowhere (:func:`peak_point`'s rule, for images).

    Examples:
        >>> m = torch.zeros(4, 6); m[1, 2] = m[3, 0] = 5.0
        >>> peak(m), peak(torch.zeros(4, 6)), peak(torch.full((4, 6), 0.3))
        ((2, 1), None, None)
    """
    if np.ndim(map2d) != 2:
        raise ValueError(f"peak needs a (h, w) map, got shape {tuple(np.shape(map2d))}")
    point = peak_point(map2d)
    return None if point is None else (point[0], point[1])


def region_box(values: Tensor | np.ndarray, threshold: float = 0.15) -> tuple[int, ...]:
    """The paper's localization box (section 4.1) around a non-negative map of any rank.

    Binarize at ``threshold`` times the map's maximum, keep the single largest segment
    connected through faces, edges and corners (8-connected in 2-D, 26-connected in 3-D; the
    first in label order on ties), and return its box, inclusive, lows then highs, fastest
    axis first: ``(x0, y0, x1, y1)`` of an (h, w) map, ``(x0, y0, z0, x1, y1, z1)`` of a (d,
    h, w) volume or ``(x0, y0, t0, x1, y1, t1)`` of a (t, h, w) clip. An all-zero map has no
    evidence: its box is the whole map.

    Examples:
        >>> v = torch.zeros(4, 8, 8); v[1:3, 2:4, 3:6] = 1.0; v[0, 7, 7] = 1.0
        >>> region_box(v)
        (3, 2, 1, 5, 3, 2)
    """
    array = np.asarray(values.detach().cpu().float() if isinstance(values, Tensor) else values)
    top = float(array.max()) if array.size else 0.0
    if not top > 0:
        return (0,) * array.ndim + tuple(n - 1 for n in reversed(array.shape))
    from scipy import ndimage  # here: `gradcam --help` and `import gradcam` need no scipy

    labels, count = ndimage.label(array >= threshold * top, structure=np.ones((3,) * array.ndim))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    where = np.nonzero(labels == int(np.argmax(sizes)))
    lows = tuple(int(axis.min()) for axis in reversed(where))
    highs = tuple(int(axis.max()) for axis in reversed(where))
    return lows + highs


def bounding_box(map2d: Tensor | np.ndarray, threshold: float = 0.15) -> tuple[int, int, int, int]:
    """The paper's localization box (section 4.1) around a non-negative (h, w) map:
    ``(x0, y0, x1, y1)`` in pixels, inclusive (:func:`region_box` for images).

    Examples:
        >>> m = torch.zeros(8, 8); m[2:4, 3:6] = 1.0
        >>> bounding_box(m)
        (3, 2, 5, 3)
    """
    if np.ndim(map2d) != 2:
        raise ValueError(f"bounding_box needs a (h, w) map, got shape {tuple(np.shape(map2d))}")
    x0, y0, x1, y1 = region_box(map2d, threshold)
    return x0, y0, x1, y1
