"""pytorch-grad-cam's ``pytorch_grad_cam.eigen_grad_cam``, computed by gradcam's ``eigen-gradcam``
method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["EigenGradCAM"]


class EigenGradCAM(BaseCAM):
    """Eigen-Grad-CAM: the first principal component of the gradient times the activations, with the
    sign LAPACK gives (pytorch-grad-cam's).

    Built as ``EigenGradCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "eigen-gradcam"
    ignores_eigen_smooth: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {"sign": "lapack"}
