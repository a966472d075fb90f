"""pytorch-grad-cam's ``pytorch_grad_cam.grad_cam_elementwise``, computed by gradcam's
``gradcam-elementwise`` method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["GradCAMElementWise"]


class GradCAMElementWise(BaseCAM):
    """Element-wise Grad-CAM: ReLU of the gradient times the activations, summed over channels.

    Built as ``GradCAMElementWise(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "gradcam-elementwise"
    options: ClassVar[dict[str, Any]] = {"smooth_sign": "lapack"}
    smoothable: ClassVar[bool] = True
