"""Post-processing of maps, separate from the methods: upsample, normalize, peak, box.

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

__all__ = ["INTERPOLATIONS", "bounding_box", "interpolation", "normalize", "peak", "upsample"]

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


def peak(map2d: Tensor | np.ndarray) -> tuple[int, int] | None:
    """Where a map points: ``(x, y)`` of its maximum, or ``None`` when it points nowhere.

    The one rule every caller shares (the explain summary, the pointing game, the
    vision-language pointing scores): a map that is empty, has no finite value, or is constant
    (all zeros, say) has no evidence to locate and points nowhere; NaN and infinite values are
    ignored; when several pixels share the maximum, the first in row-major order is taken.

    Examples:
        >>> m = torch.zeros(4, 6); m[1, 2] = m[3, 0] = 5.0
        >>> peak(m), peak(torch.zeros(4, 6)), peak(torch.full((4, 6), 0.3))
        ((2, 1), None, None)
    """
    array = np.asarray(
        map2d.detach().cpu().float() if isinstance(map2d, Tensor) else map2d, dtype=np.float64
    )
    if array.ndim != 2:
        raise ValueError(f"peak needs a (h, w) map, got shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.any():
        return None
    values = np.where(finite, array, -np.inf)
    top = values.max()
    if top == array[finite].min():
        return None
    y, x = np.unravel_index(int(np.argmax(values)), array.shape)
    return int(x), int(y)


def bounding_box(map2d: Tensor | np.ndarray, threshold: float = 0.15) -> tuple[int, int, int, int]:
    """The paper's localization box (section 4.1) around a non-negative map.

    Binarize at ``threshold`` times the map's maximum, keep the single largest 8-connected
    segment, and return its box ``(x0, y0, x1, y1)`` in pixels, inclusive. An all-zero map has
    no evidence: its box is the whole map.

    Examples:
        >>> m = torch.zeros(8, 8); m[2:4, 3:6] = 1.0
        >>> bounding_box(m)
        (3, 2, 5, 3)
    """
    array = np.asarray(map2d.detach().cpu().float() if isinstance(map2d, Tensor) else map2d)
    height, width = array.shape
    top = float(array.max()) if array.size else 0.0
    if not top > 0:
        return 0, 0, width - 1, height - 1
    from scipy import ndimage  # here: `gradcam --help` and `import gradcam` need no scipy

    labels, count = ndimage.label(array >= threshold * top, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)))
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
