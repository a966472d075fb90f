"""Pixel-space methods: Guided Backpropagation, Deconvolution, and their fusion with Grad-CAM.

Guided Grad-CAM (section 3.2) multiplies the Guided Backpropagation map by the Grad-CAM map
upsampled bilinearly to the input: high-resolution *and* class-discriminative. Here one forward
pass serves both factors: a plain backward pass to the layer gives Grad-CAM, then a guided
backward pass to the input gives Guided Backprop (see :mod:`gradcam.rectifiers`).

Every method here explains signals (B, C, L) and volumes or clips (B, C, D, H, W) as images
(registry ``ranks=(1, 2, 3)``): the pixel-space maps are (B, K, C, *spatial), and Guided
Grad-CAM's factor is upsampled linearly or trilinearly.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from gradcam.engine import Gradients
from gradcam.layers import LayerLike
from gradcam.maps import upsample
from gradcam.methods.base import GradientMethod, Plan, check_module
from gradcam.methods.gradcam import GradCAM
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import GuidedCAMResult, PixelResult
from gradcam.rectifiers import Rule
from gradcam.targets import TargetLike

__all__ = [
    "DeconvGradCAM",
    "Deconvolution",
    "GuidedBackprop",
    "GuidedGradCAM",
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


class _PixelGradient(GradientMethod):
    rule: ClassVar[Rule]

    def __init__(self, module: nn.Module) -> None:
        self.module = check_module(module)

    def plan(self, x: Tensor) -> Plan:
        """One backward pass to the input under the method's rule."""
        return Plan(input_rules=(self.rule,))

    def from_gradients(
        self, grads: Gradients, plan: Plan, input_size: tuple[int, ...]
    ) -> PixelResult:
        """The input gradient under the rule."""
        return pixel_result(grads, self.rule)

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> PixelResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        result = GradientMethod.__call__(self, x, targets)
        assert isinstance(result, PixelResult)
        return result


@register(
    "guided-backprop",
    title="Guided Backprop",
    kind="pixel",
    needs=Needs(input_rules=("guided",)),
    citation="Springenberg et al. 2015",
    ranks=(1, 2, 3),
)
class GuidedBackprop(_PixelGradient):
    """Guided Backpropagation (Springenberg et al. 2015): ``dy^c/dx`` where, at every rectifier,
    only positive gradients pass, and only at positive inputs:
    ``R_in = [x > 0] * max(R_out, 0)`` for ReLU (other activations: see
    :mod:`gradcam.rectifiers`).

    Rectifiers are found as modules and as functions called inside ``forward``; no module is
    replaced. ``.maps`` is (B, K, C, H, W), unnormalized; :func:`gradcam.viz.gradient_image`
    renders it as the paper shows it.

    Examples:
        >>> result = GuidedBackprop(model)(x, gradcam.TopK(1))
        >>> result.classes, result.maps.shape  # (B, K, 3, H, W)
        (tensor([[3]]), torch.Size([1, 1, 3, 128, 128]))
    """

    rule = "guided"


@register(
    "deconvolution",
    title="Deconvolution",
    kind="pixel",
    needs=Needs(input_rules=("deconv",)),
    citation="Zeiler and Fergus 2014",
    ranks=(1, 2, 3),
)
class Deconvolution(_PixelGradient):
    """Deconvolution (Zeiler and Fergus 2014): ``dy^c/dx`` where, at every rectifier, only
    positive gradients pass, whatever the input: ``R_in = max(R_out, 0)``.

    Examples:
        >>> Deconvolution(model)(x, [3]).maps.shape  # (B, K, 3, H, W)
        torch.Size([1, 1, 3, 128, 128])
    """

    rule = "deconv"


class _GuidedCAM(GradCAM):
    rule: ClassVar[Rule]

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        normalized_cam: bool = False,
    ) -> None:
        super().__init__(module, layer)
        self.normalized_cam = normalized_cam

    def plan(self, x: Tensor) -> Plan:
        """A plain backward pass to the layer and one to the input under the method's rule."""
        return Plan(layer=self.layer_for(x), input_rules=(self.rule,))

    def from_gradients(  # type: ignore[override]
        self, grads: Gradients, plan: Plan, input_size: tuple[int, ...]
    ) -> GuidedCAMResult:
        """The input gradient times the upsampled Grad-CAM map of the same pass."""
        cam = super().from_gradients(grads, plan, input_size)
        pixel = grads.input_gradients[self.rule].float()
        # Bilinear interpolation of a non-negative map stays non-negative: no clamp needed.
        factor = cam.maps if self.normalized_cam else upsample(cam.raw, input_size)
        return GuidedCAMResult(
            maps=pixel * factor.unsqueeze(2),
            scores=cam.scores,
            classes=cam.classes,
            logits=cam.logits,
            gradients=pixel,
            cam=cam,
        )

    def __call__(  # type: ignore[override]
        self, x: Tensor, targets: TargetLike | None = None
    ) -> GuidedCAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        result = GradientMethod.__call__(self, x, targets)
        assert isinstance(result, GuidedCAMResult)
        return result


@register(
    "guided-gradcam",
    title="Guided Grad-CAM",
    kind="pixel",
    needs=Needs(layer=True, layer_gradients=True, input_rules=("guided",)),
    citation="Selvaraju et al. 2017, section 3.2",
    ranks=(1, 2, 3),
)
class GuidedGradCAM(_GuidedCAM):
    """Guided Grad-CAM (section 3.2): Guided Backprop times the upsampled Grad-CAM map,

    ``L_GuidedGradCAM^c = dy^c/dx|_guided * upsample(ReLU(sum_k alpha_k^c A^k))``,

    with the rectified raw map ``L^c`` (``result.cam.raw``) upsampled bilinearly to the input
    (``align_corners=False``) and not renormalized, as the paper and its code do (and Captum's
    ``GuidedGradCam`` with ``interpolate_mode="bilinear"``): the product keeps the class's
    evidence everywhere the map is positive. Normalize only for display
    (:func:`gradcam.viz.gradient_image` does).

    One forward pass and two backward passes (to the layer, then guided to the input).

    Args:
        module: the model.
        layer: the Grad-CAM layer, as for :class:`~gradcam.GradCAM`.
        normalized_cam: multiply by the min-max normalized map ``result.cam.maps`` instead,
            as pytorch-grad-cam's README recipe does; this zeroes the pixels where the map is
            at its minimum, even when that minimum is positive evidence.

    Examples:
        >>> result = GuidedGradCAM(model)(x, [3])
        >>> result.maps.shape, result.cam.maps.shape  # (B, K, 3, H, W), (B, K, H, W)
        (torch.Size([1, 1, 3, 128, 128]), torch.Size([1, 1, 128, 128]))
    """

    rule = "guided"


@register(
    "deconv-gradcam",
    title="Deconvolution Grad-CAM",
    kind="pixel",
    needs=Needs(layer=True, layer_gradients=True, input_rules=("deconv",)),
    citation="Selvaraju et al. 2017, section 3.2",
    ranks=(1, 2, 3),
)
class DeconvGradCAM(_GuidedCAM):
    """Deconvolution times the upsampled Grad-CAM map (section 3.2's variant), built as
    :class:`GuidedGradCAM` is.

    Args:
        module: the model.
        layer: the Grad-CAM layer, as for :class:`~gradcam.GradCAM`.
        normalized_cam: multiply by the min-max normalized map (see :class:`GuidedGradCAM`).

    Examples:
        >>> DeconvGradCAM(model)(x).gradients.shape  # (B, K, 3, H, W)
        torch.Size([1, 1, 3, 128, 128])
    """

    rule = "deconv"
