"""Explanation methods, each small and built on :mod:`gradcam.engine`, and their registry.

Every method is built as ``Method(module, ...)`` and called as ``method(x, targets)``, with the
targets of :mod:`gradcam.targets`, returning a :class:`~gradcam.methods.results.Result`.
:func:`create` builds one by its CLI name; :func:`methods` lists the names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import Tensor, nn

from gradcam.errors import GradCAMError
from gradcam.methods.cam import CAM
from gradcam.methods.gradcam import GradCAM, grad_cam_from_gradients
from gradcam.methods.guided import DeconvGradCAM, Deconvolution, GuidedBackprop, GuidedGradCAM
from gradcam.methods.occlusion import Occlusion
from gradcam.methods.results import (
    CAMResult,
    GuidedCAMResult,
    OcclusionResult,
    PixelResult,
    Result,
)
from gradcam.targets import TargetLike

__all__ = [
    "CAM",
    "CAMResult",
    "DeconvGradCAM",
    "Deconvolution",
    "GradCAM",
    "GuidedBackprop",
    "GuidedCAMResult",
    "GuidedGradCAM",
    "Method",
    "Occlusion",
    "OcclusionResult",
    "PixelResult",
    "Result",
    "create",
    "grad_cam_from_gradients",
    "methods",
]


class Method(Protocol):
    """What every method is: called on a (B, C, H, W) batch and targets, returns a Result."""

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> Result: ...


Layer = nn.Module | str | None

_REGISTRY: dict[str, Callable[[nn.Module, Layer], Method]] = {
    "gradcam": lambda m, layer: GradCAM(m, layer),
    "counterfactual": lambda m, layer: GradCAM(m, layer, counterfactual=True),
    "guided-backprop": lambda m, layer: GuidedBackprop(m),
    "deconvolution": lambda m, layer: Deconvolution(m),
    "guided-gradcam": lambda m, layer: GuidedGradCAM(m, layer),
    "deconv-gradcam": lambda m, layer: DeconvGradCAM(m, layer),
    "cam": lambda m, layer: CAM(m, layer),
    "occlusion": lambda m, layer: Occlusion(m),
}


def methods() -> list[str]:
    """The names of all methods, as the CLI's ``--method`` takes them.

    Example:
        >>> methods()[:3]
        ['gradcam', 'counterfactual', 'guided-backprop']
    """
    return list(_REGISTRY)


def create(name: str, module: nn.Module, layer: Layer = None) -> Method:
    """Build the method called ``name`` for ``module`` (``layer`` where the method uses one).

    Raises:
        GradCAMError: for an unknown name, listing the known ones.

    Example:
        >>> create("guided-gradcam", model)(x, [281]).maps.shape  # (1, 1, 3, H, W)
    """
    if name not in _REGISTRY:
        raise GradCAMError(f"unknown method {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name](module, layer)
