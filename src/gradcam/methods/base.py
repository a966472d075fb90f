"""What gradient methods share: a plan of what they need from the engine, and a result built
from the engine's output.

A :class:`GradientMethod` says in :meth:`~GradientMethod.plan` which layer and which
backward rules it needs, and builds its result from one :class:`~gradcam.engine.Gradients` in
:meth:`~GradientMethod.from_gradients`. Calling it runs the engine once for that plan; the
planner (:func:`gradcam.methods.planner.explain_methods`) runs the engine once for several
methods whose plans can share a forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from gradcam.engine import Gradients, check_input, compute_gradients, spatial_size
from gradcam.errors import GradCAMError
from gradcam.layers import ResolvedLayer
from gradcam.methods.results import Result
from gradcam.rectifiers import Rule
from gradcam.targets import TargetLike

__all__ = ["GradientMethod", "Plan", "check_module"]


def check_module(module: object) -> nn.Module:
    """Return ``module`` if it is an ``nn.Module``, else raise a :class:`GradCAMError`."""
    if not isinstance(module, nn.Module):
        raise GradCAMError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return module


@dataclass(frozen=True)
class Plan:
    """What one method needs from one engine pass.

    Attributes:
        layer: the layer ``A`` (module, dotted name and reshape), or ``None``.
        layer_rule: the rectifier rule of the backward pass to the layer.
        input_rules: the rules of the backward passes to the input.

    Examples:
        >>> Plan(input_rules=("guided",)).input_rules
        ('guided',)
    """

    layer: ResolvedLayer | None = None
    layer_rule: Rule = "plain"
    input_rules: tuple[Rule, ...] = ()


class GradientMethod:
    """Base of the methods whose result is a function of one forward and its backward passes.

    Subclasses implement :meth:`plan` and :meth:`from_gradients`; ``__call__`` runs the engine.
    """

    module: nn.Module

    @property
    def shares_pass(self) -> bool:
        """Whether :meth:`from_gradients` on a pass shared with other methods gives this method's
        result; ``False`` for methods that need passes of their own (noise, augmentations), which
        the planner then calls on their own."""
        return True

    def plan(self, x: Tensor) -> Plan:
        """What this method needs for the (checked) batch ``x``."""
        raise NotImplementedError

    def from_gradients(self, grads: Gradients, plan: Plan, input_size: tuple[int, ...]) -> Result:
        """Build the result from an engine pass that covered ``plan``; ``input_size`` is (H, W)
        (the input's spatial size: ``(L,)`` or ``(D, H, W)`` in other ranks)."""
        raise NotImplementedError

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> Result:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``
        (or a (B, C, L) or (B, C, D, H, W) one, for the methods that take them)."""
        x = check_input(x, self.module)
        plan = self.plan(x)
        grads = compute_gradients(
            self.module,
            x,
            targets,
            layer=plan.layer,
            layer_rule=plan.layer_rule,
            input_rules=plan.input_rules,
        )
        return self.from_gradients(grads, plan, spatial_size(x))
