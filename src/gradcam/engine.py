"""The one engine every gradient method shares: one forward pass, then batched backward passes.

For a batch ``x`` and ``K`` targets per image, :func:`compute_gradients` runs the model once,
evaluates the ``K`` target scores ``y^c`` (B, K), and takes, each with one batched backward
pass (``torch.autograd.grad`` with ``is_grads_batched``):

* ``dy^c/dA`` (B, K, C, h, w) at a layer ``A`` (Grad-CAM's gradients; (B, K, C, l) for a
  (B, C, L) signal, (B, K, C, d, h, w) for a (B, C, D, H, W) volume or clip), or, for a layer whose
  output is a feature pyramid (a dict or list of maps), ``dy^c/dA_l`` at every level ``l``,
  all levels in the same backward pass (:class:`Level`), and/or
* ``dy^c/dx`` (B, K, C, *S) at the input of spatial size ``S``, under one or more rectifier
  rules (plain, guided, deconv; see :mod:`gradcam.rectifiers`), all from the same forward pass.

When only the layer gradient is needed, the network before the layer records no graph (it is
cut at the layer). Parameter ``.grad`` fields are never touched.

The user's model and input are left exactly as they were: hooks live for one call, the model
runs in eval mode during the call and every module's ``training`` flag is restored afterwards.
A call holds the model's lock (:func:`gradcam.hooks.model_lock`) from start to end, so threads
sharing a model take turns. :func:`eval_mode` lives in :mod:`gradcam.hooks` and is re-exported
here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from gradcam.errors import GradCAMError, LayerError, TargetError
from gradcam.hooks import LayerCapture, capture_layer, eval_mode, model_lock, rectifier_mode
from gradcam.layers import ResolvedLayer
from gradcam.rectifiers import RectifierState, Rule
from gradcam.reshapes import input_stem
from gradcam.targets import TargetLike, as_logits, class_names, resolve_targets

__all__ = [
    "INPUT_LAYOUTS",
    "Gradients",
    "Level",
    "all_finite",
    "check_input",
    "compute_gradients",
    "eval_mode",
    "fast_layout",
    "input_channels",
    "input_layouts",
    "input_stem",
    "run_in_fast_layout",
    "spatial_size",
]

T = TypeVar("T")

_FAST: ContextVar[bool] = ContextVar("gradcam_fast_layout", default=False)

#: The attribute, set to ``True`` on a model, that says its forward pass rejected a
#: channels-last input (a ``view`` of feature maps, say): it is not tried again.
_CONTIGUOUS_ONLY = "_gradcam_contiguous_only"


@dataclass(frozen=True)
class Gradients:
    """What one forward pass and its backward passes give (all tensors detached).

    Attributes:
        scores: ``y^c``, (B, K), the target scores (before softmax for classes).
        classes: (B, K) class ids, -1 for callable targets.
        logits: (B, N) class scores of the model output, or ``None`` if it has none.
        activations: ``A``, (B, C, *s), the layer's output after its reshape (tokens and
            channels-last outputs become channels-first maps), when a layer was asked for:
            ``s`` is (l,), (h, w) or (d, h, w), the layer's spatial size (a (B, C, H, W)
            image gives (B, C, h, w) maps, a (B, C, T, H, W) clip (B, C, t, h, w) maps).
        gradients: ``dy^c/dA``, (B, K, C, *s), reshaped alike, when a layer was asked for.
        input_gradients: ``dy^c/dx``, (B, K, C, *S) (``S`` the input's spatial size), for
            each rule asked for.
        levels: for a layer that outputs a feature pyramid, its levels in order, each with its
            own ``A_l`` and ``dy^c/dA_l`` (see :class:`Level`); ``activations`` and
            ``gradients`` are then ``None``.
    """

    scores: Tensor
    classes: Tensor
    logits: Tensor | None
    activations: Tensor | None = None
    gradients: Tensor | None = None
    input_gradients: dict[str, Tensor] = field(default_factory=dict)
    levels: tuple[Level, ...] = ()


@dataclass(frozen=True)
class Level:
    """One level of a feature pyramid and the gradients to it (detached).

    Attributes:
        name: the level's key (``"0"``, ``"pool"``) or index in the layer's output.
        activations: ``A_l``, (B, C_l, h_l, w_l).
        gradients: ``dy^c/dA_l``, (B, K, C_l, h_l, w_l).
    """

    name: str
    activations: Tensor
    gradients: Tensor


def all_finite(t: Tensor) -> bool:
    """Whether no element of ``t`` is NaN or infinite.

    A sum is finite only when every element is, and costs a few percent of an elementwise
    test; the exact test runs only when the sum is not finite (it may just have overflowed).
    """
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


#: The input layouts the engine takes, by number of dimensions: a signal, an image, and a
#: volume or clip (video models take (B, C, T, H, W), torchvision's and PyTorchVideo's order).
INPUT_LAYOUTS = {3: "(B, C, L)", 4: "(B, C, H, W)", 5: "(B, C, D, H, W)"}
_LAYOUTS_TEXT = "(B, C, L), (B, C, H, W) or (B, C, D, H, W)"


def input_channels(model: nn.Module) -> tuple[str, int] | None:
    """``(name, in_channels)`` of the model's first convolution, or ``None`` without one
    (its first 2-D one when it has one; see :func:`input_stem`).

    Examples:
        >>> input_channels(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
        ('0', 3)
    """
    stem = input_stem(model, 2)
    return None if stem is None else (stem[0], stem[1].in_channels)


def spatial_size(x: Tensor) -> tuple[int, ...]:
    """The spatial size of a (B, C, *spatial) batch: ``(L,)``, ``(H, W)`` or ``(D, H, W)``.

    Examples:
        >>> spatial_size(torch.zeros(2, 3, 8, 64, 64))
        (8, 64, 64)
    """
    return tuple(int(n) for n in x.shape[2:])


def check_input(x: Any, model: nn.Module) -> Tensor:
    """Validate an input batch and return it on the model's device and floating dtype.

    The batch is a signal (B, C, L), an image (B, C, H, W), or a volume or clip
    (B, C, D, H, W); when the model's first convolution (:func:`input_stem`) is 1-, 2- or 3-D,
    the input must have its rank and its channel count, and a signal, volume or clip at least
    its kernel's (dilated, padded) extent along every axis (a clip shorter than the temporal
    kernel is refused here, in one line). The caller's tensor is never modified: a converted copy
    is returned when needed.

    Raises:
        GradCAMError: if ``x`` is not a finite floating tensor of one of those shapes (a
            meta-device tensor holds no values), or does not fit the model's first convolution
            (rank, channels, kernel extent); or the model is a TorchScript module (it cannot be
            hooked).

    Examples:
        >>> check_input(torch.zeros(1, 3, 8, 8), nn.Conv2d(3, 8, 3)).shape
        torch.Size([1, 3, 8, 8])
        >>> check_input(torch.zeros(1, 3, 2, 8, 8), nn.Conv3d(3, 8, 3))
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: input axis D has 2 positions, fewer than the 3 that the ...
    """
    if not isinstance(x, Tensor):
        raise GradCAMError(f"input must be a torch.Tensor of shape {_LAYOUTS_TEXT}, got {type(x)}")
    if isinstance(model, torch.jit.ScriptModule):
        raise GradCAMError(
            "TorchScript models cannot be explained: they cannot be hooked; pass the original "
            "nn.Module (before torch.jit.script or torch.jit.trace)"
        )
    if x.is_meta:
        raise GradCAMError("input is on the meta device and holds no values: pass a real tensor")
    found = input_stem(model, x.dim() - 2)
    rank = None if found is None else found[1].weight.dim()  # 3, 4 or 5: the input's
    layout = INPUT_LAYOUTS.get(rank or 0, _LAYOUTS_TEXT)
    if x.dim() not in INPUT_LAYOUTS or (rank is not None and x.dim() != rank):
        hint = ""
        if x.dim() == (2 if rank is None else rank - 1):
            hint = " (add a batch dimension with x.unsqueeze(0))"
        elif rank is not None and x.dim() in INPUT_LAYOUTS:
            assert found is not None
            hint = (
                f": the model's first convolution {found[0]!r} is a "
                f"{type(found[1]).__name__}, which reads {layout} input"
            )
        raise GradCAMError(f"input must have shape {layout}, got {tuple(x.shape)}{hint}")
    if x.numel() == 0:
        raise GradCAMError(f"input is empty: shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise GradCAMError(f"input must be a floating tensor, got {x.dtype}")
    if found is not None:
        _check_stem(x, *found)
        if x.dim() != 4:
            # Images keep their checks as they were: callers probe a model's device with a
            # 1x1 image, and the forward pass names an image smaller than a kernel.
            _check_extent(x, *found)
    if not all_finite(x):
        raise GradCAMError("input contains NaN or infinite values")
    param = next(model.parameters(), None)
    if param is not None:
        dtype = param.dtype if param.dtype.is_floating_point else x.dtype
        return x.to(device=param.device, dtype=dtype)
    return x


def _check_stem(x: Tensor, name: str, stem: nn.modules.conv._ConvNd) -> None:
    """Raise when ``x``'s channels do not fit the first convolution ``stem``."""
    channels = stem.in_channels
    if x.shape[1] != channels:
        hint = " (drop the alpha channel: x[:, :3])" if (x.shape[1], channels) == (4, 3) else ""
        raise GradCAMError(
            f"input has {x.shape[1]} channels, but the model takes {channels} (its first "
            f"convolution {name!r} has in_channels={channels}): input shape "
            f"{tuple(x.shape)}{hint}"
        )


def _check_extent(x: Tensor, name: str, stem: nn.modules.conv._ConvNd) -> None:
    """Raise when an axis of ``x`` is shorter than the (dilated, padded) kernel of ``stem``."""
    if stem.padding == "same":
        return
    padding = stem.padding if isinstance(stem.padding, tuple) else (0,) * (x.dim() - 2)
    axes = INPUT_LAYOUTS[x.dim()][7:-1].split(", ")  # the spatial axes' letters
    for i, size in enumerate(x.shape[2:]):
        pad = 2 * int(padding[i])
        extent = int(stem.dilation[i]) * (int(stem.kernel_size[i]) - 1) + 1
        if size + pad < extent:
            raise GradCAMError(
                f"input axis {axes[i]} has {size} positions, fewer than the {extent} that the "
                f"model's first convolution {name!r} reads (kernel {tuple(stem.kernel_size)}): "
                f"input shape {tuple(x.shape)}"
            )


@contextmanager
def fast_layout(enabled: bool = True) -> Iterator[None]:
    """Within the block, the engine's CPU forward passes take channels-last input.

    oneDNN's convolutions run faster on it, and every activation after the stem inherits the
    layout. Measured on this project's 2-core CPU (torch 2.15, idle): Grad-CAM 1.2-1.4x faster
    for EfficientNet-Lite0, MobileNetV3, DenseNet-121, VGG-16 and ResNet-50 at batch 8, no
    slower at batch 1 or for vision transformers; no-grad forwards 1.4-1.8x faster at batch 16.
    Again with ``benchmarks/bench_speedups.py`` (ResNet-50 at 224 px, on/off interleaved, one
    thread, 9 rounds, the 2 cores at a load average of 13-15): Grad-CAM at batch 1, the
    headline case, 706 against 712 ms (1.01x); at batch 8, 5.45 against 6.19 s (1.14x); a
    second run at a load of 15-19: 0.96x and 1.10x. Too loaded to tell more than that.

    It is off by default because the layout changes the summation order: maps equal the usual
    layout's to float rounding only, and where a pre-activation sits at zero (a constant
    image, an untrained network) a flipped ReLU can move a gradient by far more. Outside the
    block, results are bit-identical to Captum's, torchcam's and pytorch-grad-cam's on the
    same model; the perturbation methods' no-grad copies always use it
    (:class:`~gradcam.methods.perturbation.CopyRunner`). The setting is per thread (a
    context variable).

    Examples:
        >>> with fast_layout():
        ...     input_layouts(model, x)
        (torch.channels_last, None)
        >>> input_layouts(model, x)  # the caller's layout
        (None,)
    """
    token = _FAST.set(enabled)
    try:
        yield
    finally:
        _FAST.reset(token)


def input_layouts(
    model: nn.Module, x: Tensor, fast: bool | None = None
) -> tuple[torch.memory_format | None, ...]:
    """The memory layouts :func:`run_in_fast_layout` tries for ``x``, first choice first.

    ``None`` is the caller's own layout. With ``fast`` (default: inside :func:`fast_layout`),
    a (B, C, H, W) batch on the CPU goes channels-last first, unless ``model`` once rejected
    it (which the model keeps, in its ``_gradcam_contiguous_only`` attribute). Accelerators
    keep the caller's layout.
    """
    fast = _FAST.get() if fast is None else fast
    rejected = model.__dict__.get(_CONTIGUOUS_ONLY, False)
    if fast and x.dim() == 4 and x.device.type == "cpu" and not rejected:
        return (torch.channels_last, None)
    return (None,)


def run_in_fast_layout(
    model: nn.Module, x: Tensor, forward: Callable[[Tensor], T], *, fast: bool | None = None
) -> T:
    """``forward(x)``, ``x`` in the first layout of :func:`input_layouts` that ``model`` accepts.

    The layout changes only strides, never values. A forward pass that raises a
    ``RuntimeError`` on channels-last input (a ``view`` of feature maps, say) is run again in
    the caller's layout; if that one succeeds the model remembers it (on itself, see
    :func:`input_layouts`), otherwise its error is raised. ``forward`` must therefore be
    safe to run twice (hooks scoped to one attempt).

    Raises:
        GradCAMError: the model cannot take the input (its error's first line).

    Examples:
        >>> logits = run_in_fast_layout(model, x, model, fast=True)
        >>> bool(torch.allclose(logits, model(x), atol=1e-4))
        True
    """
    layouts = input_layouts(model, x, fast)
    for i, layout in enumerate(layouts):
        try:
            output = forward(x if layout is None else x.contiguous(memory_format=layout))
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            if i < len(layouts) - 1:
                continue
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise GradCAMError(
                f"the model cannot take an input of shape {tuple(x.shape)}: {first}"
            ) from exc
        if i > 0:
            model.__dict__[_CONTIGUOUS_ONLY] = True
        return output
    raise AssertionError("unreachable: input_layouts is never empty")


def _batched_grad(scores: Tensor, wrt: Tensor, what: str, *, retain: bool) -> Tensor:
    """``d scores[:, k] / d wrt`` for every k as (B, K, ...), in one batched backward pass.

    ``retain`` keeps the graph for a later backward pass; the last pass frees it as it goes,
    which lets the backward pass reuse the saved activations' memory.
    """
    return _batched_grads(scores, [wrt], what, retain=retain)[0]


def _batched_grads(
    scores: Tensor, wrts: Sequence[Tensor], what: str, *, retain: bool
) -> list[Tensor]:
    """``d scores[:, k] / d wrt`` for every k and every tensor of ``wrts`` as (B, K, ...),
    all from one batched backward pass (a pyramid's levels share it)."""
    batch, k = scores.shape
    if not scores.requires_grad:
        raise TargetError(
            f"the target scores do not depend on the {what} (no gradient path); "
            "choose a layer that the scores are computed from"
        )
    inputs = list(wrts)
    found: Sequence[Tensor | None]
    # Images of a batch are independent in eval mode, so the gradient of the batch sum of
    # column k gives every image's own gradient for its target k.
    if k == 1:
        found = torch.autograd.grad(scores.sum(), inputs, retain_graph=retain, allow_unused=True)
        return [_zeros_if_none(g, w).unsqueeze(1) for g, w in zip(found, inputs, strict=True)]
    one_hot = torch.eye(k, dtype=scores.dtype, device=scores.device)
    grad_outputs = one_hot[:, None, :].expand(k, batch, k)
    try:
        with warnings.catch_warnings():
            # vmap reports ops without a batching rule; they still give exact results.
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            found = torch.autograd.grad(
                scores,
                inputs,
                grad_outputs,
                retain_graph=True,  # the fallback below needs the graph if this fails
                is_grads_batched=True,
                allow_unused=True,
            )
    except RuntimeError:
        # Some custom autograd Functions cannot be vmapped: fall back to K backward passes.
        per_target = [
            torch.autograd.grad(scores[:, i].sum(), inputs, retain_graph=True, allow_unused=True)
            for i in range(k)
        ]
        found = [
            torch.stack([_zeros_if_none(grads[j], w) for grads in per_target])
            for j, w in enumerate(inputs)
        ]
    return [
        w.new_zeros((batch, k, *w.shape[1:])) if g is None else g.transpose(0, 1)
        for g, w in zip(found, inputs, strict=True)
    ]


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def compute_gradients(
    model: nn.Module,
    x: Tensor,
    targets: TargetLike | None,
    *,
    layer: ResolvedLayer | tuple[nn.Module, str] | None = None,
    layer_rule: Rule = "plain",
    input_rules: Sequence[Rule] = (),
    checked: bool = False,
) -> Gradients:
    """Run ``model`` on ``x`` once; return the target scores and the gradients asked for.

    One function, long on purpose: the model's lock, grad mode and every hook are scoped to
    one ``with`` block (nothing outlives the call), so the pass, its backward passes and their
    checks all live inside it.

    Args:
        model: any ``nn.Module``; not modified.
        x: (B, C, L), (B, C, H, W) or (B, C, D, H, W) input batch; not modified.
        targets: see :mod:`gradcam.targets`; ``None`` is the top-1 class.
        layer: a layer that runs once (from :func:`~gradcam.layers.resolve_layer`, or a
            ``(module, dotted_name)`` pair): its output, reshaped to (B, C, *s) feature maps
            ``A`` (see :mod:`gradcam.reshapes`), and ``dy^c/dA`` are returned. The gradient is
            taken to the raw output and reshaped the same way.
        layer_rule: rectifier rule for the gradient to the layer (``"plain"`` for Grad-CAM;
            ``"guided"`` and ``"deconv"`` are appendix B ablations).
        input_rules: rectifier rules for the gradients to the input, one backward pass each.
        checked: ``x`` is what :func:`check_input` returned for ``model`` (the caller checked
            it at its boundary), so it is not checked again.

    Raises:
        LayerError: the layer never ran, ran twice, or its output cannot be read as feature
            maps.
        TargetError: the targets do not fit the output.
        GradCAMError: bad input, or the model produced non-finite scores or gradients.

    Examples:
        >>> g = compute_gradients(model, x, [3, 4], layer=(model.features, "features"))
        >>> g.classes, g.gradients.shape  # dy^c/dA for 2 classes: (B, 2, C, h, w)
        (tensor([[3, 4]]), torch.Size([1, 2, 128, 16, 16]))
        >>> g = compute_gradients(model, x, None, input_rules=["guided"])  # top-1 class
        >>> g.classes, g.input_gradients["guided"].shape  # (B, 1, 3, H, W)
        (tensor([[3]]), torch.Size([1, 1, 3, 128, 128]))
    """
    if layer is None and not input_rules:
        raise ValueError("compute_gradients needs a layer, input rules, or both")
    if not checked:
        x = check_input(x, model)
    resolved_layer = None if layer is None else ResolvedLayer(*layer)
    to_input = bool(input_rules)
    state = RectifierState()
    grad_mode = torch.is_grad_enabled()
    # A caller's inference_mode would forbid autograd leaves; leaving it re-enables grad mode,
    # so grad mode is set inside.
    with model_lock(model), torch.inference_mode(False):
        try:
            if to_input and x.is_inference():
                x = x.clone()  # a normal tensor: inference tensors cannot become leaves

            def forward(laid_out: Tensor) -> tuple[Tensor, LayerCapture | None, Any]:
                # Without input gradients, the network before the layer records no graph.
                source = laid_out.detach().requires_grad_(True) if to_input else laid_out
                torch.set_grad_enabled(to_input)
                with ExitStack() as stack:
                    stack.enter_context(eval_mode(model))
                    if to_input or layer_rule != "plain":
                        stack.enter_context(rectifier_mode(state))
                    capture = (
                        None
                        if resolved_layer is None
                        else stack.enter_context(
                            capture_layer(
                                resolved_layer.module,
                                resolved_layer.name,
                                detach=not to_input,
                                pyramid=resolved_layer.takes_pyramid,
                            )
                        )
                    )
                    return source, capture, model(source)

            source, capture, output = run_in_fast_layout(model, x, forward)
            torch.set_grad_enabled(True)
            if capture is not None and capture.output is None and not capture.levels:
                raise LayerError(f"layer {capture.name!r} did not run during the forward pass")
            resolved = resolve_targets(targets, output, x.shape[0], names=class_names(model))
            if not all_finite(resolved.scores.detach()):
                raise GradCAMError("the model produced NaN or infinite target scores")
            activations = layer_grads = None
            levels: tuple[Level, ...] = ()
            if resolved_layer is not None and capture is not None and capture.levels:
                state.rule = layer_rule
                levels = _level_gradients(resolved_layer, capture.levels, resolved.scores, to_input)
            if resolved_layer is not None and capture is not None and capture.output is not None:
                raw = capture.output
                view = resolved_layer.view(model, tuple(raw.shape), spatial_size(x))
                # Contiguous copies: a channels-last forward pass leaves A strided (see
                # fast_layout), and callers may view them.
                activations = view(raw.detach()).contiguous()
                state.rule = layer_rule
                raw_grads = _batched_grad(resolved.scores, raw, "chosen layer", retain=to_input)
                # A reshape only selects and permutes, so it maps dy/d(output) to dy/dA.
                maps = view(raw_grads.flatten(0, 1))
                layer_grads = maps.reshape(*raw_grads.shape[:2], *maps.shape[1:]).contiguous()
            input_grads: dict[str, Tensor] = {}
            for i, rule in enumerate(input_rules):
                state.rule = rule
                last = i == len(input_rules) - 1
                rule_grad = _batched_grad(resolved.scores, source, "input", retain=not last)
                input_grads[rule] = rule_grad.detach().contiguous()
            try:
                logits: Tensor | None = as_logits(output).detach()
            except TargetError:
                logits = None
        finally:
            torch.set_grad_enabled(grad_mode)
    level_grads = [(f"level {level.name!r}", level.gradients) for level in levels]
    for name, grad in [("layer", layer_grads), *level_grads, *input_grads.items()]:
        if grad is not None and not all_finite(grad):
            raise GradCAMError(f"gradients to the {name} contain NaN or infinite values")
    return Gradients(
        scores=resolved.scores.detach(),
        classes=resolved.classes.detach(),
        logits=logits,
        activations=activations,
        gradients=None if layer_grads is None else layer_grads.detach(),
        input_gradients=input_grads,
        levels=levels,
    )


def _level_gradients(
    layer: ResolvedLayer,
    captured: tuple[tuple[str, Tensor], ...],
    scores: Tensor,
    retain: bool,
) -> tuple[Level, ...]:
    """Each pyramid level with its gradient, all levels from one batched backward pass."""
    if not isinstance(layer.reshape, str):
        raise LayerError(
            f"layer {layer.name!r} outputs a feature pyramid: a reshape callable on it is for "
            "gradient-free methods (the gradient of a resized level is not the resized "
            "gradient); give reshape='pyramid' to weight each level by its own gradient"
        )
    tensors = [maps for _, maps in captured]
    grads = _batched_grads(scores, tensors, f"layer {layer.name!r}", retain=retain)
    return tuple(
        Level(name, maps.detach().contiguous(), grad.detach().contiguous())
        for (name, maps), grad in zip(captured, grads, strict=True)
    )
