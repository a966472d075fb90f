"""pytorch-grad-cam's ``pytorch_grad_cam.metrics.arcc``: complexity, coherency and ARCC, computed
by :mod:`gradcam.evaluate.confidence` (:func:`~gradcam.evaluate.confidence.complexity`,
:func:`~gradcam.evaluate.confidence.coherency`, :func:`~gradcam.evaluate.confidence.arcc_of`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gradcam.compat.pytorch_grad_cam.metrics.perturbation_confidence import Targets
from gradcam.compat.pytorch_grad_cam.metrics.road import _NOISE, ROADCombined
from gradcam.evaluate.confidence import ARCC_PERCENTILES, arcc_of, coherency, complexity

__all__ = ["ARCC", "Coherency", "Complexity"]


class Complexity:
    """The mean of ``|M|`` per map: 0 for an empty map, 1 for a full one.

    Examples:
        >>> Complexity()(np.array([[[0.0, 1.0], [0.5, 0.5]]], np.float32))
        array([0.5], dtype=float32)
    """

    def __call__(self, grayscale_cams: np.ndarray) -> np.ndarray:
        """The (B,) float32 complexities."""
        return complexity(torch.from_numpy(np.asarray(grayscale_cams))).numpy()


class Coherency:
    """``(r + 1) / 2``, ``r`` the Pearson correlation of each map with ``base_method``'s map of
    the image multiplied by it."""

    def __call__(
        self,
        input_tensor: Tensor,
        grayscale_cams: np.ndarray,
        targets: Targets,
        model: nn.Module,
        base_method: Any,
    ) -> np.ndarray:
        """The (B,) float32 coherencies."""
        maps = torch.from_numpy(np.asarray(grayscale_cams, dtype=np.float32))
        mixed = input_tensor * maps.unsqueeze(1).to(input_tensor.device)
        again = base_method(input_tensor=mixed, targets=targets)
        return coherency(maps, torch.from_numpy(np.asarray(again))).numpy()


class ARCC:
    """ARCC: the harmonic mean of coherency, ``1 - complexity`` and ``clip(2 ROAD, 0, 1)``
    (ROAD's combined score over ``road_percentiles``).

    Args:
        base_method: the CAM object whose maps are scored (for coherency).
        road_percentiles: ROAD's percentiles.
        noise: ROAD's imputation noise (an addition: pytorch-grad-cam's is 0.01).
    """

    def __init__(
        self,
        base_method: Any,
        road_percentiles: Sequence[float] = ARCC_PERCENTILES,
        *,
        noise: float = _NOISE,
    ) -> None:
        self.complexity = Complexity()
        self.coherency = Coherency()
        self.road = ROADCombined(percentiles=road_percentiles, noise=noise)
        self.base_method = base_method

    def __call__(
        self, input_tensor: Tensor, grayscale_cams: np.ndarray, targets: Targets, model: nn.Module
    ) -> np.ndarray:
        """The (B,) float32 ARCC scores."""
        parts = [
            torch.from_numpy(np.asarray(part, dtype=np.float32))
            for part in (
                self.coherency(input_tensor, grayscale_cams, targets, model, self.base_method),
                self.complexity(grayscale_cams),
                self.road(input_tensor, grayscale_cams, targets, model),
            )
        ]
        return arcc_of(*parts).arcc.numpy()
