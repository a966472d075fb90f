"""pytorch-grad-cam's ``pytorch_grad_cam.kpca_cam``, computed by gradcam's ``kpca-cam`` method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["KPCA_CAM"]


class KPCA_CAM(BaseCAM):
    """KPCA-CAM (Karmani et al. 2024): the first kernel principal component of the activations,
    with scikit-learn's sign (``svd_flip``: the largest-magnitude entry positive).

    Args:
        kernel: the kernel (``"sigmoid"``, ``"rbf"``, ``"poly"``, ``"linear"``, ``"cosine"``).
        gamma: the kernel coefficient; ``None``: ``1 / channels``.
    """

    method: ClassVar[str] = "kpca-cam"
    ignores_eigen_smooth: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
        kernel: str = "sigmoid",
        gamma: float | None = None,
    ) -> None:
        self.kernel = kernel
        self.gamma = gamma
        super().__init__(model, target_layers, reshape_transform)

    def _options(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "gamma": self.gamma}
