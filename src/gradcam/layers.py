"""Choosing the layer ``A`` whose feature maps Grad-CAM weights: by module, by name, or by default.

The default follows the paper (section 3): the last convolutional feature maps, i.e. the last
module whose output still has a spatial extent (h*w > 1), that runs exactly once, and whose
output is not produced by a pooling, dropout or reshaping layer (those only resample features
that an earlier module computed). For ResNet-50 this is ``layer4``, for VGG-16 ``features.29``
(relu5_3, 14x14 as in the paper), for the embedded EfficientNet-Lite0 ``_head_act``.
"""

from __future__ import annotations

import difflib
from collections import Counter

import torch
from torch import Tensor, nn

from gradcam.errors import LayerError
from gradcam.hooks import ModuleCall, record_outputs

__all__ = ["find_default_layer", "resolve_layer", "spatial_layers"]

# Modules that only resample or pass on features computed before them.
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.FractionalMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.Identity,
    nn.Flatten,
    nn.Upsample,
)


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[nn.Module, str]:
    """Return ``(module, dotted_name)`` for a layer given as a submodule or a dotted name.

    Raises:
        LayerError: if the name does not exist (close names are suggested) or the module is not
            a submodule of ``model``.

    Example:
        >>> resolve_layer(resnet, "layer4")[1]
        'layer4'
    """
    names = {name: module for name, module in model.named_modules() if name}
    if isinstance(layer, str):
        if layer in names:
            return names[layer], layer
        close = difflib.get_close_matches(layer, list(names), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LayerError(f"model has no layer named {layer!r}{hint}")
    if isinstance(layer, nn.Module):
        for name, module in names.items():
            if module is layer:
                return module, name
        raise LayerError(f"layer {type(layer).__name__} is not a submodule of the model")
    raise LayerError(f"layer must be an nn.Module or a dotted name, got {type(layer).__name__}")


def _probe(model: nn.Module, x: Tensor) -> list[ModuleCall]:
    was_training = [m.training for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad(), record_outputs(model) as calls:
            model(x)
        return list(calls)
    finally:
        for module, flag in zip(model.modules(), was_training, strict=True):
            module.training = flag


def spatial_layers(model: nn.Module, x: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """List ``(name, output_shape)`` of every layer usable as ``A``, in forward order.

    Usable: runs once and outputs a (B, C, h, w) tensor with h*w > 1. One no-grad forward pass
    on ``x`` is run to find them.
    """
    calls = _probe(model, x)
    counts = Counter(c.name for c in calls)
    seen: set[str] = set()
    layers: list[tuple[str, tuple[int, ...]]] = []
    for call in calls:
        shape = call.shape
        if counts[call.name] != 1 or call.name in seen or shape is None or len(shape) != 4:
            continue
        if shape[2] * shape[3] > 1:
            seen.add(call.name)
            layers.append((call.name, shape))
    return layers


def find_default_layer(model: nn.Module, x: Tensor) -> str:
    """Name the last convolutional feature-map layer of ``model`` (see the module docstring).

    Runs one no-grad forward pass on ``x`` with the model in eval mode; the model's training
    flags are restored afterwards.

    Raises:
        LayerError: if no module outputs spatial feature maps.

    Example:
        >>> find_default_layer(torchvision.models.resnet50(), torch.zeros(1, 3, 224, 224))
        'layer4'
    """
    calls = _probe(model, x)
    counts = Counter(c.name for c in calls)
    # A tensor made by a pass-through module stays "resampled" when a container returns it.
    resampled = {c.output_id for c in calls if isinstance(c.module, _PASS_THROUGH)}
    best: str | None = None
    for call in calls:
        shape = call.shape
        if shape is None or len(shape) != 4 or shape[2] * shape[3] <= 1:
            continue
        if counts[call.name] != 1 or call.output_id in resampled:
            continue
        best = call.name
    if best is None:
        raise LayerError(
            f"found no layer with spatial (B, C, h, w) output in {type(model).__name__}; "
            "pass layer= explicitly"
        )
    return best
