"""pytorch-grad-cam's ``pytorch_grad_cam.utils.model_targets``: what to explain, one target per
image, each called on that image's output.

Every class here is a :class:`gradcam.targets.PerImage`, so gradcam's own methods apply them
per image too: ``gradcam.GradCAM(model)(x2, [ClassifierOutputTarget(3),
ClassifierOutputTarget(5)])`` explains class 3 in the first image and class 5 in the second.
A 2-D (B, N) output is also accepted, as pytorch-grad-cam's targets accept it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor

from gradcam.targets import PerImage

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "FinerWeightedTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
]


class ClassifierOutputTarget(PerImage):
    """The score of class ``category`` before the softmax.

    Examples:
        >>> ClassifierOutputTarget(1)(torch.tensor([0.5, 2.0]))
        tensor(2.)
    """

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output[..., self.category]

    def __repr__(self) -> str:
        return f"ClassifierOutputTarget({self.category})"


class ClassifierOutputSoftmaxTarget(PerImage):
    """The probability of class ``category`` (after the softmax over the last axis).

    Examples:
        >>> ClassifierOutputSoftmaxTarget(0)(torch.tensor([0.0, 0.0]))
        tensor(0.5000)
    """

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.softmax(model_output, dim=-1)[..., self.category]


class ClassifierOutputReST(PerImage):
    """``z_c - CE(z, c)``: the score of class ``category`` minus its cross-entropy, i.e.
    ``z_c + log softmax(z)_c`` (Re-ST, arXiv 2501.06261).

    Examples:
        >>> ClassifierOutputReST(0)(torch.tensor([0.0, 0.0]))
        tensor(-0.6931)
    """

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        log_probs = torch.log_softmax(model_output, dim=-1)
        return model_output[..., self.category] + log_probs[..., self.category]


class BinaryClassifierOutputTarget(PerImage):
    """A one-logit binary classifier's output, negated for ``category`` 0.

    Examples:
        >>> BinaryClassifierOutputTarget(0)(torch.tensor([2.0]))
        tensor([-2.])
    """

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output if self.category == 1 else -model_output


class SoftmaxOutputTarget(PerImage):
    """Every class's probability (a vector: for metrics, not for explaining one score)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.softmax(model_output, dim=-1)


class RawScoresOutputTarget(PerImage):
    """The output itself (a vector: for metrics, not for explaining one score)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output


class SemanticSegmentationTarget(PerImage):
    """Class ``category``'s scores summed over a (H, W) ``mask`` of one image's (C, H, W)
    segmentation output: ``sum_uv M_uv z^c_uv``.

    Examples:
        >>> SemanticSegmentationTarget(1, np.eye(2, dtype=np.float32))(torch.ones(2, 2, 2))
        tensor(2.)
    """

    def __init__(self, category: int, mask: np.ndarray) -> None:
        self.category = category
        self.mask = torch.from_numpy(mask)

    def __call__(self, model_output: Tensor) -> Tensor:
        return (model_output[self.category] * self.mask.to(model_output.device)).sum()


class FasterRCNNBoxScoreTarget(PerImage):
    """For each of ``bounding_boxes`` with its label, the detection of the output that overlaps
    it most: if their IoU exceeds ``iou_threshold`` and the labels agree, ``IoU + score``; the
    scores are summed (a (1,) tensor, 0 when nothing matches).

    Examples:
        >>> out = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([3]),
        ...        "scores": torch.tensor([0.9])}
        >>> FasterRCNNBoxScoreTarget([3], [np.array([0.0, 0, 10, 10])])(out)
        tensor([1.9000])
    """

    def __init__(
        self, labels: Sequence[int], bounding_boxes: Sequence[Any], iou_threshold: float = 0.5
    ) -> None:
        self.labels = labels
        self.bounding_boxes = bounding_boxes
        self.iou_threshold = iou_threshold

    def __call__(self, model_outputs: dict[str, Tensor]) -> Tensor:
        boxes = model_outputs["boxes"]
        total = torch.zeros(1, device=boxes.device, dtype=boxes.dtype)
        if len(boxes) == 0:
            return total
        for box, label in zip(self.bounding_boxes, self.labels, strict=False):
            query = torch.as_tensor(box, device=boxes.device, dtype=boxes.dtype).reshape(1, 4)
            overlaps = torchvision.ops.box_iou(query, boxes)[0]
            best = overlaps.argmax()
            if overlaps[best] > self.iou_threshold and model_outputs["labels"][best] == label:
                total = total + overlaps[best] + model_outputs["scores"][best]
        return total


class FinerWeightedTarget(PerImage):
    """Finer-CAM's contrastive score: ``sum_d p_d (z_c - alpha z_d) / (sum_d p_d + 1e-9)`` over
    the ``comparison_categories`` ``d``, with ``p`` the softmax of the output and ``c`` the
    ``main_category``.

    Examples:
        >>> FinerWeightedTarget(0, [1], 1.0)(torch.tensor([3.0, 1.0]))
        tensor(2.)
    """

    def __init__(
        self, main_category: int, comparison_categories: Sequence[int], alpha: float
    ) -> None:
        self.main_category = main_category
        self.comparison_categories = comparison_categories
        self.alpha = alpha

    @property
    def class_id(self) -> int:
        """The class explained (reported in gradcam's results' ``classes``)."""
        return int(self.main_category)

    def __call__(self, model_output: Tensor) -> Tensor:
        probs = torch.softmax(model_output, dim=-1)
        main = model_output[..., self.main_category]
        weights = [probs[..., d] for d in self.comparison_categories]
        numerator = sum(
            w * (main - self.alpha * model_output[..., d])
            for w, d in zip(weights, self.comparison_categories, strict=True)
        )
        return torch.as_tensor(numerator / (sum(weights) + 1e-9))
