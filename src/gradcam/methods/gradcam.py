"""Grad-CAM (section 3) and its counterfactual variant (section 3.3)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from gradcam.engine import Gradients, check_input, compute_gradients
from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike, ResolvedLayer, find_default_layer, resolve_layer
from gradcam.maps import normalize, upsample
from gradcam.methods.results import CAMResult
from gradcam.rectifiers import RULES, Rule
from gradcam.targets import TargetLike

__all__ = ["GradCAM", "LayerMethod", "Pooling", "cam_result", "grad_cam_from_gradients"]

Pooling = Literal["mean", "max", "abs"]
_POOLINGS = ("mean", "max", "abs")


def grad_cam_from_gradients(
    activations: Tensor,
    gradients: Tensor,
    *,
    counterfactual: bool = False,
    pooling: Pooling = "mean",
    relu: bool = True,
) -> tuple[Tensor, Tensor]:
    """Grad-CAM weights and maps from a layer's activations and gradients, in float32.

    .. math::
        \\alpha_k^c = \\frac{1}{Z}\\sum_i\\sum_j \\frac{\\partial y^c}{\\partial A^k_{ij}}
        \\qquad L^c = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big)

    Counterfactual (eq. 12) negates the gradients. ``pooling="max"`` takes the global max
    instead of the mean and ``"abs"`` the mean of absolute gradients, and ``relu=False`` drops
    the ReLU: the ablations of appendix B.

    Args:
        activations: ``A``, (B, C, h, w).
        gradients: ``dy^c/dA``, (B, K, C, h, w).

    Returns:
        ``(raw, weights)``: (B, K, h, w) maps and (B, K, C) weights ``alpha``.

    Example:
        >>> A = torch.ones(1, 1, 2, 2); G = torch.full((1, 1, 1, 2, 2), 0.5)
        >>> grad_cam_from_gradients(A, G)[0]
        tensor([[[[0.5000, 0.5000],
                  [0.5000, 0.5000]]]])
    """
    if pooling not in _POOLINGS:
        raise GradCAMError(f"pooling must be one of {', '.join(_POOLINGS)}; got {pooling!r}")
    grads = gradients.float()
    if counterfactual:
        grads = -grads
    if pooling == "mean":
        weights = grads.mean(dim=(-2, -1))
    elif pooling == "max":
        weights = grads.amax(dim=(-2, -1))
    else:
        weights = grads.abs().mean(dim=(-2, -1))
    cam = torch.einsum("bkc,bchw->bkhw", weights, activations.float())
    return (torch.relu(cam) if relu else cam), weights


def cam_result(
    grads: Gradients,
    input_size: tuple[int, int],
    layer: str,
    *,
    counterfactual: bool = False,
    pooling: Pooling = "mean",
    relu: bool = True,
) -> CAMResult:
    """Build a :class:`CAMResult` from the engine's output; ``input_size`` is ``(H, W)``.

    Several variants (Grad-CAM and its counterfactual, say) can be built from one
    :class:`~gradcam.engine.Gradients`, i.e. from one forward and one backward pass.
    """
    if grads.activations is None or grads.gradients is None:
        raise ValueError("cam_result needs gradients computed at a layer")
    raw, weights = grad_cam_from_gradients(
        grads.activations,
        grads.gradients,
        counterfactual=counterfactual,
        pooling=pooling,
        relu=relu,
    )
    return CAMResult(
        raw=raw,
        maps=normalize(upsample(raw, input_size)),
        weights=weights,
        scores=grads.scores.float(),
        classes=grads.classes,
        logits=None if grads.logits is None else grads.logits.float(),
        layer=layer,
    )


class LayerMethod:
    """Base of the methods that explain through a layer ``A``: holds and finds the layer.

    ``layer`` is a submodule, a dotted name or a :class:`~gradcam.layers.Layer` (with a
    reshape); ``None`` picks the default layer for each input shape (see :mod:`gradcam.layers`).
    """

    _MAX_SHAPES = 32  # default layers remembered, one per input shape

    def __init__(self, module: nn.Module, layer: LayerLike | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise GradCAMError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self._layer = None if layer is None else resolve_layer(module, layer)
        self._defaults: dict[tuple[int, ...], ResolvedLayer] = {}

    def layer_for(self, x: Tensor) -> ResolvedLayer:
        """The layer ``A`` for the batch ``x``: the one given, or the default for ``x``'s
        image shape (C, H, W), found with one probe pass the first time that shape is seen."""
        if self._layer is not None:
            return self._layer
        shape = tuple(x.shape[1:])
        found = self._defaults.get(shape)
        if found is None:
            found = resolve_layer(self.module, find_default_layer(self.module, x[:1]))
            if len(self._defaults) >= self._MAX_SHAPES:
                self._defaults.clear()
            self._defaults[shape] = found
        return found


class GradCAM(LayerMethod):
    """Gradient-weighted Class Activation Mapping (Selvaraju et al., section 3).

    Weights each feature map ``A^k`` of a layer by the global-average-pooled gradient of the
    target score ``y^c`` and keeps the positive part of the weighted sum:
    ``L^c = ReLU(sum_k alpha_k^c A^k)``, ``alpha_k^c = 1/Z sum_ij dy^c/dA^k_ij``.

    One call costs one forward pass and one batched backward pass to the layer, whatever the
    number of targets. The model is not modified: hooks exist only during the call, the model
    runs in eval mode and its flags are restored, parameter gradients stay untouched, and the
    input tensor is not modified.

    Args:
        module: the model.
        layer: the layer ``A``, as a submodule or a dotted name; ``None`` picks the last
            convolutional feature-map layer (see :mod:`gradcam.layers`) on the first call.
        counterfactual: negate the gradients (section 3.3): regions whose removal would make
            the model more confident of the class.
        pooling: ``"mean"`` (the paper), ``"max"`` or ``"abs"`` (appendix B ablations).
        relu: apply the final ReLU (``False`` is the appendix B ablation).
        gradient_rule: backward rule at rectifiers between ``A`` and the score: ``"plain"``
            (the paper), ``"guided"`` or ``"deconv"`` (appendix B, section 2.3 ablations).

    Example:
        >>> import gradcam
        >>> loaded = gradcam.load_model()
        >>> x = loaded.preprocess(gradcam.load_image("cat.jpg"))
        >>> cam = gradcam.GradCAM(loaded.module, loaded.default_layer)
        >>> result = cam(x, gradcam.TopK(3))
        >>> result.maps.shape  # (1, 3, H, W), values in [0, 1]
    """

    def __init__(
        self,
        module: nn.Module,
        layer: nn.Module | str | None = None,
        *,
        counterfactual: bool = False,
        pooling: Pooling = "mean",
        relu: bool = True,
        gradient_rule: Rule = "plain",
    ) -> None:
        if pooling not in _POOLINGS:
            raise GradCAMError(f"pooling must be one of {', '.join(_POOLINGS)}; got {pooling!r}")
        if gradient_rule not in RULES:
            raise GradCAMError(f"gradient_rule must be one of {', '.join(RULES)}")
        super().__init__(module, layer)
        self.counterfactual = counterfactual
        self.pooling: Pooling = pooling
        self.relu = relu
        self.gradient_rule: Rule = gradient_rule

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> CAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module)
        layer = self.layer_for(x)
        grads = compute_gradients(
            self.module, x, targets, layer=layer, layer_rule=self.gradient_rule
        )
        return cam_result(
            grads,
            (x.shape[-2], x.shape[-1]),
            layer[1],
            counterfactual=self.counterfactual,
            pooling=self.pooling,
            relu=self.relu,
        )
