"""pytorch-grad-cam's ``pytorch_grad_cam.xgrad_cam``, computed by gradcam's ``xgradcam`` method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["XGradCAM"]


class XGradCAM(BaseCAM):
    """XGrad-CAM (Fu et al. 2020): gradients weighted by the normalized activations.

    Built as ``XGradCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "xgradcam"
    options: ClassVar[dict[str, Any]] = {"smooth_sign": "lapack"}
    smoothable: ClassVar[bool] = True
