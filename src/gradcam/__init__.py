"""gradcam: visual explanations for PyTorch vision models, from the Grad-CAM paper.

Example:
    >>> import gradcam
    >>> model = gradcam.load_model()                      # embedded EfficientNet-Lite0
    >>> photo = gradcam.load_image("cat.jpg")
    >>> x = model.preprocess(photo)                       # (1, 3, H, W)
    >>> result = gradcam.GradCAM(model.module)(x, gradcam.TopK(2))
    >>> gradcam.overlay(photo, result.maps[0, 0]).save("cat_gradcam.png")
"""

from gradcam.errors import GradCAMError, ImageLoadError, LayerError, ModelLoadError, TargetError
from gradcam.images import Preprocess, load_image
from gradcam.layers import Layer, find_default_layer, spatial_layers
from gradcam.maps import bounding_box, normalize, peak, upsample
from gradcam.methods import (
    CAM,
    CAMResult,
    DeconvGradCAM,
    Deconvolution,
    GradCAM,
    GuidedBackprop,
    GuidedCAMResult,
    GuidedGradCAM,
    Occlusion,
    OcclusionResult,
    PixelResult,
    Result,
    methods,
)
from gradcam.methods import create as create_method
from gradcam.models import LoadedModel, available_models, load_model
from gradcam.targets import TopK
from gradcam.viz import overlay

__all__ = [
    "CAM",
    "CAMResult",
    "DeconvGradCAM",
    "Deconvolution",
    "GradCAM",
    "GradCAMError",
    "GuidedBackprop",
    "GuidedCAMResult",
    "GuidedGradCAM",
    "ImageLoadError",
    "Layer",
    "LayerError",
    "LoadedModel",
    "ModelLoadError",
    "Occlusion",
    "OcclusionResult",
    "PixelResult",
    "Preprocess",
    "Result",
    "TargetError",
    "TopK",
    "available_models",
    "bounding_box",
    "create_method",
    "find_default_layer",
    "load_image",
    "load_model",
    "methods",
    "normalize",
    "overlay",
    "peak",
    "spatial_layers",
    "upsample",
]
__version__ = "0.1.0"
