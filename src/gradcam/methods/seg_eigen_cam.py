"""Seg-Eigen-CAM: Eigen-CAM of the activations weighted by the absolute gradient, with the
principal component oriented so that its largest entry is positive."""

from __future__ import annotations

import torch

from gradcam.engine import Gradients
from gradcam.maps import normalize, upsample
from gradcam.methods.base import Plan
from gradcam.methods.eigen_cam import EigenGradCAM, principal_projection
from gradcam.methods.gradcam import single_layer
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import CAMResult

__all__ = ["SegEigenCAM"]


@register(
    "seg-eigen-cam",
    title="Seg-Eigen-CAM",
    kind="heatmap",
    needs=Needs(layer=True, layer_gradients=True),
    citation="Chung and Ying 2025, Applied Sciences 15(13) 7562, doi:10.3390/app15137562",
)
class SegEigenCAM(EigenGradCAM):
    """Seg-Eigen-CAM (Chung and Ying, "Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for
    Semantic Segmentation Models", Applied Sciences 15(13) 7562, 2025).

    Eigen-CAM (Muhammad and Yeasin 2020) of the activations weighted element by element by the
    absolute gradient (eq. 10), so that a position counts by how strongly the target reacts to
    it whichever the direction; the principal component's sign is corrected so that its entry
    of largest magnitude is positive (eq. 13):

    .. math::
        F^{k}_{ij} = \\Big|\\frac{\\partial y^c}{\\partial A^k_{ij}}\\Big|\\, A^k_{ij},
        \\qquad L^c = \\mathrm{ReLU}(M^c v_1)

    with ``M^c`` the (h*w, C) matrix of ``F`` centred per channel, ``M^c = U S V^T`` and
    ``v_1`` oriented by ``sign``. Written for segmentation models (explain a
    :class:`~gradcam.targets` callable that sums a class's mask logits) but defined for any
    differentiable target.

    Agrees with pytorch-grad-cam's ``SegEigenCAM`` at the defaults (its eq. 13 flips the
    projection where ``|min| > |max|``, which is ``sign="peak"`` but for exact ties). A gradient
    method: one forward and one batched backward pass to the layer for all targets, shared with
    Grad-CAM by :func:`~gradcam.methods.planner.explain_methods`.

    Args:
        module: the model.
        layer: the layer ``A`` (default: the last convolutional feature maps).
        sign: how the projection's sign is chosen: ``"peak"`` (its largest-magnitude entry is
            positive, the paper's eq. 13) or ``"activation"`` (it correlates positively with
            ``sum_k |dy^c/dA^k| A^k``).
        relu: keep the positive part (``False`` gives the signed projection).
        gradient_rule: backward rule at rectifiers between ``A`` and the score.

    Examples:
        >>> result = gradcam.SegEigenCAM(model, "features")(x, gradcam.TopK(2))
        >>> result.raw.shape, result.weights  # (B, K, h, w); no channel weights
        (torch.Size([1, 2, 16, 16]), None)
    """

    def from_gradients(
        self, grads: Gradients, plan: Plan, input_size: tuple[int, ...]
    ) -> CAMResult:
        """``ReLU(M^c v_1)`` of ``|dy^c/dA| A`` for every image and target, upsampled and
        normalized."""
        if plan.layer is not None:
            single_layer(grads, plan.layer[1], "Seg-Eigen-CAM")
        if grads.activations is None or grads.gradients is None or plan.layer is None:
            raise ValueError("Seg-Eigen-CAM needs gradients computed at a layer")
        features = grads.gradients.float().abs() * grads.activations.float().unsqueeze(1)
        raw = principal_projection(features, self.sign, len(input_size))
        if self.relu:
            raw = torch.relu(raw)
        return CAMResult(
            raw=raw,
            maps=normalize(upsample(raw, input_size), len(input_size)),
            weights=None,
            scores=grads.scores.float(),
            classes=grads.classes,
            logits=None if grads.logits is None else grads.logits.float(),
            layer=plan.layer[1],
        )
