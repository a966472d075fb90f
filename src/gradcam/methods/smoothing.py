"""Smoothing of heatmaps, as pytorch-grad-cam's two options, for any heatmap method.

* :func:`principal_projection` (``eigen_smooth``): replace ``sum_k w_k A^k`` by the projection
  of the weighted feature maps ``w_k A^k`` on their first principal component, which keeps the
  dominant spatial pattern and drops the rest (pytorch-grad-cam's ``get_2d_projection``).
* :func:`augmentation_smoothing` (``aug_smooth``): test-time augmentation. The method runs on
  the six images of :data:`AUGMENTATIONS` (horizontal flip x brightness factors 0.9, 1, 1.1,
  pytorch-grad-cam's ``ttach`` default); each map is normalized to [0, 1], flipped back, and
  the six are averaged.

Both are pure functions of tensors (or of a method given as a callable), so every heatmap
method can offer them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gradcam.errors import GradCAMError
from gradcam.maps import normalize
from gradcam.methods.results import CAMResult
from gradcam.targets import TargetLike, TopK, is_per_image, target_list

__all__ = [
    "AUGMENTATIONS",
    "SmoothSign",
    "augment",
    "augmentation_smoothing",
    "deaugment",
    "lapack_projection",
    "principal_projection",
    "repeated_targets",
]

AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)
)
"""``(horizontal flip, brightness factor)`` of each test-time augmentation, in ``ttach``'s
order (``Compose([HorizontalFlip(), Multiply([0.9, 1, 1.1])])``)."""

_IDENTITY = (False, 1.0)


SmoothSign = Literal["agreement", "lapack"]
"""How ``eigen_smooth``'s projection is signed: ``"agreement"`` (it correlates non-negatively
with the unsmoothed map, the default) or ``"lapack"`` (as ``numpy.linalg.svd`` returns it:
pytorch-grad-cam's ``get_2d_projection``)."""
_SMOOTH_SIGNS = ("agreement", "lapack")


def lapack_projection(rows: Tensor) -> Tensor:
    """(N, h*w) ``M v_1`` for each (h*w, C) centred matrix ``M`` of ``rows`` (N, h*w, C), with
    ``v_1`` the first row of ``V^T`` that ``numpy.linalg.svd`` gives for ``M`` in float32: the
    sign LAPACK happens to pick, as pytorch-grad-cam computes its projections.

    Examples:
        >>> lapack_projection(torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])).abs()
        tensor([[1., 1.]])
    """
    matrices = rows.detach().float().cpu().numpy()
    projections = [m @ np.linalg.svd(m, full_matrices=True)[2][0] for m in matrices]
    return torch.from_numpy(np.stack(projections)).to(rows.device, rows.dtype)


def principal_projection(weighted: Tensor, rank: int = 2, sign: SmoothSign = "agreement") -> Tensor:
    """Project the weighted feature maps of each map on their first principal component.

    For one map, the ``h * w`` positions (of the last ``rank`` dims: every position of a
    signal, image, volume or clip) are samples and the ``C`` channels are features:
    ``X`` (hw, C) is centered per channel and ``P = (X - mean) v_1``, with ``v_1`` the first
    right singular vector of the centered ``X`` (pytorch-grad-cam's ``get_2d_projection``).

    The sign of a singular vector is arbitrary (LAPACK returns either); here it is chosen so
    that ``P`` correlates non-negatively with the unsmoothed map ``sum_k X_k``, the map the
    projection replaces (``sign="agreement"``), or as numpy's SVD returns it
    (``sign="lapack"``, pytorch-grad-cam's). The SVD runs in float64; the result has the
    input's dtype.

    Args:
        weighted: (..., C, h, w) the weighted activations ``w_k^c A^k`` of each map
            ((..., C, *s) with ``rank`` spatial dims).
        rank: the number of spatial dims.

    Returns:
        (..., h, w) the projections, before any ReLU.

    Examples:
        >>> maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]).expand(3, 2, 2)  # 3 equal channels
        >>> principal_projection(maps)  # the centered map, scaled by sqrt(3)
        tensor([[-2.5981, -0.8660],
                [ 0.8660,  2.5981]])
    """
    spatial = weighted.shape[weighted.dim() - rank :]
    lead = weighted.shape[: weighted.dim() - rank - 1]
    channels = weighted.shape[weighted.dim() - rank - 1]
    rows = weighted.reshape(-1, channels, math.prod(spatial)).transpose(1, 2).double()
    centered = rows - rows.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    projection = (centered @ vh[:, 0, :].unsqueeze(-1)).squeeze(-1)
    reference = lapack_projection(centered) if sign == "lapack" else rows.sum(dim=2)
    agreement = (projection * reference).sum(dim=1, keepdim=True)
    projection = torch.where(agreement < 0, -projection, projection)
    return projection.to(weighted.dtype).reshape(*lead, *spatial)


def augment(x: Tensor, flip: bool, factor: float) -> Tensor:
    """The batch ``x`` multiplied by ``factor`` and, if ``flip``, mirrored left to right."""
    out = x * factor if factor != 1.0 else x
    return out.flip(-1) if flip else out


def deaugment(maps: Tensor, flip: bool) -> Tensor:
    """Maps of an augmented image brought back onto the original image (brightness moves
    nothing; a flip is undone)."""
    return maps.flip(-1) if flip else maps


def repeated_targets(targets: TargetLike | None, classes: Tensor, copies: int) -> TargetLike:
    """Targets that explain, on ``copies`` stacked copies of a batch, what ``targets`` resolved
    to on the batch itself: class-choosing targets (``None``, ``TopK``, tensors) become the
    resolved (B, K) ``classes`` repeated; ints and callables do not depend on the image.

    Examples:
        >>> repeated_targets(TopK(1), torch.tensor([[3], [5]]), 2).tolist()
        [[3], [5], [3], [5]]
    """
    if targets is None or isinstance(targets, (TopK, Tensor)):
        return classes.repeat(copies, 1)
    if not is_per_image(targets) and any(is_per_image(t) for t in target_list(targets)):
        return target_list(targets) * copies  # one per image, for every copy of the batch
    return targets


def augmentation_smoothing(
    explain: Callable[[Tensor, TargetLike | None], CAMResult],
    x: Tensor,
    targets: TargetLike | None,
) -> CAMResult:
    """Test-time augmentation smoothing of a heatmap method, as pytorch-grad-cam's ``aug_smooth``.

    ``explain`` runs first on ``x`` itself, which fixes the classes (a ``TopK`` target is
    resolved once, on the unaugmented image), then once on the other five augmentations of
    :data:`AUGMENTATIONS` stacked in one batch, explaining the same classes (the flip mirrors
    the last axis, the width of an image, volume or clip; signals are refused, since
    reversing time changes what a signal means). Each map is
    normalized on its own, so that every augmentation weighs the same (pytorch-grad-cam
    normalizes each augmentation's map before averaging), flipped back, and averaged:

    * ``maps``: the mean of the six de-augmented ``maps`` (input resolution, each in [0, 1]),
      min-max normalized again so that maps stay in [0, 1] with a maximum of 1;
    * ``raw``: the mean of the six de-augmented layer-resolution maps, each min-max normalized
      (so, unlike other results, ``maps`` is not exactly ``normalize(upsample(raw))``);
    * ``weights``: ``None`` (each augmentation has its own); scores, classes and logits are
      those of the unaugmented image.

    Args:
        explain: the method on one batch: ``(x, targets) -> CAMResult``.
        x: the checked (B, C, H, W) input batch (or (B, C, D, H, W)).
        targets: see :mod:`gradcam.targets`.

    Raises:
        GradCAMError: for a (B, C, L) signal.

    Examples:
        >>> cam = gradcam.GradCAM(model, "features")
        >>> smoothed = augmentation_smoothing(cam, x, TopK(2))  # = GradCAM(..., aug_smooth=True)
        >>> smoothed.maps.shape, smoothed.weights
        (torch.Size([1, 2, 128, 128]), None)
        >>> round(float(smoothed.maps.max()), 3)
        1.0
    """
    rank = x.dim() - 2
    if rank == 1:
        raise GradCAMError(
            f"aug_smooth mirrors the input left to right, which reverses a signal's time: "
            f"leave it off for (B, C, L) input {tuple(x.shape)}"
        )
    first = explain(x, targets)
    others = [a for a in AUGMENTATIONS if a != _IDENTITY]
    stacked = torch.cat([augment(x, flip, factor) for flip, factor in others])
    rest = explain(stacked, repeated_targets(targets, first.classes, len(others)))
    batch = x.shape[0]
    raws: dict[tuple[bool, float], Tensor] = {_IDENTITY: first.raw}
    maps: dict[tuple[bool, float], Tensor] = {_IDENTITY: first.maps}
    for i, aug in enumerate(others):
        raws[aug] = rest.raw[i * batch : (i + 1) * batch]
        maps[aug] = rest.maps[i * batch : (i + 1) * batch]
    raw = torch.stack([deaugment(normalize(raws[a], rank), a[0]) for a in AUGMENTATIONS])
    raw = raw.mean(dim=0)
    mean_maps = torch.stack([deaugment(maps[a], a[0]) for a in AUGMENTATIONS]).mean(dim=0)
    return CAMResult(
        raw=raw,
        maps=normalize(mean_maps, rank),
        weights=None,
        scores=first.scores,
        classes=first.classes,
        logits=first.logits,
        layer=first.layer,
    )
