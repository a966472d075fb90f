"""pytorch-grad-cam's ``pytorch_grad_cam.fem``, computed by gradcam's ``fem`` method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["FEM"]


class FEM(BaseCAM):
    """FEM (Fuad et al. 2020): each channel weighted by the share of its positions above its
    ``k``-sigma threshold.

    Args:
        k: the threshold, in standard deviations above each channel's mean.
    """

    method: ClassVar[str] = "fem"
    ignores_eigen_smooth: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
        k: float = 2,
    ) -> None:
        self.k = k
        super().__init__(model, target_layers, reshape_transform)

    def _options(self) -> dict[str, Any]:
        return {"k": float(self.k)}
