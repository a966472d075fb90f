"""What the methods that read a layer's activations without gradients share: one no-grad
forward pass that keeps the layer's output ``A`` and resolves the targets.

Eigen-CAM, KPCA-CAM, FEM and Deep Feature Factorization are functions of ``A`` alone: one
forward pass under ``no_grad`` costs what a prediction costs, and no graph is recorded.
:func:`layer_pass` runs it; :class:`ActivationMethod` turns a class-agnostic map of ``A`` into
a :class:`~gradcam.methods.results.CAMResult` with the same map for every target.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gradcam.engine import all_finite, check_input, eval_mode, spatial_size
from gradcam.errors import GradCAMError, LayerError, TargetError
from gradcam.hooks import capture_input, capture_layer
from gradcam.layers import ResolvedLayer
from gradcam.maps import normalize, upsample
from gradcam.methods.gradcam import LayerMethod, describe_pyramid
from gradcam.methods.results import CAMResult
from gradcam.reshapes import Tokens, concat_levels
from gradcam.targets import TargetLike, as_logits, class_names, resolve_targets

__all__ = ["ActivationMethod", "LayerPass", "check_choice", "layer_pass"]


@dataclass(frozen=True)
class LayerPass:
    """What one no-grad forward pass gave (all tensors detached).

    Attributes:
        activations: ``A``, (B, C, h, w), the layer's output.
        scores: (B, K) the target scores ``y^c``.
        classes: (B, K) class ids, -1 for callable targets.
        logits: (B, N) the model's class scores, or ``None`` when its output has none.
        inputs: the first input of each module of ``watch`` (``None`` where it did not run).
        layer: the layer's dotted name.
    """

    activations: Tensor
    scores: Tensor
    classes: Tensor
    logits: Tensor | None
    inputs: tuple[Tensor | None, ...]
    layer: str


def layer_pass(
    module: nn.Module,
    layer: ResolvedLayer | tuple[nn.Module, str],
    x: Tensor,
    targets: TargetLike | None,
    *,
    watch: Sequence[tuple[nn.Module, str]] = (),
) -> LayerPass:
    """Run ``module`` on the checked batch ``x`` once, without a graph, keeping ``layer``'s
    output and the inputs of the modules in ``watch``; resolve ``targets`` on the output.

    Raises:
        LayerError: the layer never ran, ran twice, or does not output feature maps.
        TargetError: the targets do not fit the output.
        GradCAMError: the activations or the target scores are not finite.

    Examples:
        >>> found = layer_pass(model, (model.features, "features"), x, gradcam.TopK(2))
        >>> found.activations.shape, found.classes  # (B, C, h, w), (B, K)
        (torch.Size([1, 128, 16, 16]), tensor([[3, 4]]))
    """
    with ExitStack() as stack:
        # inference_mode(False) turns grad mode on, so no_grad comes after it.
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.no_grad())
        stack.enter_context(eval_mode(module))
        resolved_layer = ResolvedLayer(*layer)
        capture = stack.enter_context(
            capture_layer(
                resolved_layer.module,
                resolved_layer.name,
                detach=False,
                pyramid=resolved_layer.takes_pyramid,
            )
        )
        watched = [stack.enter_context(capture_input(m, n)) for m, n in watch]
        output = module(x)
    name = layer[1]
    if capture.levels:
        activations = _pyramid_maps(resolved_layer, capture.pyramid, capture.levels)
        name = describe_pyramid(layer[1], capture.levels)
    elif capture.output is None:
        raise LayerError(f"layer {layer[1]!r} did not run during the forward pass")
    else:
        raw = capture.output.detach()
        view = resolved_layer.view(module, tuple(raw.shape), spatial_size(x))
        activations = view(raw)
    if not all_finite(activations):
        raise GradCAMError(f"the activations of layer {layer[1]!r} contain NaN or infinite values")
    resolved = resolve_targets(targets, output, x.shape[0], names=class_names(module))
    if not all_finite(resolved.scores):
        raise GradCAMError("the model produced NaN or infinite target scores")
    return LayerPass(
        activations=activations,
        scores=resolved.scores.detach().float(),
        classes=resolved.classes,
        logits=_logits_or_none(output),
        inputs=tuple(None if w.input is None else w.input.detach() for w in watched),
        layer=name,
    )


def _pyramid_maps(
    layer: ResolvedLayer, pyramid: Any, levels: tuple[tuple[str, Tensor], ...]
) -> Tensor:
    """A pyramid read as one (B, C, h, w) map by a gradient-free method: the levels upsampled
    to the finest one and concatenated (:func:`~gradcam.reshapes.concat_levels`), or the
    user's reshape callable applied to the whole container (pytorch-grad-cam's
    ``reshape_transform`` for FPN backbones)."""
    if isinstance(layer.reshape, (str, Tokens)):
        return concat_levels([maps.detach() for _, maps in levels])
    maps = layer.reshape(pyramid)
    if not isinstance(maps, Tensor) or maps.dim() not in (3, 4, 5):
        got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise LayerError(
            f"the reshape callable of layer {layer.name!r} must map its pyramid to one "
            f"(B, C, h, w) tensor; it returned {got}"
        )
    return maps.detach()


def _logits_or_none(output: Any) -> Tensor | None:
    try:
        return as_logits(output).detach().float()
    except TargetError:
        return None


class ActivationMethod(LayerMethod):
    """Base of the class-agnostic methods that map a layer's activations ``A`` alone.

    Subclasses implement :meth:`project`; calling the method runs :func:`layer_pass` and
    repeats the one map of each image for every target (the targets still give the result's
    ``scores`` and ``classes``).
    """

    def project(self, activations: Tensor) -> tuple[Tensor, Tensor | None]:
        """The (B, h, w) map of ``A`` (B, C, h, w, float32), and its (B, C) channel weights or
        ``None``."""
        raise NotImplementedError

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> CAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module)
        found = layer_pass(self.module, self.layer_for(x), x, targets)
        raw, weights = self.project(found.activations.float())
        k = found.scores.shape[1]
        raw = raw.unsqueeze(1).expand(-1, k, *raw.shape[1:]).contiguous()
        return CAMResult(
            raw=raw,
            maps=normalize(upsample(raw, spatial_size(x)), x.dim() - 2),
            weights=None
            if weights is None
            else weights.unsqueeze(1).expand(-1, k, -1).contiguous(),
            scores=found.scores,
            classes=found.classes,
            logits=found.logits,
            layer=found.layer,
        )


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise a one-line :class:`GradCAMError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise GradCAMError(
            f"{name} must be one of {', '.join(str(c) for c in choices)}; got {value!r}"
        )
