"""gradcam: visual explanations for PyTorch vision models, from the Grad-CAM paper.

Examples:
    >>> from pathlib import Path
    >>> import gradcam
    >>> model = gradcam.load_model()                      # embedded EfficientNet-Lite0
    >>> photo = gradcam.load_image(Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg")
    >>> x = model.preprocess(photo)                       # (1, 3, H, W)
    >>> result = gradcam.GradCAM(model.module)(x, gradcam.TopK(2))
    >>> [model.class_names[c] for c in result.classes[0].tolist()]
    ['espresso', 'Egyptian cat']
    >>> gradcam.overlay(photo, result.maps[0, 0]).save("cat_gradcam.png")
"""

from gradcam.errors import GradCAMError, ImageLoadError, LayerError, ModelLoadError, TargetError
from gradcam.images import Preprocess, load_image
from gradcam.layers import Layer, find_default_layer, spatial_layers
from gradcam.maps import bounding_box, normalize, peak, upsample
from gradcam.methods import (
    CAM,
    FEM,
    ISCAM,
    KPCACAM,
    SESS,
    SSCAM,
    AblationCAM,
    AttributionResult,
    CAMResult,
    ConceptResult,
    DeconvGradCAM,
    Deconvolution,
    DeepFeatureFactorization,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FinerCAMResult,
    FullGrad,
    FullGradResult,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedCAMResult,
    GuidedGradCAM,
    HiResCAM,
    IntegratedGradients,
    LayerCAM,
    Occlusion,
    OcclusionResult,
    PixelResult,
    RandomCAM,
    RefineCAM,
    Result,
    ScoreCAM,
    SegEigenCAM,
    ShapleyCAM,
    SmoothGrad,
    SmoothGradCAMPlusPlus,
    XGradCAM,
    create_method,
    explain_methods,
    method_spec,
    method_specs,
)
from gradcam.methods import methods as list_methods
from gradcam.models import LoadedModel, available_models, load_model
from gradcam.targets import TopK
from gradcam.viz import overlay

__all__ = [
    "CAM",
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
    "GradCAMError",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedCAMResult",
    "GuidedGradCAM",
    "HiResCAM",
    "ImageLoadError",
    "IntegratedGradients",
    "Layer",
    "LayerCAM",
    "LayerError",
    "LoadedModel",
    "ModelLoadError",
    "Occlusion",
    "OcclusionResult",
    "PixelResult",
    "Preprocess",
    "RandomCAM",
    "RefineCAM",
    "Result",
    "ScoreCAM",
    "SegEigenCAM",
    "ShapleyCAM",
    "SmoothGrad",
    "SmoothGradCAMPlusPlus",
    "TargetError",
    "TopK",
    "XGradCAM",
    "available_models",
    "bounding_box",
    "create_method",
    "explain_methods",
    "find_default_layer",
    "list_methods",
    "load_image",
    "load_model",
    "method_spec",
    "method_specs",
    "normalize",
    "overlay",
    "peak",
    "spatial_layers",
    "upsample",
]
__version__ = "0.1.0"
