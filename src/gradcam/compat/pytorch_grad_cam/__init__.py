"""pytorch-grad-cam 1.5.7's public interface on gradcam's methods.

Change the import prefix ``pytorch_grad_cam`` to ``gradcam.compat.pytorch_grad_cam`` and
pytorch-grad-cam's code runs as written: the same classes, arguments and numpy results,
computed by gradcam's registry methods (:mod:`gradcam.methods.registry`), which leave the
model unmodified and take one forward and one batched backward pass per call (all target
layers at once for the methods whose registry entry declares ``multi_layer``, one pass per
layer for the others). See ``docs/migration.md`` for the details and the differences.

Examples:
    >>> from gradcam.compat.pytorch_grad_cam import GradCAM
    >>> from gradcam.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    >>> cam = GradCAM(model=model, target_layers=[model.features])
    >>> cam(input_tensor=x, targets=[ClassifierOutputTarget(3)]).shape
    (1, 128, 128)
"""

from gradcam.compat.pytorch_grad_cam import utils
from gradcam.compat.pytorch_grad_cam.ablation_cam import AblationCAM
from gradcam.compat.pytorch_grad_cam.ablation_layer import (
    AblationLayer,
    AblationLayerFasterRCNN,
    AblationLayerVit,
)
from gradcam.compat.pytorch_grad_cam.eigen_cam import EigenCAM
from gradcam.compat.pytorch_grad_cam.eigen_grad_cam import EigenGradCAM
from gradcam.compat.pytorch_grad_cam.feature_factorization.deep_feature_factorization import (
    DeepFeatureFactorization,
    run_dff_on_image,
)
from gradcam.compat.pytorch_grad_cam.fem import FEM
from gradcam.compat.pytorch_grad_cam.finer_cam import FinerCAM
from gradcam.compat.pytorch_grad_cam.fullgrad_cam import FullGrad
from gradcam.compat.pytorch_grad_cam.grad_cam import GradCAM
from gradcam.compat.pytorch_grad_cam.grad_cam_elementwise import GradCAMElementWise
from gradcam.compat.pytorch_grad_cam.grad_cam_plusplus import GradCAMPlusPlus
from gradcam.compat.pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
from gradcam.compat.pytorch_grad_cam.hirescam import HiResCAM
from gradcam.compat.pytorch_grad_cam.kpca_cam import KPCA_CAM
from gradcam.compat.pytorch_grad_cam.layer_cam import LayerCAM
from gradcam.compat.pytorch_grad_cam.random_cam import RandomCAM
from gradcam.compat.pytorch_grad_cam.refine_cam import RefineCAM
from gradcam.compat.pytorch_grad_cam.score_cam import ScoreCAM
from gradcam.compat.pytorch_grad_cam.seg_eigen_cam import SegEigenCAM
from gradcam.compat.pytorch_grad_cam.sess import SESS
from gradcam.compat.pytorch_grad_cam.shapley_cam import ShapleyCAM
from gradcam.compat.pytorch_grad_cam.xgrad_cam import XGradCAM

__all__ = [
    "FEM",
    "KPCA_CAM",
    "SESS",
    "AblationCAM",
    "AblationLayer",
    "AblationLayerFasterRCNN",
    "AblationLayerVit",
    "DeepFeatureFactorization",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackpropReLUModel",
    "HiResCAM",
    "LayerCAM",
    "RandomCAM",
    "RefineCAM",
    "ScoreCAM",
    "SegEigenCAM",
    "ShapleyCAM",
    "XGradCAM",
    "run_dff_on_image",
    "utils",
]
