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

# Registration order is the order of `methods()`, the CLI and the demo: the paper's methods
# first (Grad-CAM and its counterfactual, the pixel-space methods, CAM, occlusion), then the
# methods of the field, each block sorted by module name.
from gradcam.methods.gradcam import GradCAM, grad_cam_from_gradients, pyramid_cam

# isort: split
from gradcam.methods.guided import DeconvGradCAM, Deconvolution, GuidedBackprop, GuidedGradCAM

# isort: split
from gradcam.methods.cam import CAM
from gradcam.methods.occlusion import Occlusion

# isort: split
from gradcam.methods.variants import (
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)

# isort: split
from gradcam.methods.ablation_cam import AblationCAM
from gradcam.methods.attribution import IntegratedGradients, SmoothGrad
from gradcam.methods.eigen_cam import KPCACAM, EigenCAM, EigenGradCAM
from gradcam.methods.factorization import ConceptResult, DeepFeatureFactorization
from gradcam.methods.fem import FEM
from gradcam.methods.finer_cam import FinerCAM
from gradcam.methods.fullgrad import FullGrad
from gradcam.methods.planner import explain_methods
from gradcam.methods.registry import (
    DEFAULT_METHOD,
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
    AttributionResult,
    CAMResult,
    FinerCAMResult,
    FullGradResult,
    GuidedCAMResult,
    OcclusionResult,
    PixelResult,
    Result,
)
from gradcam.methods.score_cam import ISCAM, SSCAM, ScoreCAM
from gradcam.methods.shapley_cam import ShapleyCAM
from gradcam.targets import TargetLike

# isort: split
# Appended after the methods above (issue 28): the random baseline, then the meta-methods and
# Seg-Eigen-CAM, so that the order of the earlier methods stays as it was.
from gradcam.methods.random_cam import RandomCAM
from gradcam.methods.refine_cam import RefineCAM
from gradcam.methods.seg_eigen_cam import SegEigenCAM
from gradcam.methods.sess import SESS

__all__ = [
    "CAM",
    "DEFAULT_METHOD",
    "FEM",
    "ISCAM",
    "KPCACAM",
    "SESS",
    "SSCAM",
    "AblationCAM",
    "AttributionResult",
    "CAMResult",
    "ConceptResult",
    "DeconvGradCAM",
    "Deconvolution",
    "DeepFeatureFactorization",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "FinerCAMResult",
    "FullGrad",
    "FullGradResult",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedCAMResult",
    "GuidedGradCAM",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "Method",
    "MethodSpec",
    "Needs",
    "Occlusion",
    "OcclusionResult",
    "Option",
    "PixelResult",
    "RandomCAM",
    "RefineCAM",
    "Result",
    "ScoreCAM",
    "SegEigenCAM",
    "ShapleyCAM",
    "SmoothGrad",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "create",
    "create_method",
    "explain_methods",
    "grad_cam_from_gradients",
    "method_spec",
    "method_specs",
    "methods",
    "pyramid_cam",
    "register",
]


class Method(Protocol):
    """What every method is: called on a (B, C, H, W) batch and targets, returns a Result."""

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> Result: ...


create = create_method
"""The former name of :func:`create_method`."""
