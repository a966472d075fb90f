"""pytorch-grad-cam's ``pytorch_grad_cam.grad_cam_plusplus``, computed by gradcam's ``gradcam++``
method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["GradCAMPlusPlus"]


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018), with pytorch-grad-cam's ``eps=1e-6`` in the
    denominator of ``alpha``.

    Built as ``GradCAMPlusPlus(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "gradcam++"
    options: ClassVar[dict[str, Any]] = {"eps": 1e-06, "smooth_sign": "lapack"}
    smoothable: ClassVar[bool] = True
