"""pytorch-grad-cam's ``pytorch_grad_cam.ablation_layer``: which ablation an
:class:`~gradcam.compat.pytorch_grad_cam.ablation_cam.AblationCAM` performs.

gradcam's Ablation-CAM zeroes one channel of the layer's (reshaped) maps at a time, whatever the
layer; these classes only say what pytorch-grad-cam's user chose, so that ported code runs.
"""

from __future__ import annotations

from torch import nn

__all__ = ["AblationLayer", "AblationLayerFasterRCNN", "AblationLayerVit"]


class AblationLayer(nn.Module):
    """Ablate channels of a (B, C, h, w) layer: zero one feature map at a time."""


class AblationLayerVit(AblationLayer):
    """Ablate channels of a transformer's tokens, read through the CAM's ``reshape_transform``."""


class AblationLayerFasterRCNN(AblationLayer):
    """Ablate channels of a detector's feature pyramid (not supported by gradcam's
    Ablation-CAM, which needs one map: an :class:`AblationCAM` built with it raises
    ``NotImplementedError``)."""
