"""Several methods on one batch with as few passes as the math allows.

Gradient methods (:class:`~gradcam.methods.base.GradientMethod`) whose plans agree on the layer
and on the rule of the backward pass to it share one forward pass, one batched backward pass to
the layer, and one backward pass to the input per rectifier rule; methods that need no layer
(Guided Backprop, Deconvolution) join the first such pass. Every other method (CAM, occlusion,
perturbation methods, and gradient methods whose
:attr:`~gradcam.methods.base.GradientMethod.shares_pass` is false, such as those with noise or
augmentations) runs on its own, on the classes the first pass resolved, so that all results
explain the same classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from gradcam.engine import Gradients, check_input, compute_gradients, spatial_size
from gradcam.methods.base import GradientMethod, Plan
from gradcam.methods.registry import MethodSpec, resolve_methods
from gradcam.methods.results import Result
from gradcam.targets import TargetLike

__all__ = ["explain_built", "explain_methods"]


def _group_key(plan: Plan) -> tuple[str, str] | None:
    return None if plan.layer is None else (plan.layer[1], plan.layer_rule)


def explain_methods(
    names: Sequence[str | MethodSpec],
    module: nn.Module,
    x: Tensor,
    targets: TargetLike | None = None,
    *,
    layer: Any = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Result]:
    """Explain ``targets`` for the batch ``x`` with each method in ``names``, sharing passes.

    Args:
        names: method names from :func:`gradcam.methods.methods`, or their entries already
            resolved (:func:`~gradcam.methods.registry.resolve_methods`); duplicates are
            dropped.
        module: the model.
        x: (B, C, H, W) input batch (or (B, C, L), (B, C, D, H, W) for the methods that take
            them).
        targets: see :mod:`gradcam.targets`; ``None`` is the top-1 class.
        layer: the layer ``A`` for the methods that use one (``None``: the default layer).
        options: per method name, the options to build it with (see
            :func:`gradcam.methods.registry.create_method`).

    Returns:
        ``{name: result}`` in the order of ``names``.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> x = torch.rand(1, 3, 8, 8)
        >>> found = explain_methods(["gradcam", "guided-gradcam", "counterfactual"], net, x, [1])
        >>> found["gradcam"].maps.shape, found["guided-gradcam"].maps.shape
        (torch.Size([1, 1, 8, 8]), torch.Size([1, 1, 3, 8, 8]))
    """
    options = options or {}
    built = {
        spec.name: spec.create(module, layer, **options.get(spec.name, {}))
        for spec in resolve_methods(names)
    }
    return explain_built(built, module, x, targets)


def explain_built(
    built: Mapping[str, Any],
    module: nn.Module,
    x: Tensor,
    targets: TargetLike | None = None,
    *,
    checked: bool = False,
) -> dict[str, Result]:
    """:func:`explain_methods` for methods already built, under names of the caller's choice
    (several settings of one method, say: appendix B's ablations of Grad-CAM).

    ``checked``: ``x`` is what :func:`gradcam.engine.check_input` returned for ``module``
    (the caller checked it at its boundary), so it is not checked again here.

    Examples:
        >>> import torch
        >>> from gradcam.methods import create_method
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> built = {"mean": create_method("gradcam", net, "0"),
        ...          "max": create_method("gradcam", net, "0", pooling="max")}
        >>> sorted(explain_built(built, net, torch.rand(1, 3, 8, 8), [1]))
        ['max', 'mean']
    """
    if not checked:
        x = check_input(x, module)
    plans = {
        n: m.plan(x) for n, m in built.items() if isinstance(m, GradientMethod) and m.shares_pass
    }
    groups: dict[tuple[str, str] | None, list[str]] = {}
    for name, plan in plans.items():
        groups.setdefault(_group_key(plan), []).append(name)
    layerless = groups.pop(None, [])
    if layerless:
        # Passes that go to the input only need no layer: they join the first layer's pass.
        first = next(iter(groups), None)
        groups.setdefault(first, []).extend(layerless)
    input_size = spatial_size(x)
    results: dict[str, Result] = {}
    first_grads: Gradients | None = None
    for members in groups.values():
        member_plans = [plans[n] for n in members]
        with_layer = next((p for p in member_plans if p.layer is not None), None)
        rules = tuple(dict.fromkeys(r for p in member_plans for r in p.input_rules))
        grads = compute_gradients(
            module,
            x,
            targets,
            layer=None if with_layer is None else with_layer.layer,
            layer_rule="plain" if with_layer is None else with_layer.layer_rule,
            input_rules=rules,
            checked=True,  # above, or by the caller
        )
        first_grads = first_grads or grads
        for name in members:
            results[name] = built[name].from_gradients(grads, plans[name], input_size)
    rest = [n for n in built if n not in plans]
    if rest:
        fixed = targets
        if first_grads is not None and bool((first_grads.classes >= 0).all()):
            fixed = first_grads.classes
        for name in rest:
            results[name] = built[name](x, fixed)
    return {n: results[n] for n in built}
