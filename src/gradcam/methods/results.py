"""What every method returns: frozen, detached, float32 results sharing one base.

Every result has ``maps``, ``scores``, ``classes`` and ``logits``; each family adds what its
method computes: layer-resolution maps and weights (Grad-CAM, CAM), the pixel-space gradient
and the Grad-CAM factor (Guided Grad-CAM), the raw score drops (occlusion).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = [
    "AttributionResult",
    "CAMResult",
    "FinerCAMResult",
    "FullGradResult",
    "GuidedCAMResult",
    "OcclusionResult",
    "PixelResult",
    "Result",
]


@dataclass(frozen=True)
class Result:
    """The fields every method's result has.

    Attributes:
        maps: the explanation, one per image and target: (B, K, H, W) heatmaps in [0, 1], or
            (B, K, C, H, W) for pixel-space methods.
        scores: (B, K) the target scores ``y^c`` (class scores before softmax).
        classes: (B, K) the class ids explained, -1 for callable targets.
        logits: (B, N) the model's class scores, or ``None`` when its output has none.
    """

    maps: Tensor
    scores: Tensor
    classes: Tensor
    logits: Tensor | None


@dataclass(frozen=True)
class CAMResult(Result):
    """Grad-CAM, its counterfactual, and CAM.

    Attributes:
        raw: (B, K, h, w) ``ReLU(sum_k alpha_k^c A^k)`` at layer resolution, unnormalized.
        maps: (B, K, H, W) ``raw`` bilinearly upsampled to the input size, min-max normalized
            to [0, 1] per map (an all-zero map stays all zero).
        weights: (B, K, C) the neuron importance weights ``alpha_k^c`` (CAM: ``w_k^c``), or
            ``None`` for methods that weight each element rather than each channel.
        layer: the dotted name of the layer ``A``.
    """

    raw: Tensor
    weights: Tensor | None
    layer: str


@dataclass(frozen=True)
class PixelResult(Result):
    """Guided Backpropagation and Deconvolution.

    Attributes:
        maps: (B, K, C, H, W) the gradient of ``y^c`` with respect to the input, with the
            method's rule at every rectifier (see :mod:`gradcam.rectifiers`); unnormalized.
        rule: ``"guided"`` or ``"deconv"``.
    """

    rule: str


@dataclass(frozen=True)
class GuidedCAMResult(Result):
    """Guided Grad-CAM and Deconvolution Grad-CAM (section 3.2).

    Attributes:
        maps: (B, K, C, H, W) ``gradients * upsample(cam.raw)``: the pixel-space gradient
            times the rectified Grad-CAM map upsampled bilinearly to the input (section 3.2).
        gradients: (B, K, C, H, W) the pixel-space factor (Guided Backprop or Deconvolution).
        cam: the Grad-CAM factor, from the same forward pass.
    """

    gradients: Tensor
    cam: CAMResult


@dataclass(frozen=True)
class OcclusionResult(Result):
    """Occlusion sensitivity (section 5.3, supplement 5.1).

    Attributes:
        raw: (B, K, H, W) for each pixel, the mean drop ``y^c(x) - y^c(x occluded)`` over the
            windows that cover it: positive where hiding the region lowers the score.
        maps: ``raw`` min-max normalized to [0, 1] per map.
    """

    raw: Tensor


@dataclass(frozen=True)
class FinerCAMResult(CAMResult):
    """Finer-CAM: a Grad-CAM of the target's score against its most similar classes.

    Attributes:
        scores: (B, K) the contrastive scores explained, ``y^c - alpha sum_d w_d y^d``.
        classes: (B, K) the target classes ``c``.
        references: (B, K, R) the compared classes ``d``, nearest in score first.
    """

    references: Tensor


@dataclass(frozen=True)
class FullGradResult(Result):
    """FullGrad: the input-gradient and every bias-gradient, at the input's resolution.

    Attributes:
        raw: (B, K, H, W) the sum of the rescaled input-gradient and bias-gradient maps.
        maps: ``raw`` min-max normalized to [0, 1] per map.
        layers: the dotted names of the layers whose biases contributed, in call order.
    """

    raw: Tensor
    layers: tuple[str, ...]


@dataclass(frozen=True)
class AttributionResult(Result):
    """Integrated Gradients and SmoothGrad: a value per input element.

    Attributes:
        maps: (B, K, C, H, W) the attributions, unnormalized, in the input's layout.
        delta: (B, K) Integrated Gradients' completeness gap,
            ``sum(maps) - (y^c(x) - y^c(baseline))``; ``None`` for SmoothGrad.
    """

    delta: Tensor | None
