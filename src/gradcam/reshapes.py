"""Reading a layer's output as Grad-CAM's feature maps ``A``, (B, C, h, w).

The same reading holds in every spatial rank: for a (B, C, L) signal the maps are (B, C, l),
for a (B, C, D, H, W) volume or (B, C, T, H, W) clip (B, C, d, h, w) or (B, C, t, h, w); below,
``(h, w)`` stands for the layer's spatial size ``s`` and ``(H, W)`` for the input's ``S``.

Convolutional layers output (B, C, h, w) already. Transformers do not:

* ViT and DeiT blocks output a token sequence (B, N, D): ``p`` leading tokens (class,
  distillation, register tokens) then a ``gh x gw`` grid of patch tokens, row by row.
  :func:`tokens_to_maps` drops the leading tokens and lays the rest out as (B, D, gh, gw);
  :func:`token_grid` infers ``p`` and the grid from ``N`` and the input size ``(H, W)``: when
  the model's first convolution cuts the input into patches (kernel = stride, as ViT's
  ``conv_proj``, timm's ``patch_embed.proj`` and MONAI's ``patch_embedding.patch_embeddings``),
  its grid (:func:`patch_grid`) with ``p = N - gh*gw`` leading tokens; otherwise the
  smallest ``p`` (at most :data:`MAX_PREFIX`) such that ``N - p`` tokens form the grid that a
  patch size ``s`` gives, ``gh = H/s`` and ``gw = W/s`` rounded both down or both up (so
  non-square inputs and any patch size work). A signal's tokens need the patch grid: every
  count of tokens is some patch size's grid of a signal, so only the stem says whether one of
  them is a class token (MONAI's ViT with ``spatial_dims=1`` has one when ``classification``).
* Swin stages, timm's ConvNeXt blocks and MaxViT's inner layers output channels-last maps
  (B, h, w, C); :func:`channels_last_to_maps` permutes them. Swin3D's stages (torchvision's
  ``swin3d_t``) output (B, t, h, w, C) alike.
* Video transformers: torchvision's MViT outputs a class token then ``t x h x w`` tokens
  (B, 1 + t*h*w, D), whose grid shrinks from stage to stage with strides that differ in time
  and space, so it cannot be read from the input size. Its blocks declare it: a module whose
  ``forward`` takes a ``thw`` argument (MViT's blocks, attention and pooling) is called with
  its tokens and their ``(t, h, w)``; :func:`gradcam.hooks.eval_mode` records those
  (:func:`gradcam.hooks.token_grids`), and ``"auto"``/``"tokens"`` take the declared grid of
  the output's token count before inferring one.

Every reshape here only selects and permutes elements, so the gradient of the reshaped output
is the reshaped gradient: the engine reshapes ``A`` and ``dy/dA`` alike, as pytorch-grad-cam
does with its ``reshape_transform``.

With ``reshape="auto"`` (the default) the layout is read from the output's shape and from the
widths the model's modules declare. Conv, batch/group/instance norm and ``LayerNorm2d`` widths
are channel counts in dim 1 (channels first); ``nn.LayerNorm`` and ``nn.Linear`` widths are
feature sizes in the last dim. The layer's own submodules are asked first, then the whole
model. An output with as many dims as the input (4-D for images, 5-D for clips, 3-D for
signals) is channels-last when its last dim is such a feature size and its dim 1 is no channel
count, channels-first otherwise (a signal's channels-last output with up to
:data:`MAX_PREFIX` positions more than the patch grid of its patch embedding is a token
sequence with leading class tokens); otherwise a 3-D output is a token sequence when its last dim
is a feature size and its dim 1 no channel count. The spatial size must also fit the input's
aspect ratio (see :func:`plausible_grid`). Anything else raises
:class:`~gradcam.errors.LayerError` naming the shape and the reshapes that exist, never a map
over the wrong axis.

A layer may also output a *feature pyramid*: a mapping or sequence of (B, C_l, h_l, w_l) maps,
like the ordered dict of FPN levels (``'0'`` to ``'3'``, ``'pool'``) that torchvision's
detection backbones return. ``"pyramid"`` reads such an output, and so do ``"auto"`` and
``"channels-first"`` (the levels are channels-first maps); :func:`pyramid_levels` lists and
checks the levels. How methods weight a pyramid is in :mod:`gradcam.methods.gradcam`
(:func:`~gradcam.methods.gradcam.pyramid_cam`): each level keeps its own gradient, so no
level is resampled before its weights are taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gradcam.errors import LayerError
from gradcam.maps import upsample

__all__ = [
    "MAX_PREFIX",
    "PYRAMID_RESHAPES",
    "RESHAPES",
    "MapView",
    "Reshape",
    "Tokens",
    "channels_last_to_maps",
    "concat_levels",
    "finest_size",
    "input_stem",
    "is_pyramid",
    "patch_grid",
    "plausible_grid",
    "pyramid_levels",
    "rebuild_pyramid",
    "token_grid",
    "tokens_to_maps",
    "view_for",
    "widths",
]

#: How feature maps of each spatial rank are written in messages.
_MAPS = {1: "(B, C, l)", 2: "(B, C, h, w)", 3: "(B, C, d, h, w)"}

#: The most leading (class, distillation, register) tokens :func:`token_grid` tries.
MAX_PREFIX = 16

ReshapeName = Literal["auto", "channels-first", "channels-last", "tokens", "pyramid"]
RESHAPES: tuple[ReshapeName, ...] = ("auto", "channels-first", "channels-last", "tokens", "pyramid")

#: The reshapes that read a mapping or sequence of (B, C_l, h_l, w_l) maps as a pyramid.
PYRAMID_RESHAPES: tuple[ReshapeName, ...] = ("auto", "channels-first", "pyramid")

_HELP = (
    "reshapes: 'channels-first' (B, C, h, w), 'channels-last' (B, h, w, C), 'tokens' (B, N, D) "
    f"with up to {MAX_PREFIX} leading class/register tokens and a patch grid, "
    "Tokens(prefix=p, grid=(gh, gw)), 'pyramid' (a dict or list of (B, C_l, h_l, w_l) "
    "maps), or a callable (B, ...) -> (B, C, h, w)"
)


@dataclass(frozen=True)
class Tokens:
    """The token reshape with a known number of leading tokens and/or patch grid.

    Attributes:
        prefix: leading tokens to drop; ``None`` infers it (see :func:`token_grid`).
        grid: ``(gh, gw)`` patch grid (``(gt, gh, gw)`` for a clip); ``None`` takes the grid
            the model declares, or infers it from the input size.

    Examples:
        >>> from gradcam.layers import Layer
        >>> Layer("blocks.11.norm1", reshape=Tokens(prefix=5))  # class + 4 register tokens
        Layer(module='blocks.11.norm1', reshape=Tokens(prefix=5, grid=None))
    """

    prefix: int | None = None
    grid: tuple[int, ...] | None = None


#: A reshape as :class:`~gradcam.layers.Layer` takes it: a name, :class:`Tokens`, or a callable
#: mapping the layer's output (B, ...) to (B, C, h, w) by selecting and permuting elements.
Reshape = ReshapeName | Tokens | Callable[[Tensor], Tensor]


def input_stem(
    model: nn.Module, rank: int | None = None
) -> tuple[str, nn.modules.conv._ConvNd] | None:
    """``(name, module)`` of the model's first convolution (1-, 2- or 3-D, not transposed), or
    ``None`` without one; with ``rank``, its first convolution of that many spatial dims when
    it has one (a model that mixes ranks is read at the input's).

    The first convolution registered is the stem that reads the input in every torchvision,
    timm, MONAI and Hugging Face vision model (for video models too: ``stem.0`` of r3d_18,
    ``conv_proj`` of MViT, ``patch_embed.proj`` of Swin3D); its ``in_channels`` is the input's
    channel count and its rank the input's spatial rank.

    Examples:
        >>> input_stem(nn.Sequential(nn.Conv3d(3, 8, 3), nn.ReLU()))
        ('0', Conv3d(3, 8, kernel_size=(3, 3, 3), stride=(1, 1, 1)))
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if rank is None or module.weight.dim() == rank + 2:
                return name, module
            found = found or (name, module)
    return found


def channels_last_to_maps(output: Tensor) -> Tensor:
    """(B, h, w, C) -> (B, C, h, w); in any rank, (B, *s, C) -> (B, C, *s).

    Examples:
        >>> maps = channels_last_to_maps(torch.arange(6.0).view(1, 1, 2, 3))  # h=1, w=2, C=3
        >>> maps.shape, maps[0, :, 0, 1].tolist()  # the channels of the second position
        (torch.Size([1, 3, 1, 2]), [3.0, 4.0, 5.0])
    """
    return output.movedim(-1, 1)


def tokens_to_maps(output: Tensor, prefix: int, grid: tuple[int, ...]) -> Tensor:
    """(B, N, D) tokens -> (B, D, gh, gw): drop ``prefix`` leading tokens, lay out the rest
    (row-major: for a ``(gt, gh, gw)`` grid, frame by frame, each row by row).

    Raises:
        LayerError: if ``N - prefix`` is not the grid's number of positions.

    Examples:
        >>> t = torch.arange(10.0).view(1, 5, 2)  # a class token, then 2x2 patches of 2 dims
        >>> tokens_to_maps(t, 1, (2, 2))[0, 0]
        tensor([[2., 4.],
                [6., 8.]])
    """
    batch, count, dim = output.shape
    if count - prefix != math.prod(grid):
        raise LayerError(
            f"{count} tokens minus {prefix} leading ones do not form a {_times(grid)} grid"
        )
    return output[:, prefix:].reshape(batch, *grid, dim).movedim(-1, 1)


def _times(sizes: Iterable[int]) -> str:
    return "x".join(str(n) for n in sizes)


@lru_cache(maxsize=256)
def _grids(input_size: tuple[int, ...]) -> dict[int, frozenset[tuple[int, ...]]]:
    """Patch grids that a patch size ``s`` gives (``S_i / s`` per axis), by number of patches."""
    found: dict[int, set[tuple[int, ...]]] = {}
    for size in range(1, max(input_size) + 1):
        for grid in (
            tuple(n // size for n in input_size),
            tuple(-(-n // size) for n in input_size),
        ):
            if all(grid):
                found.setdefault(math.prod(grid), set()).add(grid)
    return {n: frozenset(grids) for n, grids in found.items()}


def patch_grid(model: nn.Module, input_size: tuple[int, ...]) -> tuple[int, ...] | None:
    """The patch grid of ``model``'s first convolution of the input's rank when it cuts the
    input into patches (kernel size = stride, no padding or dilation: a ViT's patch
    embedding), ``floor((S_i - k_i) / k_i) + 1`` per axis; ``None`` for any other stem.

    Examples:
        >>> patch_grid(nn.Sequential(nn.Conv1d(1, 8, 8, stride=8)), (64,))
        (8,)
        >>> patch_grid(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), (32, 32)) is None
        True
    """

    stem = input_stem(model, len(input_size))
    if stem is None:
        return None
    conv = stem[1]
    kernel, stride = tuple(conv.kernel_size), tuple(conv.stride)
    padding = conv.padding if isinstance(conv.padding, tuple) else (1,)  # "same": padded
    if (
        conv.weight.dim() != len(input_size) + 2
        or kernel != stride
        or any(padding)
        or any(d != 1 for d in conv.dilation)
    ):
        return None
    grid = tuple((n - k) // k + 1 for n, k in zip(input_size, kernel, strict=True))
    return grid if all(g >= 1 for g in grid) else None


def token_grid(
    count: int,
    input_size: tuple[int, ...],
    prefix: int | None = None,
    declared: Mapping[int, tuple[int, ...]] | None = None,
    patches: tuple[int, ...] | None = None,
) -> tuple[int, tuple[int, ...]]:
    """Infer ``(prefix, (gh, gw))`` for ``count`` tokens of an ``(H, W)`` input.

    A grid the model declared for ``count`` tokens (``declared``, see
    :func:`gradcam.hooks.token_grids`) is taken first, its prefix the tokens left over; then
    the grid of the model's patch embedding (``patches``, see :func:`patch_grid`) when at most
    :data:`MAX_PREFIX` tokens are left over.
    Otherwise, the smallest ``prefix`` (``0`` to :data:`MAX_PREFIX`, or the one given) such
    that ``count - prefix`` patches form the grid of some patch size ``s``: ``gh = H/s``,
    ``gw = W/s``, both rounded down or both up (for a signal or clip, every axis alike).

    Raises:
        LayerError: no such grid, or two grids fit the same number of patches.

    Examples:
        >>> token_grid(197, (224, 224))  # ViT-B/16: a class token and 14x14 patches
        (1, (14, 14))
        >>> token_grid(393, (224, 448))
        (1, (14, 28))
        >>> token_grid(65, (8, 64, 64), declared={65: (4, 4, 4)})  # MViT: the model says
        (1, (4, 4, 4))
        >>> token_grid(9, (64,)), token_grid(9, (64,), patches=(8,))  # a signal's class token
        ((0, (9,)), (1, (8,)))
    """
    for known, most in (((declared or {}).get(count), count), (patches, MAX_PREFIX)):
        if known is not None and len(known) == len(input_size):
            extra = count - math.prod(known)
            if 0 <= extra <= most and (prefix is None or prefix == extra):
                return extra, tuple(known)
    grids = _grids(input_size)
    prefixes = range(min(MAX_PREFIX, count - 1) + 1) if prefix is None else [prefix]
    for p in prefixes:
        fits = grids.get(count - p, frozenset())
        if len(fits) > 1:
            raise LayerError(
                f"{count} tokens of a {_times(input_size)} input fit several grids "
                f"({', '.join(_times(g) for g in sorted(fits))}) after {p} leading tokens; "
                "give reshape=Tokens(prefix=..., grid=(gh, gw))"
            )
        if fits:
            return p, next(iter(fits))
    leading = f"{prefix}" if prefix is not None else f"0 to {MAX_PREFIX}"
    raise LayerError(
        f"{count} tokens minus {leading} leading ones form no patch grid of a "
        f"{_times(input_size)} input"
    )


def plausible_grid(hw: tuple[int, ...], input_size: tuple[int, ...]) -> bool:
    """Whether an ``h x w`` map can cover an ``H x W`` input: ``|H/s - h| < 1`` and
    ``|W/s - w| < 1`` for some stride ``s > 0`` (so its aspect ratio is the input's).

    In other ranks the last two axes (a volume's or clip's ``h x w``) share a stride alike,
    a signal's one axis is always plausible, and a leading depth or time axis, whose stride
    video and medical networks choose apart from the spatial one, needs only no more
    positions than the input's.

    Examples:
        >>> plausible_grid((7, 7), (224, 224)), plausible_grid((1, 49), (224, 224))
        (True, False)
        >>> plausible_grid((4, 2, 2), (8, 64, 64)), plausible_grid((16, 2, 2), (8, 64, 64))
        (True, False)
    """
    if len(hw) != len(input_size):
        return False
    shared = min(2, len(hw))
    lead = len(hw) - shared
    if any(h > n for h, n in zip(hw[:lead], input_size[:lead], strict=True)):
        return False
    pairs = list(zip(hw[lead:], input_size[lead:], strict=True))
    low = max(n / (h + 1) for h, n in pairs)
    high = min(n / (h - 1) if h > 1 else float("inf") for h, n in pairs)
    return low < high


Widths = tuple[set[int], set[int]]


def widths(modules: Iterable[nn.Module]) -> Widths:
    """``(channel counts, feature sizes)`` the modules declare (see the module docstring).

    Examples:
        >>> widths(nn.Sequential(nn.Conv2d(3, 8, 1), nn.LayerNorm(4), nn.Linear(4, 2)).modules())
        ({8}, {2, 4})
    """
    channels: set[int] = set()
    features: set[int] = set()
    for module in modules:
        if isinstance(module, nn.modules.conv._ConvNd):
            channels.add(module.out_channels)
        elif isinstance(module, (nn.modules.batchnorm._NormBase)):
            channels.add(module.num_features)
        elif isinstance(module, nn.GroupNorm):
            channels.add(module.num_channels)
        elif isinstance(module, nn.LayerNorm) and module.normalized_shape:
            target = channels if "2d" in type(module).__name__.lower() else features
            target.add(module.normalized_shape[-1])
        elif isinstance(module, nn.Linear):
            features.update((module.in_features, module.out_features))
    return channels, features


def _features_last(
    shape: tuple[int, ...],
    layer: nn.Module,
    model: nn.Module,
    model_widths: Widths | None,
    maps: bool,
) -> bool:
    """Whether the widths say the last dim holds features and dim 1 does not hold channels;
    ``maps``: the output has the input's rank (maps, not a token sequence)."""
    channels, features = widths(layer.modules())
    first, last = shape[1] in channels, shape[-1] in features
    if first == last:  # the layer itself does not tell: ask the whole model
        channels, features = widths(model.modules()) if model_widths is None else model_widths
        first, last = shape[1] in channels, shape[-1] in features
        if maps and shape[1] in features:
            # Dim 1 could hold features as well as the last dim: keep PyTorch's own layout.
            return False
    return last and not first


@dataclass(frozen=True)
class MapView:
    """One concrete reshape of a layer's output to (B, C, h, w), for one output shape.

    Attributes:
        kind: ``"channels-first"``, ``"channels-last"``, ``"tokens"`` or ``"custom"``.
        prefix: leading tokens dropped (tokens only).
        grid: the ``(gh, gw)`` patch grid (tokens only; ``(gt, gh, gw)`` for a clip).
        function: the user's callable (custom only).
        rank: the spatial rank of the maps, the input's (2 for images).
    """

    kind: Literal["channels-first", "channels-last", "tokens", "custom"]
    prefix: int = 0
    grid: tuple[int, ...] = (0, 0)
    function: Callable[[Tensor], Tensor] | None = None
    rank: int = 2

    def __call__(self, output: Tensor) -> Tensor:
        """Reshape one output (or a gradient of its shape) to (B, C, *s)."""
        if self.kind == "channels-first":
            return output
        if self.kind == "channels-last":
            return channels_last_to_maps(output)
        if self.kind == "tokens":
            return tokens_to_maps(output, self.prefix, self.grid)
        assert self.function is not None
        maps = self.function(output)
        rank = self.rank
        if (
            not isinstance(maps, Tensor)
            or maps.dim() != 2 + rank
            or maps.shape[0] != output.shape[0]
        ):
            got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise LayerError(
                f"the reshape callable must map {tuple(output.shape)} to {_MAPS[rank]} with "
                f"B = {output.shape[0]}; it returned {got}"
            )
        return maps


def view_for(
    name: str,
    reshape: Reshape,
    shape: tuple[int, ...],
    input_size: tuple[int, ...],
    layer: nn.Module,
    model: nn.Module,
    *,
    model_widths: Widths | None = None,
    declared: Mapping[int, tuple[int, ...]] | None = None,
) -> MapView:
    """The reshape that turns layer ``name``'s output of ``shape`` into (B, C, h, w) maps
    (``(B, C, *s)`` of the input's spatial rank: (B, C, l) for a signal, (B, C, t, h, w) for
    a clip).

    Args:
        name: the layer's dotted name, for messages.
        reshape: the reshape asked for (``"auto"``: read from the shape, see the module
            docstring).
        shape: the layer's output shape.
        input_size: ``(H, W)`` of the model input (``(L,)``, ``(D, H, W)``: its spatial size).
        layer: the layer's module; ``model``: the whole model (their widths guide ``"auto"``).
        model_widths: ``widths(model.modules())`` when already known.
        declared: token grids the model declared, by token count (see :func:`token_grid`).

    Raises:
        LayerError: the output cannot be read as feature maps; names the shape and the
            reshapes that exist.

    Examples:
        A patch embedding then a ``LayerNorm`` over channels-last maps, as in Swin:

        >>> net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.LayerNorm(8))
        >>> view_for("1", "auto", (1, 16, 16, 8), (64, 64), net[1], net).kind
        'channels-last'
        >>> view_for("0", "auto", (1, 8, 16, 16), (64, 64), net[0], net).kind
        'channels-first'

        Swin3D's channels-last (B, t, h, w, C) stages, for a (B, 3, 8, 64, 64) clip:

        >>> clip = nn.Sequential(nn.Conv3d(3, 8, (2, 4, 4), stride=(2, 4, 4)), nn.LayerNorm(8))
        >>> view_for("1", "auto", (1, 4, 16, 16, 8), (8, 64, 64), clip[1], clip).kind
        'channels-last'
    """
    rank = len(input_size)
    where = f"layer {name!r} must output a {_MAPS.get(rank, _MAPS[2])} tensor of feature maps"
    if callable(reshape) and not isinstance(reshape, (str, Tokens)):
        return MapView("custom", function=reshape, rank=rank)
    if reshape == "pyramid":
        raise LayerError(
            f"layer {name!r} outputs one tensor {shape}, not a pyramid; 'pyramid' reads a dict "
            f"or list of (B, C_l, h_l, w_l) maps; {_HELP}"
        )
    if isinstance(reshape, Tokens) or reshape == "tokens":
        if len(shape) != 3:
            raise LayerError(f"{where}, or (B, N, D) tokens for 'tokens'; got {shape}; {_HELP}")
        given = reshape if isinstance(reshape, Tokens) else Tokens()
        if given.grid is not None:
            positions = math.prod(given.grid)
            prefix = shape[1] - positions if given.prefix is None else given.prefix
            if prefix < 0 or shape[1] - prefix != positions or len(given.grid) != rank:
                raise LayerError(f"{where}; {shape[1]} tokens do not fit {given}; {_HELP}")
            return MapView("tokens", prefix, given.grid, rank=rank)
        try:
            patches = patch_grid(model, input_size)
            prefix, grid = token_grid(shape[1], input_size, given.prefix, declared, patches)
        except LayerError as error:
            raise LayerError(f"{where}; its output {shape}: {error}; {_HELP}") from None
        return MapView("tokens", prefix, grid, rank=rank)
    if reshape in ("channels-first", "channels-last"):
        if len(shape) != 2 + rank:
            raise LayerError(f"{where}, {2 + rank}-D for {reshape!r}; got {shape}; {_HELP}")
        return MapView(reshape, rank=rank)
    if reshape != "auto":
        raise LayerError(f"unknown reshape {reshape!r}; {_HELP}")
    if len(shape) == 2 + rank:
        kind: Literal["channels-first", "channels-last"] = (
            "channels-last"
            if _features_last(shape, layer, model, model_widths, maps=True)
            else "channels-first"
        )
        hw = shape[1:-1] if kind == "channels-last" else shape[2:]
        if kind == "channels-last" and rank == 1:
            # A signal's (B, N, D) tokens have the rank of (B, L, C) maps: the patch
            # embedding says whether leading class tokens come first.
            patches = patch_grid(model, input_size)
            if patches is not None and 0 < shape[1] - patches[0] <= MAX_PREFIX:
                return MapView("tokens", shape[1] - patches[0], patches, rank=rank)
        if not plausible_grid(hw, input_size):
            raise LayerError(
                f"{where}; read as {kind}, its output {shape} gives {_times(hw)} maps, which "
                f"do not fit a {_times(input_size)} input; pass reshape= to say how "
                f"to read it; {_HELP}"
            )
        return MapView(kind, rank=rank)
    if len(shape) == 3:
        if not _features_last(shape, layer, model, model_widths, maps=False):
            raise LayerError(
                f"{where}; its output {shape} is not recognizably (B, N, D) tokens (D the "
                "width of a LayerNorm or Linear, N no conv channel count); pass reshape= to "
                f"say how to read it; {_HELP}"
            )
        return view_for(
            name,
            "tokens",
            shape,
            input_size,
            layer,
            model,
            model_widths=model_widths,
            declared=declared,
        )
    raise LayerError(f"{where}; got {shape}; {_HELP}")


def is_pyramid(output: Any) -> bool:
    """Whether ``output`` is a feature pyramid: a non-empty mapping, list or tuple of tensors.

    Examples:
        >>> is_pyramid({"0": torch.zeros(1, 2, 4, 4)}), is_pyramid(torch.zeros(1, 2, 4, 4))
        (True, False)
    """
    if isinstance(output, Mapping):
        values = list(output.values())
    elif isinstance(output, (list, tuple)):
        values = list(output)
    else:
        return False
    return bool(values) and all(isinstance(v, Tensor) for v in values)


def pyramid_levels(name: str, output: Any) -> tuple[tuple[str, Tensor], ...]:
    """The ``(level, maps)`` pairs of layer ``name``'s pyramid output, in its order: a
    mapping's keys (as text) or a sequence's indices, each with its (B, C_l, h_l, w_l) maps.

    Raises:
        LayerError: the output is no pyramid, a level is not a 4-D map with a position (names
            the level and its shape), or the levels disagree on the batch size.

    Examples:
        >>> from collections import OrderedDict
        >>> fpn = OrderedDict([("0", torch.zeros(1, 8, 4, 4)), ("pool", torch.zeros(1, 8, 1, 1))])
        >>> [(level, tuple(maps.shape)) for level, maps in pyramid_levels("fpn", fpn)]
        [('0', (1, 8, 4, 4)), ('pool', (1, 8, 1, 1))]
    """
    if not is_pyramid(output):
        raise LayerError(
            f"layer {name!r} outputs a {type(output).__name__}, not a pyramid (a dict or list "
            f"of (B, C_l, h_l, w_l) maps); {_HELP}"
        )
    pairs = (
        [(str(k), v) for k, v in output.items()]
        if isinstance(output, Mapping)
        else [(str(i), v) for i, v in enumerate(output)]
    )
    dims = [maps.dim() for _, maps in pairs if maps.dim() in (3, 4, 5)]
    for level, maps in pairs:
        if maps.dim() != (dims[0] if dims else 4) or math.prod(maps.shape[2:]) == 0:
            raise LayerError(
                f"level {level!r} of layer {name!r}'s pyramid has shape {tuple(maps.shape)}; "
                "every level must be a (B, C_l, h_l, w_l) map with h_l, w_l >= 1 (or all "
                "(B, C_l, l_l), or all (B, C_l, d_l, h_l, w_l))"
            )
    batches = {int(maps.shape[0]) for _, maps in pairs}
    if len(batches) > 1:
        shapes = ", ".join(f"{level} {tuple(maps.shape)}" for level, maps in pairs)
        raise LayerError(f"the levels of layer {name!r}'s pyramid differ in batch size: {shapes}")
    return tuple(pairs)


def rebuild_pyramid(output: Any, levels: Iterable[Tensor]) -> Any:
    """A container like ``output`` (a mapping, list, tuple or named tuple) holding ``levels``
    in place of its tensors, in order.

    Examples:
        >>> rebuild_pyramid({"a": torch.zeros(1)}, [torch.ones(1)])
        {'a': tensor([1.])}
    """
    values = list(levels)
    if isinstance(output, Mapping):
        pairs = list(zip(output.keys(), values, strict=True))
        try:
            return type(output)(pairs)  # type: ignore[call-arg]
        except TypeError:  # a mapping type that cannot be built from pairs
            return dict(pairs)
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return type(output)(*values)
    return type(output)(values)


def finest_size(levels: Iterable[Tensor]) -> tuple[int, ...]:
    """``(h_0, w_0)`` of the level with the most positions (the first such level on ties);
    the spatial size ``s_0`` in any rank.

    Examples:
        >>> finest_size([torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 4, 3)])
        (4, 3)
    """
    sizes = [tuple(int(n) for n in t.shape[2:]) for t in levels]
    return max(sizes, key=math.prod)


def concat_levels(levels: Iterable[Tensor]) -> Tensor:
    """Pyramid levels (B, C_l, h_l, w_l) upsampled bilinearly (``align_corners=False``) to the
    finest level's size and concatenated along channels: (B, sum_l C_l, h_0, w_0) float32.

    This is the single map a gradient-free method reads a pyramid as (pytorch-grad-cam's
    detection tutorial builds the same with its ``reshape_transform``, at the coarsest size);
    Grad-CAM never upsamples before weighting (see :func:`~gradcam.methods.gradcam.pyramid_cam`).

    Examples:
        >>> fine, coarse = torch.ones(1, 1, 2, 2), torch.full((1, 2, 1, 1), 3.0)
        >>> concat_levels([fine, coarse])[0, :, 0, 0]
        tensor([1., 3., 3.])
    """
    found = list(levels)
    size = finest_size(found)
    return torch.cat([upsample(level, size) for level in found], dim=1)
