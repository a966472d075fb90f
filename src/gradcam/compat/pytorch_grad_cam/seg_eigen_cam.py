"""pytorch-grad-cam's ``pytorch_grad_cam.seg_eigen_cam``, computed by gradcam's ``seg-eigen-cam``
method."""

from __future__ import annotations

from typing import ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["SegEigenCAM"]


class SegEigenCAM(BaseCAM):
    """Seg-Eigen-CAM (Chung and Ying 2025): Eigen-CAM of ``|gradient| * activations``, the
    projection's sign corrected so that its largest-magnitude entry is positive.

    Built as ``SegEigenCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`. Like pytorch-grad-cam's, it
    ignores ``eigen_smooth`` (its map is a projection already).
    """

    method: ClassVar[str] = "seg-eigen-cam"
    ignores_eigen_smooth: ClassVar[bool] = True
