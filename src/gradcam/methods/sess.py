"""SESS: a base method's maps on patches of the image at several scales, weighted by each
patch's class probability and fused."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradcam.engine import check_input, eval_mode
from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike
from gradcam.maps import normalize, upsample
from gradcam.methods.activation import layer_pass
from gradcam.methods.gradcam import LayerMethod
from gradcam.methods.refine_cam import base_method, scaled_maps
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import CAMResult
from gradcam.targets import TargetLike, as_logits, fixed_targets, resolve_targets

__all__ = ["SESS", "gaussian_blur", "sess_scales", "window_starts"]

Pool = Literal["mean", "max"]
_POOLS = ("mean", "max")


def window_starts(length: int, window: int, step: int) -> list[int]:
    """The starts of windows of ``window`` every ``step`` along ``length``; the last window is
    shifted back to end at the border, so every window has the full size (SESS's sliding).

    Examples:
        >>> window_starts(10, 4, 4)
        [0, 4, 6]
    """
    starts: list[int] = []
    for start in range(0, length, step):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def sess_scales(window: int, num_scales: int, step_ratio: float) -> list[int]:
    """The shorter sides the image is resized to: ``window + i * round(step_ratio * window)``
    for ``i < num_scales`` (224, 288, ..., 928 for a 224 window, as in the paper).

    Examples:
        >>> sess_scales(224, 3, 2 / 7)
        [224, 288, 352]
    """
    step = round(window * step_ratio)
    return [window + step * i for i in range(num_scales)]


def _reflect_index(length: int, pad: int) -> Tensor:
    """Indices of a ``pad``-padded axis of ``length`` under reflection without repeating the
    edge (OpenCV's default border, ``BORDER_REFLECT_101``), for any ``pad``."""
    index = torch.arange(-pad, length + pad)
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index.remainder(period)
    return torch.where(index >= length, period - index, index)


def gaussian_blur(maps: Tensor, size: int = 11, sigma: float = 5.0) -> Tensor:
    """Blur (..., H, W) maps with a ``size`` x ``size`` Gaussian of ``sigma``, the border
    reflected without repeating the edge: OpenCV's ``GaussianBlur(m, (size, size), sigma)``.

    .. math::
        g_i \\propto \\exp\\Big(-\\frac{(i - (size - 1)/2)^2}{2\\sigma^2}\\Big),
        \\qquad \\sum_i g_i = 1

    applied along each axis.

    Examples:
        >>> gaussian_blur(torch.ones(1, 4, 4)).allclose(torch.ones(1, 4, 4))
        True
    """
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(maps.device, maps.dtype)
    pad = size // 2
    h, w = maps.shape[-2:]
    rows = _reflect_index(h, pad).to(maps.device)
    cols = _reflect_index(w, pad).to(maps.device)
    padded = maps.index_select(-2, rows).index_select(-1, cols)
    # Separable: along the width, then along the height.
    out = padded.unfold(-1, size, 1) @ kernel
    return out.unfold(-2, size, 1) @ kernel


@register(
    "sess",
    title="SESS",
    kind="heatmap",
    needs=Needs(
        layer=True,
        layer_gradients=True,
        forwards="one no-grad forward per patch (scales x windows), then the base method on "
        "the kept patches, batch_size at a time",
        many_passes=True,
    ),
    citation="Tang et al. 2022, SESS: Saliency Enhancing with Scaling and Sliding, ECCV "
    "(arXiv:2207.01769)",
)
class SESS(LayerMethod):
    """SESS (Tang, Qiu, Wang, Zhang and Yao, "SESS: Saliency Enhancing with Scaling and
    Sliding", ECCV 2022; arXiv:2207.01769): a base method made robust to scale, to several
    instances and to distractors.

    The image is resized so that its shorter side is each of the scales ``s_1 < ... < s_n``
    (:func:`sess_scales`); a ``window`` x ``window`` window slides over each resized image with
    a step (the last window of a row or column shifted back inside, :func:`window_starts`).
    For each patch ``p`` and target ``c``, its score ``s_p = max(0, softmax(f(p))_c)`` (or
    ``max(0, y^c(p))`` with ``use_softmax_scores=False``); the lowest ``pre_filter_ratio`` of
    the patches are dropped. Each kept patch's base map, scaled to [0, 1] (:func:`scaled_maps`),
    is weighted by ``s_p / max_q s_q``, pasted where the patch was taken from in its resized
    image (zeros elsewhere) and resized back to the input, giving ``M_p``. The fusion is, per
    pixel,

    .. math::
        L^c = \\frac{\\sum_p M_p [M_p > \\theta]}{\\sum_p [M_p > \\theta]}
        \\quad (\\text{mean; 0 where no patch counts}),
        \\qquad L^c = \\max_p M_p \\quad (\\text{max})

    then blurred by an 11 x 11 Gaussian of sigma 5 (``smooth``). ``raw`` holds ``L^c`` at input
    resolution and ``maps`` its min-max scaled copy. The classes are resolved on the whole
    image (the top-1 class by default) and explained on every patch; each image is enhanced on
    its own.

    Agrees with pytorch-grad-cam 1.5.7's ``SESS`` with the same settings (its ``window_size``,
    ``step_size``, ``scale_step_ratio``, ``pre_filter_ratio`` are the options of those names
    here) and a base method that agrees with its own (``base="gradcam"`` with its default
    ``GradCAM``). Resizing the image is torchvision's ``resize`` (bilinear, antialiased when
    shrinking); resizing maps back is OpenCV's ``INTER_LINEAR``.

    Args:
        module: the model.
        layer: the base method's layer (module or dotted name); ``None`` picks the last
            convolutional feature-map layer.
        base: the registered heatmap method run on every patch (the paper's and
            pytorch-grad-cam's default: Grad-CAM).
        base_options: the base method's options (Python only).
        scales: the shorter sides to resize to (each at least the window); none: num_scales
            scales from the window up (:func:`sess_scales`).
        num_scales: how many scales, when scales are not given (the paper's 12).
        scale_step_ratio: the step between scales, as a fraction of the window (2/7: 224,
            288, ...).
        window_size: the side of the square window; ``None``: the input's shorter side, so
            that the smallest scale is the image itself.
        step_size: the window's stride; ``None``: the window (no overlap but at the borders).
        pre_filter_ratio: the fraction of lowest-scoring patches not explained, in [0, 1).
        theta: in mean fusion, values at or below theta do not count at a pixel.
        pool: ``"mean"`` (the paper's weighted average) or ``"max"``.
        smooth: blur the fused map (11 x 11 Gaussian, sigma 5).
        use_softmax_scores: weigh patches by the softmax probability of the target (the
            paper); false: by the target score itself, clipped at 0 (for outputs where a
            softmax means nothing).
        batch_size: patches per pass.

    Examples:
        >>> sess = gradcam.SESS(model, "features", num_scales=2, window_size=96, step_size=64)
        >>> result = sess(x, gradcam.TopK(2))
        >>> result.raw.shape, result.maps.shape  # both at input resolution
        (torch.Size([1, 2, 128, 128]), torch.Size([1, 2, 128, 128]))
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        base: str = "gradcam",
        base_options: Mapping[str, Any] | None = None,
        scales: tuple[int, ...] = (),
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        window_size: int | None = None,
        step_size: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: Pool = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
    ) -> None:
        for name, value, least in (
            ("num_scales", num_scales, 1),
            ("window_size", window_size, 1),
            ("step_size", step_size, 1),
            ("batch_size", batch_size, 1),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < least
            ):
                raise GradCAMError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(scales, (tuple, list)) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales
        ):
            raise GradCAMError(f"scales must be a tuple of positive integers, got {scales!r}")
        if not _number(pre_filter_ratio) or not 0 <= pre_filter_ratio < 1:
            raise GradCAMError(f"pre_filter_ratio must be in [0, 1), got {pre_filter_ratio!r}")
        if not _number(scale_step_ratio) or not 0 < scale_step_ratio < math.inf:
            raise GradCAMError(f"scale_step_ratio must be positive, got {scale_step_ratio!r}")
        if not _number(theta) or not math.isfinite(theta):
            raise GradCAMError(f"theta must be a finite number, got {theta!r}")
        if pool not in _POOLS:
            raise GradCAMError(f"pool must be one of {', '.join(_POOLS)}; got {pool!r}")
        super().__init__(module, layer)
        self.base = base
        self.base_method = base_method(base, module, layer, base_options, "sess")
        self.scales = tuple(scales)
        self.num_scales = num_scales
        self.scale_step_ratio = float(scale_step_ratio)
        self.window_size = window_size
        self.step_size = step_size
        self.pre_filter_ratio = float(pre_filter_ratio)
        self.theta = float(theta)
        self.pool: Pool = pool
        self.smooth = smooth
        self.use_softmax_scores = use_softmax_scores
        self.batch_size = batch_size

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> CAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module).detach()
        found = layer_pass(self.module, self.layer_for(x), x, targets)
        fused = torch.stack(
            [
                self._enhance(x[b : b + 1], fixed_targets(targets, found.classes[b], b))
                for b in range(x.shape[0])
            ]
        )
        if self.smooth:
            fused = gaussian_blur(fused)
        return CAMResult(
            raw=fused,
            maps=normalize(fused),
            weights=None,
            scores=found.scores.float(),
            classes=found.classes,
            logits=None if found.logits is None else found.logits.float(),
            layer=found.layer,
        )

    def _patches(self, image: Tensor) -> tuple[list[Tensor], list[tuple[int, int, int, int]]]:
        """Every patch of every scale, and where it came from: (x, y, scaled W, scaled H)."""
        h, w = image.shape[-2:]
        window = self.window_size or min(h, w)
        step = self.step_size or window
        scales = self.scales or tuple(sess_scales(window, self.num_scales, self.scale_step_ratio))
        if min(scales) < window:
            raise GradCAMError(
                f"sess: every scale must be at least the window {window}; got {min(scales)}"
            )
        patches: list[Tensor] = []
        places: list[tuple[int, int, int, int]] = []
        for scale in scales:
            # torchvision's resize(image, scale): the shorter side becomes `scale`, bilinear,
            # antialiased when shrinking (a window smaller than the image).
            size = (int(scale * h / w), scale) if w <= h else (scale, int(scale * w / h))
            scaled = F.interpolate(
                image, size=size, mode="bilinear", align_corners=False, antialias=True
            )
            for top in window_starts(size[0], window, step):
                for left in window_starts(size[1], window, step):
                    patches.append(scaled[..., top : top + window, left : left + window])
                    places.append((left, top, size[1], size[0]))
        return patches, places

    def _scores(self, patches: list[Tensor], targets: list[Any]) -> Tensor:
        """(P, K) each patch's score for each target, clipped at 0."""
        scores: list[Tensor] = []
        with torch.no_grad(), eval_mode(self.module):
            for start in range(0, len(patches), self.batch_size):
                batch = torch.cat(patches[start : start + self.batch_size])
                output = self.module(batch)
                if self.use_softmax_scores:
                    output = as_logits(output).float().softmax(dim=-1)
                scores.append(resolve_targets(targets, output, batch.shape[0]).scores.float())
        return torch.cat(scores).clamp(min=0)

    def _enhance(self, image: Tensor, targets: list[Any]) -> Tensor:
        """The fused (K, H, W) map of one (1, C, H, W) image."""
        h, w = image.shape[-2:]
        patches, places = self._patches(image)
        scores = self._scores(patches, targets)  # (P, K)
        count = scores.shape[0]
        drop = int(count * self.pre_filter_ratio)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        weights = torch.zeros_like(scores)
        for k in range(scores.shape[1]):
            order = torch.argsort(scores[:, k], stable=True)[drop:]
            keep[order, k] = True
            best = scores[order[-1], k]
            weights[:, k] = scores[:, k] / best if best > 0 else 1.0
        used = [p for p in range(count) if bool(keep[p].any())]
        total = torch.zeros(scores.shape[1], h, w, device=image.device)
        counts = torch.zeros_like(total)
        for start in range(0, len(used), self.batch_size):
            chunk = used[start : start + self.batch_size]
            batch = torch.cat([patches[p] for p in chunk])
            raw = self.base_method(batch, targets).raw
            window = batch.shape[-1]
            cams = scaled_maps(raw, (window, window)) * weights[chunk, :, None, None]
            for cam, p in zip(cams, chunk, strict=True):
                left, top, width, height = places[p]
                full = cam.new_zeros(cam.shape[0], height, width)
                full[:, top : top + window, left : left + window] = cam
                pasted = upsample(full, (h, w))
                kept = keep[p, :, None, None]
                if self.pool == "max":
                    total = torch.where(kept, torch.maximum(total, pasted), total)
                else:
                    counted = kept & (pasted > self.theta)
                    total = total + torch.where(counted, pasted, 0.0)
                    counts = counts + counted
        if self.pool == "max":
            return total
        return torch.where(counts > 0, total / counts.clamp(min=1), 0.0)


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))
