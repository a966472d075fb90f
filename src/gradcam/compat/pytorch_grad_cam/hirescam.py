"""pytorch-grad-cam's ``pytorch_grad_cam.hirescam``, computed by gradcam's ``hirescam`` method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["HiResCAM"]


class HiResCAM(BaseCAM):
    """HiResCAM (Draelos and Carin 2020): the gradient times the activations, summed over channels.

    Built as ``HiResCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "hirescam"
    options: ClassVar[dict[str, Any]] = {"smooth_sign": "lapack"}
    smoothable: ClassVar[bool] = True
