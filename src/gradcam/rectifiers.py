"""Backward rules for activation functions: plain, guided (Guided Backprop) and deconv.

Guided Backpropagation (Springenberg et al.) and Deconvolution (Zeiler and Fergus) differ from
the plain gradient only in how gradients pass backward through rectifiers. For an activation
``y = f(x)`` and an incoming gradient ``g = dL/dy``:

* ``plain``:  ``f'(x) * g`` (the true gradient);
* ``guided``: ``f'(x) * [x > 0] * max(g, 0)``: only positive gradients, only at positive inputs;
* ``deconv``: ``max(g, 0)``: only positive gradients, whatever the input.

For ReLU these are exactly the two papers' rules. The same rules are applied to the other
rectifier-like activations a model may use, on their own derivative: ReLU6 and hardtanh
(``f'(x) = [lo < x < hi]``), and SiLU, GELU, ELU, leaky ReLU, hardswish, Mish, SELU, CELU and
softplus (``f'`` from autograd). So the embedded EfficientNet-Lite0, whose activations are
``nn.ReLU6``, is guided, where Captum's Guided Backprop leaves ReLU6 as a plain gradient.

On transformers only the MLPs' GELUs are rectifier-like: they get the guided rule on their own
derivative (``f'(x) [x > 0] max(g, 0)``, so nothing passes back through a GELU at a negative
input, where GELU is not zero). Softmax attention, LayerNorm, the residual additions and the
``q k^T`` and attention-times-values products keep their true gradient, negative parts
included, so Guided Backprop on ViT or Swin is the plain gradient with its GELUs clipped, not
the "positive evidence only" map it is on a ReLU network. It is finite and leaves the model
untouched, like every method here.

The rule is read when the backward pass runs, not when the forward pass records the graph: one
forward pass can serve a plain backward pass (Grad-CAM's gradient to a layer) and a guided one
(the pixel-space gradient), as Guided Grad-CAM needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RULES", "Rectified", "RectifierState", "Rule", "classify"]

Rule = Literal["plain", "guided", "deconv"]
RULES: tuple[Rule, ...] = ("plain", "guided", "deconv")


@dataclass
class RectifierState:
    """The rule every rectifier of one recorded forward pass applies in the next backward pass."""

    rule: Rule = "plain"


def _present(*functions: Any) -> frozenset[Any]:
    """The functions this torch version has (some aliases are missing in older releases)."""
    return frozenset(f for f in functions if f is not None)


_RELU = _present(
    F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, getattr(F, "relu_", None)
)
_BOUNDED = _present(F.hardtanh, F.relu6, torch._C._nn.hardtanh_, getattr(F, "hardtanh_", None))
_SMOOTH = _present(
    F.silu,
    F.gelu,
    torch._C._nn.gelu,
    F.elu,
    F.leaky_relu,
    F.hardswish,
    F.mish,
    F.selu,
    F.celu,
    F.softplus,
)
_ANY = _RELU | _BOUNDED | _SMOOTH
_ALWAYS_INPLACE = _present(
    torch.relu_,
    Tensor.relu_,
    getattr(F, "relu_", None),
    torch._C._nn.hardtanh_,
    getattr(F, "hardtanh_", None),
)


@dataclass(frozen=True)
class Activation:
    """A rectifier call found in a forward pass, in normalized form."""

    kind: Literal["relu", "bounded", "smooth"]
    low: float
    high: float
    inplace: bool
    function: Callable[[Tensor], Tensor]


def classify(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Activation | None:
    """Recognize a call of a rectifier-like activation, or return ``None``."""
    # Called for every op of a forward pass: the cheap membership test comes first.
    if func not in _ANY:
        return None
    if not args or not isinstance(args[0], Tensor) or not args[0].is_floating_point():
        return None
    inplace = bool(kwargs.get("inplace", False)) or func in _ALWAYS_INPLACE
    if args[-1] is True:  # `inplace` given by position, as in F.relu(x, True)
        inplace = True
    if func in _RELU:
        return Activation("relu", 0.0, float("inf"), inplace, torch.relu)
    if func in _BOUNDED:
        if func is F.relu6:
            low, high = 0.0, 6.0
        else:
            low = float(kwargs.get("min_val", args[1] if len(args) > 1 else -1.0))
            high = float(kwargs.get("max_val", args[2] if len(args) > 2 else 1.0))
        return Activation("bounded", low, high, inplace, lambda t: t.clamp(low, high))
    if func in _SMOOTH:
        extra = {k: v for k, v in kwargs.items() if k != "inplace"}
        rest = args[1:-1] if isinstance(args[-1], bool) else args[1:]

        def smooth(t: Tensor) -> Tensor:
            return func(t, *rest, **extra)  # type: ignore[no-any-return]

        return Activation("smooth", 0.0, 0.0, inplace, smooth)
    return None


class Rectified(torch.autograd.Function):
    """An activation whose backward pass follows ``state.rule`` (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, act: Activation, state: RectifierState) -> Tensor:
        ctx.act, ctx.state = act, state
        if act.kind == "smooth":
            ctx.save_for_backward(x.clone() if act.inplace else x)
            out = act.function(x)
            if act.inplace:
                x.copy_(out)
                ctx.mark_dirty(x)
                return x
            return out
        if act.inplace:
            out = x.relu_() if act.kind == "relu" else x.clamp_(act.low, act.high)
            ctx.mark_dirty(x)
        else:
            out = act.function(x)
        # The output determines the derivative mask: y > lo and y < hi exactly when x is.
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        act: Activation = ctx.act
        rule = ctx.state.rule
        (saved,) = ctx.saved_tensors
        if rule == "deconv":
            return grad.clamp(min=0), None, None
        incoming = grad.clamp(min=0) if rule == "guided" else grad
        if act.kind == "smooth":
            with torch.enable_grad():
                x = saved.detach().requires_grad_(True)
                (result,) = torch.autograd.grad(act.function(x), x, incoming)
            if rule == "guided":
                result = result * (saved > 0)
            return result, None, None
        # The fused kernels plain autograd uses; the output stands in for the input, since
        # y > lo and y < hi exactly when x is.
        if act.kind == "relu":
            return torch.ops.aten.threshold_backward(incoming, saved, 0.0), None, None
        result = torch.ops.aten.hardtanh_backward(incoming, saved, act.low, act.high)
        if rule == "guided" and act.low < 0:
            result = result * (saved > 0)
        return result, None, None
