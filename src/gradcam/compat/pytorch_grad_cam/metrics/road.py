"""pytorch-grad-cam's ``pytorch_grad_cam.metrics.road``: ROAD (Rong et al. 2022), the pixels
removed by :func:`gradcam.evaluate.confidence.removal_mask` and filled by
:func:`gradcam.evaluate.confidence.noisy_linear_imputation`.

The noise is drawn from torch's global generator, as pytorch-grad-cam's. The ROAD classes take
an extra ``noise`` (pytorch-grad-cam's fixed 0.01); ``noise=0`` makes them exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn

from gradcam.compat.pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
    Targets,
)
from gradcam.evaluate.confidence import ROAD_PERCENTILES, noisy_linear_imputation

__all__ = [
    "NoisyLinearImputer",
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
]

_NOISE = 0.01  # pytorch-grad-cam's


class NoisyLinearImputer:
    """ROAD's noisy linear imputation of a (C, H, W) image where ``mask`` (H, W) is 0.

    Args:
        noise: the standard deviation of the Gaussian noise added to the filled pixels.
        weighting: ignored, as pytorch-grad-cam ignores it (the neighbour weights are fixed).
    """

    def __init__(self, noise: float = _NOISE, weighting: object = None) -> None:
        self.noise = noise
        self.weighting = weighting

    def __call__(self, img: Tensor, mask: Tensor) -> Tensor:
        """``img`` with the pixels where ``mask == 0`` imputed."""
        return noisy_linear_imputation(img, mask == 0, noise=self.noise)


class ROADMostRelevantFirst(PerturbationConfidenceMetric):
    """The score change once the pixels at or above the map's ``percentile`` are imputed."""

    def __init__(self, percentile: float = 80, *, noise: float = _NOISE) -> None:
        super().__init__(RemoveMostRelevantFirst(percentile, NoisyLinearImputer(noise)))


class ROADLeastRelevantFirst(PerturbationConfidenceMetric):
    """The score change once the pixels at or below the map's ``100 - percentile`` are
    imputed."""

    def __init__(self, percentile: float = 20, *, noise: float = _NOISE) -> None:
        super().__init__(RemoveLeastRelevantFirst(percentile, NoisyLinearImputer(noise)))


class ROADMostRelevantFirstAverage(AveragerAcrossThresholds):
    """:class:`ROADMostRelevantFirst` averaged over ``percentiles``."""

    def __init__(
        self, percentiles: Sequence[float] = ROAD_PERCENTILES, *, noise: float = _NOISE
    ) -> None:
        super().__init__(lambda p: ROADMostRelevantFirst(p, noise=noise), percentiles)


class ROADLeastRelevantFirstAverage(AveragerAcrossThresholds):
    """:class:`ROADLeastRelevantFirst` averaged over ``percentiles``."""

    def __init__(
        self, percentiles: Sequence[float] = ROAD_PERCENTILES, *, noise: float = _NOISE
    ) -> None:
        super().__init__(lambda p: ROADLeastRelevantFirst(p, noise=noise), percentiles)


class ROADCombined:
    """``(LeRF - MoRF) / 2`` over ``percentiles``, higher is better (see
    :mod:`gradcam.evaluate.confidence`)."""

    def __init__(
        self, percentiles: Sequence[float] = ROAD_PERCENTILES, *, noise: float = _NOISE
    ) -> None:
        self.percentiles = list(percentiles)
        self.morf_averager = ROADMostRelevantFirstAverage(percentiles, noise=noise)
        self.lerf_averager = ROADLeastRelevantFirstAverage(percentiles, noise=noise)

    def __call__(
        self, input_tensor: Tensor, cams: np.ndarray, targets: Targets, model: nn.Module
    ) -> np.ndarray:
        """The (B,) float32 combined ROAD score."""
        lerf = self.lerf_averager(input_tensor, cams, targets, model)
        morf = self.morf_averager(input_tensor, cams, targets, model)
        return (lerf - morf) / 2  # type: ignore[no-any-return]
