"""Choosing the layer ``A`` whose feature maps Grad-CAM weights: by module, by name, or by default.

A layer is given as a submodule, a dotted name, or a :class:`Layer`: either of those with a
reshape that turns its output into (B, C, h, w) feature maps (see :mod:`gradcam.reshapes`:
token sequences of ViT-like models, channels-last maps of Swin; ``"auto"`` reads the layout
from the output's shape and the model's structure, or raises).

The default follows the paper (section 3), the last convolutional feature maps, and the
image, whatever else the model reads: the last module whose output is a spatial map (h*w > 1,
channels first or last, tokens, or a feature pyramid: a dict or list of maps), that runs
exactly once, whose output is not produced by a pooling, dropout or reshaping layer (those
only resample or rearrange features that an earlier module computed), and which
:mod:`gradcam.image_flow` finds to be a map *of the image*: it depends on the pixels, has the
input's batch size, depends on no non-image input (text, object queries, proposals, masks),
reaches the output other than by reshaping (a segmenter's upsampled class maps are its
output), and every path from the pixels to the output passes through it. So a CLIP wrapper
gets its vision tower, a captioner its image encoder, DETR its encoder, Faster R-CNN its
feature pyramid (see ``docs/models.md``). For ResNet-50 this is ``layer4``, for
VGG-16 ``features.29`` (relu5_3, 14x14 as in the paper), for the embedded EfficientNet-Lite0
``_head_act``, for Swin the final ``norm`` (channels-last, 7x7 at 224, the map the head
averages, as ``layer4`` is ResNet's).
The same holds for signals (B, C, L) and volumes or clips (B, C, D, H, W): a spatial map
there has more than one position.

Models whose last spatial output is a token sequence (ViT, DeiT) are different when their head
reads the class token only: after the last attention no patch token reaches the score (their
gradient is zero; the probe checks it). There the default is the input of the last attention
module, the last
block's first norm (``encoder.layers.encoder_layer_11.ln_1`` in torchvision's ViT-B/16,
``blocks[-1].norm1`` in timm), the layer pytorch-grad-cam documents for ViT. Without an
attention module, the last token layer is taken.

The choice depends on the input size (ResNet-18's ``layer4`` is 1x1 at 32x32, so ``layer3``
is taken there); methods make it again for every new input shape.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Permute

from gradcam.errors import GradCAMError, LayerError
from gradcam.hooks import ModuleCall, eval_mode, record_outputs, token_grids
from gradcam.image_flow import ImageFlow, trace_image
from gradcam.reshapes import (
    PYRAMID_RESHAPES,
    RESHAPES,
    MapView,
    Reshape,
    Tokens,
    is_pyramid,
    view_for,
    widths,
)

__all__ = [
    "Layer",
    "LayerLike",
    "ResolvedLayer",
    "find_default_layer",
    "resolve_layer",
    "spatial_layers",
]

# Modules that only resample, rearrange or pass on features computed before them.
# In every spatial rank (signals, images, volumes and clips).
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
    nn.FractionalMaxPool2d,
    nn.FractionalMaxPool3d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Upsample,
    Permute,
)


@dataclass(frozen=True)
class Layer:
    """A layer ``A`` and how to read its output as (B, C, h, w) feature maps.

    Attributes:
        module: the submodule, or its dotted name (``"layer4"``,
            ``"encoder.layers.encoder_layer_11.ln_1"``).
        reshape: ``"auto"`` (read the layout from the output shape, or raise),
            ``"channels-first"`` (B, C, h, w), ``"channels-last"`` (B, h, w, C), ``"tokens"``
            (B, N, D: leading class/register tokens dropped, the patch grid inferred from N and
            the input size), :class:`~gradcam.reshapes.Tokens` (prefix and grid given), or a
            callable (B, ...) -> (B, C, h, w) that only selects and permutes elements (it is
            applied to the output and to its gradient alike, like pytorch-grad-cam's
            ``reshape_transform``; for a pyramid it receives the whole dict or list), or
            ``"pyramid"``: a dict or list of (B, C_l, h_l, w_l) maps, like the FPN levels of
            torchvision's detection backbones (``"auto"`` and ``"channels-first"`` read such an
            output as a pyramid too; see :func:`gradcam.methods.gradcam.pyramid_cam`).

    Raises:
        LayerError: for an unknown reshape.

    Examples:
        A small ViT (random weights): 64 x 64 inputs in 16 px patches give a 4 x 4 token grid.

        >>> from torchvision.models import VisionTransformer
        >>> vit = VisionTransformer(64, 16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
        >>> layer = Layer("encoder.layers.encoder_layer_1.ln_1", reshape="tokens")
        >>> gradcam.GradCAM(vit, layer)(torch.randn(1, 3, 64, 64)).raw.shape
        torch.Size([1, 1, 4, 4])
    """

    module: nn.Module | str
    reshape: Reshape = "auto"

    def __post_init__(self) -> None:
        reshape = self.reshape
        if isinstance(reshape, str) and reshape not in RESHAPES:
            raise LayerError(f"unknown reshape {reshape!r}; choose from {', '.join(RESHAPES)}")
        if not isinstance(reshape, (str, Tokens)) and not callable(reshape):
            raise LayerError(
                f"reshape must be a name, Tokens(...) or a callable, got {type(reshape).__name__}"
            )


class ResolvedLayer(NamedTuple):
    """A layer found in a model: ``(module, dotted_name, reshape)``.

    A tuple, so ``resolved[0]`` is the module and ``resolved[1]`` the name.
    """

    module: nn.Module
    name: str
    reshape: Reshape = "auto"

    def view(
        self, model: nn.Module, shape: tuple[int, ...], input_size: tuple[int, ...]
    ) -> MapView:
        """The reshape of this layer's output of ``shape`` to (B, C, h, w) maps (of the
        input's spatial rank; ``input_size`` is its spatial size), with the token grids the
        model declared in its last forward pass (:func:`~gradcam.hooks.token_grids`).

        Raises:
            LayerError: the output cannot be read as feature maps (names the reshapes).
        """
        return view_for(
            self.name,
            self.reshape,
            shape,
            input_size,
            self.module,
            model,
            declared=token_grids(model),
        )

    @property
    def takes_pyramid(self) -> bool:
        """Whether an output that is a feature pyramid (a dict or list of maps) is read as one:
        for the reshapes ``"auto"``, ``"channels-first"``, ``"pyramid"`` and a callable (which
        then receives the whole container, like pytorch-grad-cam's ``reshape_transform``).

        Examples:
            >>> resolve_layer(model, "features").takes_pyramid
            True
            >>> resolve_layer(model, Layer("features", "channels-last")).takes_pyramid
            False
        """
        reshape = self.reshape
        if isinstance(reshape, str):
            return reshape in PYRAMID_RESHAPES
        return not isinstance(reshape, Tokens)


#: What every method's ``layer=`` takes.
LayerLike = nn.Module | str | Layer | ResolvedLayer


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def resolve_layer(model: nn.Module, layer: LayerLike) -> ResolvedLayer:
    """Find a layer given as a submodule, a dotted name, a :class:`Layer` (or a layer already
    resolved, checked against ``model``) in ``model``.

    Raises:
        LayerError: if the name does not exist (close names are suggested) or the module is not
            a submodule of ``model``.

    Examples:
        >>> resolve_layer(model, model.features.final_relu).name
        'features.final_relu'
        >>> resolve_layer(model, Layer("features.conv4b", "channels-first")).reshape
        'channels-first'
        >>> resolve_layer(model, "feature")
        Traceback (most recent call last):
        ...
        gradcam.errors.LayerError: model has no layer named 'feature'; did you mean features, ...
    """
    if isinstance(layer, ResolvedLayer) and _submodule(model, layer.name) is layer.module:
        return layer  # resolved once already: only confirmed to be this model's
    if isinstance(layer, (Layer, ResolvedLayer)):
        module, name, _ = resolve_layer(model, layer.module)
        return ResolvedLayer(module, name, layer.reshape)
    names = {name: module for name, module in model.named_modules() if name}
    if isinstance(layer, str):
        if layer in names:
            return ResolvedLayer(names[layer], layer)
        close = difflib.get_close_matches(layer, list(names), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LayerError(f"model has no layer named {layer!r}{hint}")
    if isinstance(layer, nn.Module):
        for name, module in names.items():
            if module is layer:
                return ResolvedLayer(module, name)
        raise LayerError(f"layer {type(layer).__name__} is not a submodule of the model")
    raise LayerError(
        f"layer must be an nn.Module, a dotted name or a Layer, got {type(layer).__name__}"
    )


def _probe(model: nn.Module, x: Tensor) -> list[ModuleCall]:
    try:
        with torch.no_grad(), eval_mode(model), record_outputs(model) as calls:
            model(x)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:  # a clip shorter than a kernel, say: one line
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise GradCAMError(
            f"the model cannot take an input of shape {tuple(x.shape)}: {first}"
        ) from exc
    return list(calls)


class _Spatial(NamedTuple):
    call: ModuleCall
    maps: tuple[int, ...]  # the (B, C, h, w) shape after the automatic reshape
    kind: str
    prefix: int = 0  # leading (class, register) tokens, for tokens


def _spatial_calls(model: nn.Module, x: Tensor) -> tuple[list[ModuleCall], list[_Spatial]]:
    """The probe's calls, and those that run once and output a spatial map (h*w > 1; in any
    rank, more than one position)."""
    calls = _probe(model, x)
    return calls, _spatial_of(model, x, calls)


def _spatial_of(model: nn.Module, x: Tensor, calls: list[ModuleCall]) -> list[_Spatial]:
    """The ``calls`` that run once and output a spatial map (h*w > 1)."""
    counts = Counter(c.name for c in calls)
    input_size = tuple(int(n) for n in x.shape[2:])
    model_widths = widths(model.modules())
    declared = token_grids(model)
    seen: set[str] = set()
    found: list[_Spatial] = []
    for call in calls:
        shape = call.shape
        if shape is None or len(shape) not in (3, 4, 5) or counts[call.name] != 1:
            continue
        if call.name in seen:
            continue
        try:
            view = view_for(
                call.name,
                "auto",
                shape,
                input_size,
                call.module,
                model,
                model_widths=model_widths,
                declared=declared,
            )
        except LayerError:
            continue
        maps = _maps_shape(view, shape)
        if math.prod(maps[2:]) > 1:
            seen.add(call.name)
            found.append(_Spatial(call, maps, view.kind, view.prefix))
    return found


def _maps_shape(view: MapView, shape: tuple[int, ...]) -> tuple[int, ...]:
    if view.kind == "channels-last":
        return (shape[0], shape[-1], *shape[1:-1])
    if view.kind == "tokens":
        return (shape[0], shape[2], *view.grid)
    return shape


def spatial_layers(model: nn.Module, x: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """List ``(name, maps_shape)`` of every layer usable as ``A``, in forward order.

    Usable: runs once and outputs feature maps with h*w > 1, channels first, channels last
    or as tokens (see :mod:`gradcam.reshapes`); ``maps_shape`` is their (B, C, h, w) shape.
    One no-grad forward pass on ``x`` is run to find them.

    Examples:
        >>> spatial_layers(model, torch.zeros(1, 3, 128, 128))[-2:]
        [('features.final_relu', (1, 128, 16, 16)), ('features', (1, 128, 16, 16))]
    """
    return [(s.call.name, s.maps) for s in _spatial_calls(model, x)[1]]


def _is_attention(module: nn.Module) -> bool:
    # MONAI names its self-attention ``SABlock``.
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith(
        ("Attention", "SelfAttention", "SABlock")
    )


def _image_pyramid(output: Any, x: Tensor) -> bool:
    """A dict or list of at least two distinct maps of the input's rank (FPN levels)."""
    if not is_pyramid(output):
        return False
    levels = list(output.values()) if isinstance(output, Mapping) else list(output)
    return len({id(t) for t in levels}) >= 2 and all(t.dim() == x.dim() for t in levels)


class _Candidate(NamedTuple):
    at: int  # the call's position in the trace
    name: str
    kind: str  # a MapView kind, or "pyramid"
    prefix: int = 0


def _candidates(model: nn.Module, x: Tensor, flow: ImageFlow) -> list[_Candidate]:
    """The layers whose output is a map of the image, per image, before any non-image input
    is mixed in and on the path to the output, in completion order (see the module
    docstring); none made by a pass-through module."""
    calls = [item.call for item in flow.traced]
    index = {id(call): i for i, call in enumerate(calls)}
    counts = Counter(c.name for c in calls)
    # A tensor made by a pass-through module stays "resampled" when a container returns it; one
    # that returns its input itself (Identity, Dropout in eval mode) resamples nothing.
    passing = [c for c in calls if isinstance(c.module, _PASS_THROUGH)]
    resampled = {c.output_id for c in passing if c.output_id != c.input_id}
    found = [
        _Candidate(index[id(s.call)], s.call.name, s.kind, s.prefix)
        for s in _spatial_of(model, x, calls)
        if s.call.output_id not in resampled
        and not isinstance(s.call.module, _PASS_THROUGH)
        and flow.image_map(index[id(s.call)])
    ]
    found += [
        _Candidate(i, item.call.name, "pyramid")
        for i, item in enumerate(flow.traced)
        if counts[item.call.name] == 1
        and not isinstance(item.call.module, _PASS_THROUGH)
        and _image_pyramid(item.output, x)
        and flow.image_map(i)
    ]
    return sorted(found)


def _no_layer(model: nn.Module, x: Tensor, flow: ImageFlow) -> LayerError:
    spatial = [s.call.name for s in _spatial_of(model, x, [t.call for t in flow.traced])]
    seen = f"; spatial outputs seen: {', '.join(spatial[-5:])}" if spatial else ""
    mixed = f"; the image meets other inputs at {', '.join(flow.mixing[:3])}" if flow.mixing else ""
    return LayerError(
        f"found no layer of {type(model).__name__} that outputs a spatial map of the image "
        f"(B, C, h, w), tokens or channels-last maps, per image and before other inputs are mixed "
        f"in{mixed}{seen}; pass layer= explicitly"
    )


def find_default_layer(model: nn.Module, x: Tensor) -> str:
    """Name the layer Grad-CAM uses by default for ``model`` on inputs shaped like ``x``.

    The last layer whose output is a spatial map of the image (or patch tokens, or a feature
    pyramid), one per image, on the path from the input to the output and before anything
    mixes in other inputs (text, queries, proposals), through which every path from the
    pixels to the output passes; for token models whose output reads no patch token of that
    layer, the input of the last attention (see the module docstring). Runs one forward pass
    on ``x`` recording the autograd graph (and, for a token layer, one backward pass) with the
    model in eval mode; the model's training flags are restored afterwards and no gradient is
    kept.

    Raises:
        LayerError: if no module qualifies (names the spatial layers seen and where other
            inputs are mixed in).

    Examples:
        >>> find_default_layer(model, torch.zeros(1, 3, 128, 128))
        'features'
        >>> from torchvision.models import VisionTransformer
        >>> vit = VisionTransformer(64, 16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
        >>> find_default_layer(vit, torch.zeros(1, 3, 64, 64))
        'encoder.layers.encoder_layer_1.ln_1'
    """
    with trace_image(model, x) as flow:
        found = _candidates(model, x, flow)
        if not found:
            raise _no_layer(model, x, flow)
        chosen = next((c for c in reversed(found) if flow.is_cut(c.at)), found[-1])
        if chosen.kind != "tokens" or flow.reaches_output(chosen.at, chosen.prefix):
            return chosen.name
        calls = [item.call for item in flow.traced]
        tokens = {
            calls[c.at].output_id: c.name
            for c in reversed(found)
            if c.kind == "tokens" and c.at <= chosen.at
        }
        attention = [c for c in calls if _is_attention(c.module) and c.input_id in tokens]
        if attention:
            return tokens[attention[-1].input_id]  # type: ignore[index]
        return chosen.name
