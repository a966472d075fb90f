"""pytorch-grad-cam's ``pytorch_grad_cam.eigen_cam``, computed by gradcam's ``eigen-cam`` method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["EigenCAM"]


class EigenCAM(BaseCAM):
    """Eigen-CAM (Muhammad and Yeasin 2020): the first principal component of the activations, with
    the sign LAPACK gives (pytorch-grad-cam's).

    Built as ``EigenCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "eigen-cam"
    ignores_eigen_smooth: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {"sign": "lapack"}
