"""ShapleyCAM (Cai 2025): Grad-CAM's weights corrected by a second-order (Hessian) term."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from gradcam.engine import all_finite, check_input, eval_mode, spatial_size
from gradcam.errors import GradCAMError, LayerError, TargetError
from gradcam.hooks import capture_layer
from gradcam.layers import LayerLike
from gradcam.maps import normalize, upsample
from gradcam.methods.gradcam import LayerMethod, weighted_sum
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import CAMResult
from gradcam.targets import TargetLike, as_logits, class_names, resolve_targets

__all__ = ["ShapleyCAM", "shapley_weights"]


def shapley_weights(gradients: Tensor, hessian_products: Tensor) -> Tensor:
    """ShapleyCAM's channel weights (B, K, C): the spatial mean of ``g - H A / 2``, from
    ``g = dy^c/dA`` and ``H A`` (the Hessian-vector product), both (B, K, C, h, w).

    Examples:
        >>> shapley_weights(torch.ones(1, 1, 1, 2, 2), torch.full((1, 1, 1, 2, 2), 0.5))
        tensor([[[0.7500]]])
    """
    return (gradients - 0.5 * hessian_products).mean(dim=tuple(range(3, gradients.dim())))


@register(
    "shapley-cam",
    title="ShapleyCAM",
    kind="heatmap",
    needs=Needs(
        layer=True,
        forwards="per target a backward pass to the layer that keeps its graph and a "
        "Hessian-vector product (its own pass, not shared)",
    ),
    citation="Cai 2025 (arXiv:2501.06261)",
    ranks=(1, 2, 3),
)
class ShapleyCAM(LayerMethod):
    """ShapleyCAM (Huaiguang Cai, "CAMs as Shapley Value-based Explainers", 2025,
    arXiv:2501.06261), as pytorch-grad-cam implements it.

    A second-order Taylor expansion of the score ``y^c`` around the layer's activations ``A``
    gives each neuron's Shapley value ``g ⊙ A - (H A) ⊙ A / 2``; pooled per channel, that
    changes Grad-CAM's weights to

    .. math::
        w_k^c = \\frac{1}{Z}\\sum_{ij}\\Big(\\frac{\\partial y^c}{\\partial A^k_{ij}}
        - \\frac{1}{2}(H^c A)^k_{ij}\\Big), \\qquad
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w_k^c A^k\\Big)

    where ``H^c`` is the Hessian of ``y^c`` with respect to ``A``; ``H^c A`` is computed as a
    Hessian-vector product (``torch.autograd.grad`` of the gradient, with ``create_graph``).

    After a layer followed by ReLUs, pooling and linear layers, a class logit is piecewise
    linear in ``A``: ``H = 0`` and ShapleyCAM equals Grad-CAM. It differs for targets that
    are curved in ``A``, such as softmax probabilities (``lambda out: out.softmax(1)[:, c]``)
    or the paper's ReST targets, which are callables here.

    One call runs its own forward pass (the graph starts at the layer) and, per target, a
    backward pass to the layer that keeps its graph and a second one through it; it cannot
    share the planner's pass. Parameter gradients are never touched.

    Args:
        module: the model.
        layer: the layer ``A``, as a submodule or a dotted name; ``None`` picks the last
            convolutional feature-map layer.
        relu: apply the final ReLU.

    Examples:
        >>> cam = ShapleyCAM(model, "features")
        >>> result = cam(x, lambda out: out.softmax(dim=1)[:, 3])  # the star's probability
        >>> result.raw.shape, result.classes  # (B, K, h, w); -1: a callable target
        (torch.Size([1, 1, 16, 16]), tensor([[-1]]))
    """

    def __init__(
        self, module: nn.Module, layer: LayerLike | None = None, *, relu: bool = True
    ) -> None:
        if not isinstance(relu, bool):
            raise GradCAMError(f"relu must be true or false, got {relu!r}")
        super().__init__(module, layer)
        self.relu = relu

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> CAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module)
        layer = self.layer_for(x)
        grad_mode = torch.is_grad_enabled()
        with torch.inference_mode(False):
            try:
                # The hook turns grad mode on at the layer: the graph starts there.
                torch.set_grad_enabled(False)
                with (
                    eval_mode(self.module),
                    capture_layer(layer.module, layer.name, detach=True) as capture,
                ):
                    output = self.module(x)
                torch.set_grad_enabled(True)
                if capture.output is None:
                    raise LayerError(f"layer {layer[1]!r} did not run during the forward pass")
                resolved = resolve_targets(
                    targets, output, x.shape[0], names=class_names(self.module)
                )
                if not all_finite(resolved.scores.detach()):
                    raise GradCAMError("the model produced NaN or infinite target scores")
                gradients, products = _gradients_and_products(resolved.scores, capture.output)
                try:
                    logits: Tensor | None = as_logits(output).detach().float()
                except TargetError:
                    logits = None
            finally:
                torch.set_grad_enabled(grad_mode)
        if not (all_finite(gradients) and all_finite(products)):
            raise GradCAMError("gradients to the layer contain NaN or infinite values")
        # A reshape only selects and permutes: it maps gradients and products alike.
        view = layer.view(self.module, tuple(capture.output.shape), spatial_size(x))
        activations = view(capture.output.detach()).float()
        gradients, products = (_viewed(view, t) for t in (gradients, products))
        weights = shapley_weights(gradients.float(), products.float())
        raw = weighted_sum(weights, activations)
        if self.relu:
            raw = torch.relu(raw)
        return CAMResult(
            raw=raw,
            maps=normalize(upsample(raw, spatial_size(x)), x.dim() - 2),
            weights=weights,
            scores=resolved.scores.detach().float(),
            classes=resolved.classes.detach(),
            logits=logits,
            layer=layer.name,
        )


def _viewed(view: Callable[[Tensor], Tensor], per_target: Tensor) -> Tensor:
    """(B, K, ...) tensors of the layer output's shape as (B, K, C, h, w) maps."""
    maps = view(per_target.flatten(0, 1))
    return maps.reshape(*per_target.shape[:2], *maps.shape[1:])


def _gradients_and_products(scores: Tensor, activation: Tensor) -> tuple[Tensor, Tensor]:
    """``dy^c/dA`` and ``H^c A`` for every target column, each (B, K, C, h, w), detached."""
    if not scores.requires_grad:
        raise TargetError(
            "the target scores do not depend on the chosen layer (no gradient path); "
            "choose a layer that the scores are computed from"
        )
    count = scores.shape[1]
    vector = activation.detach()
    gradients, products = [], []
    for k in range(count):
        (grad,) = torch.autograd.grad(
            scores[:, k].sum(), activation, retain_graph=True, create_graph=True
        )
        product: Tensor | None = None
        if grad.requires_grad:
            (product,) = torch.autograd.grad(
                grad, activation, vector, retain_graph=k < count - 1, allow_unused=True
            )
        gradients.append(grad.detach())
        products.append(torch.zeros_like(vector) if product is None else product.detach())
    return torch.stack(gradients, dim=1), torch.stack(products, dim=1)
