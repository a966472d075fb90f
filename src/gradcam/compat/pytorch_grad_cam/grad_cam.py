"""pytorch-grad-cam's ``pytorch_grad_cam.grad_cam``, computed by gradcam's ``gradcam`` method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM
from gradcam.methods.registry import GRAD_CAM

__all__ = ["GradCAM"]


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al. 2017): channels weighted by the mean gradient.

    Built as ``GradCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = GRAD_CAM
    options: ClassVar[dict[str, Any]] = {"smooth_sign": "lapack"}
    smoothable: ClassVar[bool] = True
