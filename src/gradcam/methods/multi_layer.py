"""Several layers in one call: one forward pass hooking every layer, one batched backward pass
to all of them, and the layers' maps combined as pytorch-grad-cam combines its
``target_layers=[a, b]``.

.. math:: L^c = \\frac{1}{n} \\sum_{l=1}^{n} \\mathrm{Up}\\big(s(L^c_l)\\big),
    \\qquad s(m) = \\frac{m - \\min m}{\\max(m - \\min m) + 10^{-7}}

where ``L^c_l`` is the method's map at layer ``l`` (``result.raw`` of a one-layer call, after
its ReLU), ``s`` scales each map to [0, 1] at the layer's resolution and ``Up`` resizes it to
the input (bilinear, ``align_corners=False``, as :func:`gradcam.maps.upsample`). The methods
whose registry entry declares ``multi_layer`` take it (:func:`gradcam.methods.methods`; see
:attr:`gradcam.methods.registry.MethodSpec.multi_layer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import Tensor, nn

from gradcam.engine import (
    Gradients,
    _batched_grads,
    all_finite,
    check_input,
    run_in_fast_layout,
    spatial_size,
)
from gradcam.errors import GradCAMError, LayerError
from gradcam.hooks import LayerCapture, capture_layer, eval_mode, model_lock, rectifier_mode
from gradcam.layers import LayerLike, ResolvedLayer, resolve_layer
from gradcam.maps import upsample
from gradcam.rectifiers import RectifierState, Rule
from gradcam.targets import TargetLike, as_logits, class_names, resolve_targets

__all__ = ["EPS", "combine_layers", "layers_gradients", "resolve_layers"]

EPS = 1e-7
"""The ``1e-7`` of the per-layer scaling ``s`` (pytorch-grad-cam's ``scale_cam_image``)."""


def resolve_layers(model: nn.Module, layers: Sequence[LayerLike]) -> tuple[ResolvedLayer, ...]:
    """Each of ``layers`` found in ``model``; the same layer twice is refused.

    Raises:
        LayerError: an unknown layer (see :func:`~gradcam.layers.resolve_layer`) or a repeated
            one.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.ReLU())
        >>> [layer.name for layer in resolve_layers(net, ["0", net[1]])]
        ['0', '1']
        >>> resolve_layers(net, ["0", net[0]])
        Traceback (most recent call last):
        ...
        gradcam.errors.LayerError: layer '0' is given twice; give each layer once
    """
    resolved = tuple(resolve_layer(model, layer) for layer in layers)
    seen: set[int] = set()
    for layer in resolved:
        if id(layer.module) in seen:
            raise LayerError(f"layer {layer.name!r} is given twice; give each layer once")
        seen.add(id(layer.module))
    return resolved


def layers_gradients(
    model: nn.Module,
    x: Tensor,
    targets: TargetLike | None,
    layers: Sequence[ResolvedLayer],
    *,
    layer_rule: Rule = "plain",
) -> list[Gradients]:
    """Each layer's ``A_l`` and ``dy^c/dA_l`` from one forward pass and one batched backward
    pass: a :class:`~gradcam.engine.Gradients` per layer, in the order of ``layers``, with the
    same ``scores``, ``classes`` and ``logits``.

    As :func:`~gradcam.engine.compute_gradients` for one layer, the model and input are left
    as they were (hooks for this call only, eval mode, the model's lock held); a layer read
    through a reshape gives maps and gradients reshaped alike. The graph is recorded from the
    input on, since one layer's gradient flows through the others.

    Raises:
        LayerError: a layer that did not run, or whose output is not one tensor of maps.
        GradCAMError: non-finite scores or gradients.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.Conv2d(2, 3, 1),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> found = layers_gradients(net, torch.rand(1, 1, 4, 4), [2],
        ...                          resolve_layers(net, ["0", "1"]))
        >>> [tuple(g.gradients.shape) for g in found]  # (B, K, C_l, h, w)
        [(1, 1, 2, 4, 4), (1, 1, 3, 4, 4)]
    """
    x = check_input(x, model)
    state = RectifierState()
    grad_mode = torch.is_grad_enabled()
    with model_lock(model), torch.inference_mode(False):
        try:

            def forward(laid_out: Tensor) -> tuple[list[LayerCapture], object]:
                # A leaf input: the graph then reaches every layer, frozen weights or not.
                source = laid_out.detach().requires_grad_(True)
                torch.set_grad_enabled(True)
                with ExitStack() as stack:
                    stack.enter_context(eval_mode(model))
                    if layer_rule != "plain":
                        stack.enter_context(rectifier_mode(state))
                    captures = [
                        stack.enter_context(capture_layer(layer.module, layer.name, detach=False))
                        for layer in layers
                    ]
                    return captures, model(source)

            captures, output = run_in_fast_layout(model, x, forward)
            for capture in captures:
                if capture.output is None:
                    raise LayerError(f"layer {capture.name!r} did not run during the forward pass")
            resolved = resolve_targets(targets, output, x.shape[0], names=class_names(model))
            if not all_finite(resolved.scores.detach()):
                raise GradCAMError("the model produced NaN or infinite target scores")
            raws = [c.output for c in captures if c.output is not None]
            state.rule = layer_rule
            raw_grads = _batched_grads(resolved.scores, raws, "chosen layers", retain=False)
            try:
                logits: Tensor | None = as_logits(output).detach()
            except GradCAMError:
                logits = None
        finally:
            torch.set_grad_enabled(grad_mode)
    found = []
    for layer, raw, grad in zip(layers, raws, raw_grads, strict=True):
        view = layer.view(model, tuple(raw.shape), spatial_size(x))
        # A reshape only selects and permutes, so it maps dy/d(output) to dy/dA.
        maps = view(grad.detach().flatten(0, 1))
        gradients = maps.reshape(*grad.shape[:2], *maps.shape[1:]).contiguous()
        if not all_finite(gradients):
            raise GradCAMError(f"gradients to layer {layer.name!r} contain NaN or infinite values")
        found.append(
            Gradients(
                scores=resolved.scores.detach(),
                classes=resolved.classes.detach(),
                logits=logits,
                activations=view(raw.detach()).contiguous(),
                gradients=gradients,
            )
        )
    return found


def combine_layers(raws: Sequence[Tensor], input_size: tuple[int, ...]) -> Tensor:
    """The mean over layers of each (B, K, *s_l) map scaled to [0, 1] at its own resolution
    and upsampled to ``input_size``: (B, K, *input_size) (the module's formula).

    Examples:
        >>> fine = torch.tensor([[[[0.0, 2.0], [2.0, 4.0]]]])
        >>> coarse = torch.tensor([[[[5.0]]]])  # a constant map scales to 0
        >>> combine_layers([fine, coarse], (2, 2))
        tensor([[[[0.0000, 0.2500],
                  [0.2500, 0.5000]]]])
    """
    scaled = []
    for raw in raws:
        axes = tuple(range(2, raw.dim()))
        shifted = raw.float() - raw.float().amin(dim=axes, keepdim=True)
        unit = shifted / (shifted.amax(dim=axes, keepdim=True) + EPS)
        scaled.append(unit if tuple(unit.shape[2:]) == input_size else upsample(unit, input_size))
    return torch.stack(scaled).mean(dim=0)
