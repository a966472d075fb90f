"""The one engine every gradient method shares: one forward pass, gradients to one layer.

For a batch ``x`` and ``K`` targets per image, :func:`layer_gradients` runs the model once,
captures the layer's feature maps ``A`` (B, C, h, w), evaluates the ``K`` target scores
``y^c`` (B, K) and returns ``dy^c/dA`` (B, K, C, h, w) from a single batched backward pass
(``torch.autograd.grad`` with ``is_grads_batched``). Only the part of the network after the
layer records a graph; parameter ``.grad`` fields are never touched.

The user's model and input are left exactly as they were: hooks live for one call, the model
runs in eval mode during the call and every module's ``training`` flag is restored afterwards.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gradcam.errors import GradCAMError, LayerError, TargetError
from gradcam.hooks import capture_layer
from gradcam.targets import TargetLike, as_logits, resolve_targets

__all__ = ["LayerGradients", "check_input", "eval_mode", "layer_gradients"]


@dataclass(frozen=True)
class LayerGradients:
    """Everything one forward and one backward pass give about a layer (all detached).

    Attributes:
        activations: ``A``, (B, C, h, w), the layer's output.
        gradients: ``dy^c/dA``, (B, K, C, h, w), one gradient per target.
        scores: ``y^c``, (B, K), the target scores (before softmax for classes).
        classes: (B, K) class ids, -1 for callable targets.
        logits: (B, N) class scores of the model output, or ``None`` if it has none.
    """

    activations: Tensor
    gradients: Tensor
    scores: Tensor
    classes: Tensor
    logits: Tensor | None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, restoring every module's flag afterwards.

    Nothing is written when the model is already in eval mode, so concurrent calls on a shared
    eval-mode model never race on these flags.
    """
    flags = [m.training for m in model.modules()]
    if not any(flags):
        yield
        return
    try:
        model.eval()
        yield
    finally:
        for module, flag in zip(model.modules(), flags, strict=True):
            module.training = flag


def check_input(x: Any, model: nn.Module) -> Tensor:
    """Validate an image batch and return it on the model's device and floating dtype.

    The caller's tensor is never modified: a converted copy is returned when needed.

    Raises:
        GradCAMError: if ``x`` is not a finite floating (B, C, H, W) tensor.
    """
    if not isinstance(x, Tensor):
        raise GradCAMError(f"input must be a torch.Tensor of shape (B, C, H, W), got {type(x)}")
    if x.dim() != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise GradCAMError(f"input must have shape (B, C, H, W), got {tuple(x.shape)}{hint}")
    if x.numel() == 0:
        raise GradCAMError(f"input is empty: shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise GradCAMError(f"input must be a floating tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise GradCAMError("input contains NaN or infinite values")
    param = next(model.parameters(), None)
    if param is not None:
        dtype = param.dtype if param.dtype.is_floating_point else x.dtype
        return x.to(device=param.device, dtype=dtype)
    return x


def _grad_to_layer(scores: Tensor, activation: Tensor) -> Tensor:
    """``d scores[:, k] / dA`` for every k as (B, K, C, h, w), in one batched backward pass."""
    batch, k = scores.shape
    if not scores.requires_grad:
        raise TargetError(
            "the target scores do not depend on the chosen layer (no gradient path); "
            "choose a layer that the scores are computed from"
        )
    # Images of a batch are independent in eval mode, so the gradient of the batch sum of
    # column k gives every image's own gradient for its target k.
    if k == 1:
        (grad,) = torch.autograd.grad(scores.sum(), activation, allow_unused=True)
        return (torch.zeros_like(activation) if grad is None else grad).unsqueeze(1)
    one_hot = torch.eye(k, dtype=scores.dtype, device=scores.device)
    grad_outputs = one_hot[:, None, :].expand(k, batch, k)
    try:
        with warnings.catch_warnings():
            # vmap reports ops without a batching rule; they still give exact results.
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            # retain_graph: the fallback below may need the graph if this call fails midway.
            (grads,) = torch.autograd.grad(
                scores,
                activation,
                grad_outputs,
                retain_graph=True,
                is_grads_batched=True,
                allow_unused=True,
            )
    except RuntimeError:
        # Some custom autograd Functions cannot be vmapped: fall back to K backward passes.
        grads = torch.stack(
            [
                _zeros_if_none(
                    torch.autograd.grad(
                        scores[:, i].sum(), activation, retain_graph=True, allow_unused=True
                    )[0],
                    activation,
                )
                for i in range(k)
            ]
        )
    if grads is None:
        return activation.new_zeros((batch, k, *activation.shape[1:]))
    return grads.transpose(0, 1)


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def layer_gradients(
    model: nn.Module,
    layer: nn.Module,
    layer_name: str,
    x: Tensor,
    targets: TargetLike | None,
) -> LayerGradients:
    """Run ``model`` on ``x`` once and return ``A`` and ``dy^c/dA`` for every target.

    Args:
        model: any ``nn.Module``; not modified.
        layer: a submodule of ``model`` whose output is (B, C, h, w) and that runs once.
        layer_name: its dotted name, for error messages.
        x: (B, C, H, W) input batch; not modified.
        targets: see :mod:`gradcam.targets`; ``None`` is the top-1 class.

    Raises:
        LayerError: the layer never ran, ran twice, or does not output feature maps.
        TargetError: the targets do not fit the output.
        GradCAMError: bad input, or the model produced non-finite scores.

    Example:
        >>> g = layer_gradients(model, model.layer4, "layer4", x, [281, 282])
        >>> g.gradients.shape  # (B, 2, 2048, 7, 7)
    """
    x = check_input(x, model)
    grad_mode = torch.is_grad_enabled()
    # A caller's inference_mode would forbid the autograd leaf at the layer; leaving it
    # re-enables grad mode, so grad mode is switched off inside.
    with torch.inference_mode(False):
        try:
            torch.set_grad_enabled(False)
            with eval_mode(model), capture_layer(layer, layer_name) as capture:
                output = model(x)
            activation = capture.activation
            if activation is None:
                raise LayerError(f"layer {layer_name!r} did not run during the forward pass")
            torch.set_grad_enabled(True)
            resolved = resolve_targets(targets, output, x.shape[0])
            if not bool(torch.isfinite(resolved.scores).all()):
                raise GradCAMError("the model produced NaN or infinite target scores")
            gradients = _grad_to_layer(resolved.scores, activation)
            try:
                logits: Tensor | None = as_logits(output).detach()
            except TargetError:
                logits = None
        finally:
            torch.set_grad_enabled(grad_mode)
    if not bool(torch.isfinite(gradients).all()):
        raise GradCAMError(f"gradients at layer {layer_name!r} contain NaN or infinite values")
    return LayerGradients(
        activations=activation.detach(),
        gradients=gradients.detach(),
        scores=resolved.scores.detach(),
        classes=resolved.classes.detach(),
        logits=logits,
    )
