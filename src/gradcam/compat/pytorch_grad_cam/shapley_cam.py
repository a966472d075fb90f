"""pytorch-grad-cam's ``pytorch_grad_cam.shapley_cam``, computed by gradcam's ``shapley-cam``
method."""

from __future__ import annotations

from typing import ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["ShapleyCAM"]


class ShapleyCAM(BaseCAM):
    """Shapley-CAM (Cai 2024): gradients and Hessian-vector products.

    Built as ``ShapleyCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "shapley-cam"
