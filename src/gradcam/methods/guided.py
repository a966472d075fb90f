"""Pixel-space methods: Guided Backpropagation, Deconvolution, and their fusion with Grad-CAM.

Guided Grad-CAM (section 3.2) multiplies the Guided Backpropagation map by the Grad-CAM map
upsampled bilinearly to the input: high-resolution *and* class-discriminative. Here one forward
pass serves both factors: a plain backward pass to the layer gives Grad-CAM, then a guided
backward pass to the input gives Guided Backprop (see :mod:`gradcam.rectifiers`).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from gradcam.engine import Gradients, check_input, compute_gradients
from gradcam.errors import GradCAMError
from gradcam.methods.gradcam import LayerMethod, cam_result
from gradcam.methods.results import GuidedCAMResult, PixelResult
from gradcam.rectifiers import Rule
from gradcam.targets import TargetLike

__all__ = [
    "DeconvGradCAM",
    "Deconvolution",
    "GuidedBackprop",
    "GuidedGradCAM",
    "guided_cam_result",
    "pixel_result",
]


def pixel_result(grads: Gradients, rule: Rule) -> PixelResult:
    """A :class:`PixelResult` from the engine's input gradients under ``rule``."""
    return PixelResult(
        maps=grads.input_gradients[rule].float(),
        scores=grads.scores.float(),
        classes=grads.classes,
        logits=None if grads.logits is None else grads.logits.float(),
        rule=rule,
    )


def guided_cam_result(
    grads: Gradients, input_size: tuple[int, int], layer: str, rule: Rule
) -> GuidedCAMResult:
    """Fuse the input gradients under ``rule`` with Grad-CAM from the same engine output."""
    cam = cam_result(grads, input_size, layer)
    pixel = grads.input_gradients[rule].float()
    return GuidedCAMResult(
        maps=pixel * cam.maps.unsqueeze(2),
        scores=cam.scores,
        classes=cam.classes,
        logits=cam.logits,
        gradients=pixel,
        cam=cam,
    )


class _PixelGradient:
    rule: ClassVar[Rule]

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, nn.Module):
            raise GradCAMError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> PixelResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        grads = compute_gradients(self.module, x, targets, input_rules=[self.rule])
        return pixel_result(grads, self.rule)


class GuidedBackprop(_PixelGradient):
    """Guided Backpropagation (Springenberg et al. 2015): ``dy^c/dx`` where, at every rectifier,
    only positive gradients pass, and only at positive inputs:
    ``R_in = [x > 0] * max(R_out, 0)`` for ReLU (other activations: see
    :mod:`gradcam.rectifiers`).

    Rectifiers are found as modules and as functions called inside ``forward``; no module is
    replaced. ``.maps`` is (B, K, C, H, W), unnormalized; :func:`gradcam.viz.gradient_image`
    renders it as the paper shows it.

    Example:
        >>> result = GuidedBackprop(model)(x, TopK(1))
        >>> result.maps.shape  # (1, 1, 3, H, W)
    """

    rule = "guided"


class Deconvolution(_PixelGradient):
    """Deconvolution (Zeiler and Fergus 2014): ``dy^c/dx`` where, at every rectifier, only
    positive gradients pass, whatever the input: ``R_in = max(R_out, 0)``.

    Example:
        >>> Deconvolution(model)(x, [281]).maps.shape  # (1, 1, 3, H, W)
    """

    rule = "deconv"


class _GuidedCAM(LayerMethod):
    rule: ClassVar[Rule]

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> GuidedCAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module)
        layer = self.layer_for(x)
        grads = compute_gradients(self.module, x, targets, layer=layer, input_rules=[self.rule])
        return guided_cam_result(grads, (x.shape[-2], x.shape[-1]), layer[1], self.rule)


class GuidedGradCAM(_GuidedCAM):
    """Guided Grad-CAM (section 3.2): Guided Backprop times the upsampled Grad-CAM map,

    ``L_GuidedGradCAM^c = dy^c/dx|_guided * upsample(ReLU(sum_k alpha_k^c A^k))``.

    One forward pass and two backward passes (to the layer, then guided to the input).

    Args:
        module: the model.
        layer: the Grad-CAM layer, as for :class:`~gradcam.GradCAM`.

    Example:
        >>> result = GuidedGradCAM(model)(x, [281])
        >>> result.maps.shape, result.cam.maps.shape  # (1, 1, 3, H, W), (1, 1, H, W)
    """

    rule = "guided"


class DeconvGradCAM(_GuidedCAM):
    """Deconvolution times the upsampled Grad-CAM map (section 3.2's variant).

    Example:
        >>> DeconvGradCAM(model)(x).gradients.shape  # (1, 1, 3, H, W)
    """

    rule = "deconv"
