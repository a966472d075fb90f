"""pytorch-grad-cam's ``pytorch_grad_cam.metrics.cam_mult_image``: the score change of the image
multiplied by its map (:func:`gradcam.evaluate.confidence.confidence_change`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from gradcam.compat.pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
)

__all__ = [
    "CamMultImageConfidenceChange",
    "DropInConfidence",
    "IncreaseInConfidence",
    "multiply_tensor_with_cam",
]


def multiply_tensor_with_cam(input_tensor: Tensor, cam: Tensor) -> Tensor:
    """The (normalized) image times its map.

    Examples:
        >>> multiply_tensor_with_cam(torch.ones(1, 2), torch.tensor([0.5, 1.0]))
        tensor([[0.5000, 1.0000]])
    """
    return input_tensor * cam


class CamMultImageConfidenceChange(PerturbationConfidenceMetric):
    """``target(model(x * M)) - target(model(x))`` per image."""

    def __init__(self) -> None:
        super().__init__(multiply_tensor_with_cam)


class DropInConfidence(CamMultImageConfidenceChange):
    """``max(target(x) - target(x * M), 0)`` per image: lower is better."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The (B,) float32 drops."""
        return np.maximum(-super().__call__(*args, **kwargs), 0)


class IncreaseInConfidence(CamMultImageConfidenceChange):
    """``1.0`` where ``target(x * M) > target(x)``, else ``0.0``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The (B,) float32 indicators."""
        return np.float32(super().__call__(*args, **kwargs) > 0)
