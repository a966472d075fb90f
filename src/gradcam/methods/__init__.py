"""Explanation methods, each small and built on :mod:`gradcam.engine`, and their registry.

Every method is built as ``Method(module, ...)`` and called as ``method(x, targets)``, with the
targets of :mod:`gradcam.targets`, returning a :class:`~gradcam.methods.results.Result`.
Each method registers itself in :mod:`gradcam.methods.registry`: :func:`create_method` builds
one by its ``--method`` name with options, :func:`methods` lists the names, :func:`method_spec`
describes one, and :func:`explain_methods` runs several sharing passes.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from gradcam.methods.ablation_cam import AblationCAM
from gradcam.methods.cam import CAM
from gradcam.methods.gradcam import GradCAM, grad_cam_from_gradients
from gradcam.methods.guided import DeconvGradCAM, Deconvolution, GuidedBackprop, GuidedGradCAM
from gradcam.methods.occlusion import Occlusion
from gradcam.methods.planner import explain_methods
from gradcam.methods.registry import (
    MethodSpec,
    Needs,
    Option,
    create_method,
    method_spec,
    method_specs,
    methods,
    register,
)
from gradcam.methods.results import (
    CAMResult,
    GuidedCAMResult,
    OcclusionResult,
    PixelResult,
    Result,
)
from gradcam.methods.score_cam import ISCAM, SSCAM, ScoreCAM
from gradcam.targets import TargetLike

__all__ = [
    "CAM",
    "ISCAM",
    "SSCAM",
    "AblationCAM",
    "CAMResult",
    "DeconvGradCAM",
    "Deconvolution",
    "GradCAM",
    "GuidedBackprop",
    "GuidedCAMResult",
    "GuidedGradCAM",
    "Method",
    "MethodSpec",
    "Needs",
    "Occlusion",
    "OcclusionResult",
    "Option",
    "PixelResult",
    "Result",
    "ScoreCAM",
    "create",
    "create_method",
    "explain_methods",
    "grad_cam_from_gradients",
    "method_spec",
    "method_specs",
    "methods",
    "register",
]


class Method(Protocol):
    """What every method is: called on a (B, C, H, W) batch and targets, returns a Result."""

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> Result: ...


create = create_method
"""The former name of :func:`create_method`."""
