"""pytorch-grad-cam's ``pytorch_grad_cam.metrics.perturbation_confidence``: the score change of
an edited image, computed by :func:`gradcam.evaluate.confidence.confidence_change`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gradcam.errors import TargetError
from gradcam.evaluate.confidence import class_scores, confidence_change, removal_mask

__all__ = [
    "AveragerAcrossThresholds",
    "PerturbationConfidenceMetric",
    "RemoveLeastRelevantFirst",
    "RemoveMostRelevantFirst",
]

Targets = Sequence[Callable[[Any], Any]]


def _targets(targets: Targets, batch: int) -> list[Callable[[Any], Any]]:
    """One callable per image (pytorch-grad-cam zips silently; a short list is refused)."""
    items = list(targets)
    if len(items) != batch or not all(callable(t) for t in items):
        raise TargetError(
            f"give one target callable per image (such as ClassifierOutputTarget(281)): "
            f"{batch} images, {len(items)} targets"
        )
    return items


class PerturbationConfidenceMetric:
    """``target(model(x')) - target(model(x))`` per image, ``x'`` the image edited by
    ``perturbation(image, cam)`` (one (C, H, W) image and its (H, W) map at a time).

    Args:
        perturbation: the edit of one image by its map.

    Examples:
        >>> from gradcam.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> metric = PerturbationConfidenceMetric(lambda image, cam: image * cam)
        >>> x = torch.rand(1, 3, 128, 128)
        >>> metric(x, np.ones((1, 128, 128), np.float32), [ClassifierOutputTarget(0)], model)
        array([0.], dtype=float32)
    """

    def __init__(self, perturbation: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.perturbation = perturbation

    def _edit(self, x: Tensor, maps: Tensor) -> Tensor:
        return torch.stack(
            [self.perturbation(x[i].cpu(), maps[i].cpu()).to(x.device) for i in range(len(x))]
        )

    def __call__(
        self,
        input_tensor: Tensor,
        cams: np.ndarray,
        targets: Targets,
        model: nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> Any:
        """The (B,) float32 score changes (``return_diff=False``: the edited scores); with
        ``return_visualization``, also the edited batch."""
        items = _targets(targets, input_tensor.shape[0])
        maps = torch.from_numpy(np.asarray(cams, dtype=np.float32))
        edited = self._edit(input_tensor, maps)
        if return_diff:
            scores = confidence_change(model, input_tensor, maps, items, edit=lambda x, m: edited)
        else:
            scores = class_scores(model, edited, items)
        result = scores.numpy().astype(np.float32)
        return (result, edited) if return_visualization else result


class RemoveMostRelevantFirst:
    """The edit that removes the pixels with ``M >= percentile(M)``
    (:func:`~gradcam.evaluate.confidence.removal_mask`) and fills them with ``imputer(image,
    keep)``, ``keep`` 1 where a pixel stays. ``percentile="auto"`` (Otsu) raises
    ``NotImplementedError``."""

    most_relevant_first = True

    def __init__(
        self, percentile: float | str, imputer: Callable[[Tensor, Tensor], Tensor]
    ) -> None:
        if percentile == "auto":
            raise NotImplementedError(
                f"{type(self).__name__}(percentile='auto'): Otsu's threshold is not mirrored"
            )
        self.percentile = float(percentile)
        self.imputer = imputer

    def __call__(self, input_tensor: Tensor, mask: Tensor) -> Tensor:
        """``input_tensor`` (C, H, W) with the removed pixels imputed."""
        removed = removal_mask(
            mask, self.percentile, most_relevant_first=self.most_relevant_first
        ).to(mask.device)
        return self.imputer(input_tensor, (~removed).float())


class RemoveLeastRelevantFirst(RemoveMostRelevantFirst):
    """The edit that removes the pixels with ``1 - M >= percentile(1 - M)``."""

    most_relevant_first = False


class AveragerAcrossThresholds:
    """The mean over ``percentiles`` of ``imputer(percentile)(input_tensor, cams, targets,
    model)``, ``imputer`` a metric class taking a percentile."""

    def __init__(
        self,
        imputer: Callable[[float], Any],
        percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    ) -> None:
        self.imputer = imputer
        self.percentiles = list(percentiles)

    def __call__(
        self, input_tensor: Tensor, cams: np.ndarray, targets: Targets, model: nn.Module
    ) -> np.ndarray:
        """The (B,) float32 mean score change."""
        scores = [self.imputer(p)(input_tensor, cams, targets, model) for p in self.percentiles]
        return np.mean(np.asarray(scores, dtype=np.float32), axis=0)  # type: ignore[no-any-return]
