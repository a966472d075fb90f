"""pytorch-grad-cam's ``pytorch_grad_cam.layer_cam``, computed by gradcam's ``layercam`` method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["LayerCAM"]


class LayerCAM(BaseCAM):
    """LayerCAM (Jiang et al. 2021): ReLU of the gradient times the activations.

    Built as ``LayerCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "layercam"
    options: ClassVar[dict[str, Any]] = {"smooth_sign": "lapack"}
    smoothable: ClassVar[bool] = True
