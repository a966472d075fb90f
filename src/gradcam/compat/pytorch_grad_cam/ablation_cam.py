"""pytorch-grad-cam's ``pytorch_grad_cam.ablation_cam``, computed by gradcam's ``ablation-cam``
method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from gradcam.compat.pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerFasterRCNN
from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["AblationCAM"]


class AblationCAM(BaseCAM):
    """Ablation-CAM (Desai and Ramaswamy 2020): each channel weighted by the relative drop of
    the score when it is zeroed, ``(y - y_k) / y``.

    pytorch-grad-cam ablates to zero where the layer's minimum is 0 (after a ReLU) and to
    ``min - 1e7`` elsewhere; gradcam always zeroes (the paper), so the two agree on
    rectified layers only.

    Args:
        ablation_layer: an :mod:`~gradcam.compat.pytorch_grad_cam.ablation_layer` class
            instance (``None``: :class:`AblationLayer`).
        batch_size: ablated copies per forward pass.
        ratio_channels_to_ablate: 1.0 (every channel); pytorch-grad-cam's experimental
            channel selection (below 1) is not implemented.
    """

    method: ClassVar[str] = "ablation-cam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
        ablation_layer: nn.Module | None = None,
        batch_size: int = 32,
        ratio_channels_to_ablate: float = 1.0,
    ) -> None:
        if ratio_channels_to_ablate != 1.0:
            raise NotImplementedError(
                "AblationCAM with ratio_channels_to_ablate below 1: gradcam ablates every channel"
            )
        if isinstance(ablation_layer, AblationLayerFasterRCNN):
            raise NotImplementedError(
                "AblationCAM with AblationLayerFasterRCNN: gradcam's Ablation-CAM needs one map; "
                "use EigenCAM or GradCAM on the detector's backbone"
            )
        self.ablation_layer = AblationLayer() if ablation_layer is None else ablation_layer
        self.batch_size = batch_size
        self.ratio_channels_to_ablate = ratio_channels_to_ablate
        super().__init__(model, target_layers, reshape_transform)

    def _options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}
