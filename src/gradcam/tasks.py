"""Targets for detectors and segmenters: explain one detection, or one class inside a mask.

Grad-CAM needs one differentiable score ``y`` per image; for a classifier it is a class logit.
A detector's output is a list of detections per image and a segmenter's a map of class scores
per pixel, so the score is chosen from them (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``
and ``SemanticSegmentationTarget`` do the same):

* :class:`DetectionScore`: one detection, found again in the forward pass that Grad-CAM runs:
  among the detections of class ``label``, the one whose box overlaps the reference box ``b*``
  most, if its IoU is more than ``threshold``. Its score is

  .. math:: y = s_j + \\mathrm{IoU}(b_j, b^*)

  (the class confidence ``s_j`` after the model's own postprocessing, plus the overlap, whose
  gradient moves evidence toward the box), or ``s_j`` alone with ``iou=False``. A target that
  matches no detection scores 0 in that image, with a warning: its map is all zero.
* :class:`SegmentationScore`: class ``c``'s logits summed over a mask ``M``,

  .. math:: y = \\sum_{u,v} M_{uv} \\, z^c_{uv}

  where ``z^c`` is the model's (B, C, H, W) output (``output["out"]`` for torchvision's
  DeepLabV3, FCN and LRASPP), or (B, C, D, H, W) for a 3-D segmenter (MONAI's ``UNet`` and
  ``SegResNet`` with ``spatial_dims=3``; the sum then runs over every voxel), or (B, C, L) for
  a signal's. Without a mask, ``M`` is where ``c`` is the predicted class (Seg-Grad-CAM,
  Vinogradova et al. 2020, sums the class's logits over a region the same way).

Torchvision's Faster R-CNN, RetinaNet, FCOS and SSD run unchanged, in eval mode with their
postprocessing (lists of dicts with ``"boxes"``, ``"labels"``, ``"scores"``): nothing in the
model is edited. :func:`detect` lists the detections of a batch once, to choose targets from;
:func:`task_layer` names a layer every detection or pixel score depends on (the last stage of
the backbone that feeds the feature pyramid or the segmentation head). The feature pyramid
itself (``layer="backbone"``, an ordered dict of maps) is explained too, each level weighted
by its own gradient (see :func:`gradcam.methods.gradcam.pyramid_cam`).

Examples:
    >>> import torchvision
    >>> from gradcam import GradCAM
    >>> _ = torch.manual_seed(0)
    >>> model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None,
    ...     weights_backbone=None, num_classes=3, min_size=64, max_size=96).eval()
    >>> x = torch.rand(1, 3, 64, 64)
    >>> found = detect(model, x)[0]
    >>> cam = GradCAM(model, task_layer(model))
    >>> cam(x, [DetectionScore.of(d) for d in found[:3]]).maps.shape   # one map per detection
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gradcam.engine import check_input, eval_mode
from gradcam.errors import LayerError, TargetError
from gradcam.layers import Layer
from gradcam.maps import normalize, upsample

__all__ = [
    "Detection",
    "DetectionScore",
    "SegmentationScore",
    "box_overlap",
    "detect",
    "detections_of",
    "detector_maps",
    "segmentation_logits",
    "task_layer",
]


@dataclass(frozen=True)
class Detection:
    """One detection of one image, in input pixels.

    Attributes:
        box: ``(x1, y1, x2, y2)``.
        label: the class id.
        score: the model's confidence.

    Examples:
        >>> Detection((0.0, 0.0, 10.0, 20.0), 1, 0.9).label
        1
    """

    box: tuple[float, float, float, float]
    label: int
    score: float


def detections_of(output: Any) -> list[Mapping[str, Tensor]]:
    """The per-image detection dicts of a detector's output (torchvision's list of dicts with
    ``"boxes"`` (N, 4), ``"labels"`` (N,) and ``"scores"`` (N,)).

    Raises:
        TargetError: naming the output when it is not a list of such dicts.

    Examples:
        >>> out = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}]
        >>> len(detections_of(out))
        1
    """
    keys = ("boxes", "labels", "scores")
    if isinstance(output, (list, tuple)) and all(
        isinstance(d, Mapping) and all(isinstance(d.get(k), Tensor) for k in keys) for d in output
    ):
        return list(output)
    raise TargetError(
        f"detection targets need a detector's output, a list of dicts with 'boxes', 'labels' "
        f"and 'scores' per image (torchvision's detectors in eval mode); got "
        f"{type(output).__name__}"
    )


def detect(model: nn.Module, x: Tensor, *, min_score: float = 0.0) -> list[list[Detection]]:
    """Run a detector once on ``x`` (no gradients, eval mode) and list each image's detections,
    best first, to choose targets from.

    Args:
        model: a detector returning a list of dicts per image; not modified.
        x: (B, 3, H, W) images.
        min_score: keep detections scoring at least this.

    Raises:
        GradCAMError: bad input; TargetError: the output is not a detector's.

    Examples:
        >>> class Detector(nn.Module):  # one detection, whatever the image
        ...     def forward(self, x):
        ...         return [{"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]),
        ...                  "labels": torch.tensor([1]), "scores": torch.tensor([0.5])}]
        >>> detect(Detector(), torch.zeros(1, 3, 8, 8))
        [[Detection(box=(1.0, 2.0, 5.0, 6.0), label=1, score=0.5)]]
    """
    x = check_input(x, model)
    with torch.no_grad(), eval_mode(model):
        output = model(x)
    found: list[list[Detection]] = []
    for image in detections_of(output):
        rows = zip(
            image["boxes"].tolist(), image["labels"].tolist(), image["scores"].tolist(), strict=True
        )
        listed = [
            Detection((b[0], b[1], b[2], b[3]), int(label), float(score))
            for b, label, score in rows
            if score >= min_score
        ]
        found.append(sorted(listed, key=lambda d: -d.score))
    return found


def box_overlap(box: Tensor, boxes: Tensor) -> Tensor:
    """IoU of one box (4,) with each of ``boxes`` (N, 4), all ``(x1, y1, x2, y2)``:

    .. math:: \\mathrm{IoU}(a, b) = |a \\cap b| \\, / \\, |a \\cup b|

    as :func:`torchvision.ops.box_iou`, but 0 rather than NaN for boxes without area, so
    that its gradient stays finite.

    Examples:
        >>> box_overlap(torch.tensor([0.0, 0, 2, 2]), torch.tensor([[1.0, 0, 3, 2], [0, 0, 0, 0]]))
        tensor([0.3333, 0.0000])
    """
    corner_low = torch.maximum(box[:2], boxes[:, :2])
    corner_high = torch.minimum(box[2:], boxes[:, 2:])
    inter = (corner_high - corner_low).clamp(min=0).prod(dim=1)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


@dataclass(frozen=True)
class DetectionScore:
    """The score of one detection, matched again in the forward pass: see the module
    docstring, ``y = s_j + IoU(b_j, b*)`` (``s_j`` alone with ``iou=False``).

    Attributes:
        box: the reference box ``b*``, ``(x1, y1, x2, y2)`` in input pixels.
        label: the class id to match.
        iou: add the IoU to the score (pytorch-grad-cam's box-score target), or not.
        threshold: the match needs an IoU of more than this.

    Raises:
        TargetError: a box that is not 4 finite numbers with x1 <= x2 and y1 <= y2, or a
            threshold outside [0, 1).

    Examples:
        >>> output = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        ...            "labels": torch.tensor([1]), "scores": torch.tensor([0.75])}]
        >>> DetectionScore((0.0, 0.0, 10.0, 5.0), label=1, threshold=0.4)(output)
        tensor([1.2500])
    """

    box: tuple[float, float, float, float]
    label: int
    iou: bool = True
    threshold: float = 0.5

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in np.asarray(self.box, dtype=float).reshape(-1))
        if len(values) != 4 or not all(np.isfinite(values)):
            raise TargetError(
                f"a detection box is 4 finite numbers (x1, y1, x2, y2), got {self.box!r}"
            )
        if values[0] > values[2] or values[1] > values[3]:
            raise TargetError(f"box {values} has x1 > x2 or y1 > y2: boxes are (x1, y1, x2, y2)")
        if not 0.0 <= float(self.threshold) < 1.0:
            raise TargetError(f"the IoU threshold must be in [0, 1), got {self.threshold!r}")
        object.__setattr__(self, "box", values)
        object.__setattr__(self, "label", int(self.label))

    @classmethod
    def of(
        cls, detection: Detection, *, iou: bool = True, threshold: float = 0.5
    ) -> DetectionScore:
        """The target that explains ``detection`` (from :func:`detect`)."""
        return cls(detection.box, detection.label, iou=iou, threshold=threshold)

    @property
    def class_id(self) -> int:
        """The class it explains (reported in results' ``classes``)."""
        return self.label

    def __call__(self, output: Any) -> Tensor:
        """``(B,)`` scores: each image's matched detection, 0 where none matches."""
        images = detections_of(output)
        scores = [self._score(image, b) for b, image in enumerate(images)]
        return torch.stack(scores)

    def _score(self, image: Mapping[str, Tensor], index: int) -> Tensor:
        boxes, labels, confidence = image["boxes"], image["labels"], image["scores"]
        reference = torch.tensor([self.box], dtype=boxes.dtype, device=boxes.device)
        if len(boxes):
            overlap = box_overlap(reference[0], boxes)
            # An identical box matches even when it is degenerate (no area, so no IoU).
            same = (boxes.detach() == reference).all(dim=1)
            # Several detections may share a box (Faster R-CNN scores every class of one
            # proposal): only those of the class asked for compete.
            candidates = torch.where(same, 1.0, overlap.detach())
            candidates = torch.where(labels == self.label, candidates, -1.0)
            best = int(candidates.argmax())
            if float(candidates[best]) > self.threshold:
                score = confidence[best]
                return score + overlap[best] if self.iou else score
        warnings.warn(
            f"no detection of class {self.label} overlaps box {self.box} by IoU > "
            f"{self.threshold} in image {index}: its score is 0 and its map all zero",
            UserWarning,
            stacklevel=4,
        )
        # Zero, but still computed from the output, so the gradient is zero rather than absent.
        return confidence.sum() * 0.0


def segmentation_logits(output: Any) -> Tensor:
    """The (B, C, H, W) per-pixel class scores of a segmenter's output: a tensor,
    ``output["out"]`` (torchvision), ``output["logits"]`` or ``.logits`` (Hugging Face), or
    the first element of a tuple; per voxel (B, C, D, H, W) or per sample (B, C, L) alike.

    Raises:
        TargetError: naming the output when no 3-, 4- or 5-D scores are found.

    Examples:
        >>> segmentation_logits({"out": torch.zeros(1, 21, 8, 8), "aux": None}).shape
        torch.Size([1, 21, 8, 8])
    """
    found: Any = output
    if isinstance(output, Mapping):
        found = output.get("out", output.get("logits"))
    elif isinstance(output, (tuple, list)) and output:
        found = output[0]
    elif not isinstance(output, Tensor):
        found = getattr(output, "logits", None)
    if not isinstance(found, Tensor) or found.dim() not in (3, 4, 5):
        got = tuple(found.shape) if isinstance(found, Tensor) else type(output).__name__
        raise TargetError(
            f"segmentation targets need (B, classes, H, W) scores, or (B, classes, D, H, W) or "
            f"(B, classes, L) (a tensor, a dict with 'out' or 'logits', or .logits); got {got}"
        )
    return found


@dataclass(frozen=True, eq=False, init=False)
class SegmentationScore:
    """Class ``class_id``'s logits summed over a mask: ``y = sum_uv M_uv z^c_uv`` (over
    every voxel ``u`` of a (B, C, D, H, W) output, every sample of a (B, C, L) one).

    Attributes:
        class_id: the class ``c``.
        mask: weights (bool or float, numpy or torch) at the output's resolution, one for
            every image, (H, W) (or (D, H, W), or (L,)), or one per image, (B, H, W) (or
            (B, D, H, W), or (B, L)); ``None``: the pixels where ``c`` is the predicted class.
            Which of the two a mask is follows from the output's rank when called.

    Raises:
        TargetError: a negative class id, a mask of no such rank (1-D to 4-D), or (when
            called) a mask whose size differs from the output's.

    Examples:
        >>> logits = torch.arange(8.0).view(1, 2, 2, 2)   # class 1: [[4, 5], [6, 7]]
        >>> SegmentationScore(1, torch.tensor([[True, False], [False, True]]))({"out": logits})
        tensor([11.])

        A volume: class 0's logits are ``0 .. 7`` over 2 x 2 x 2 voxels, the mask its top slice.

        >>> volume = torch.arange(16.0).view(1, 2, 2, 2, 2)
        >>> SegmentationScore(0, torch.tensor([1, 0]).view(2, 1, 1).expand(2, 2, 2))(volume)
        tensor([6.])
    """

    class_id: int
    mask: Tensor | None

    def __init__(self, class_id: int, mask: Tensor | np.ndarray | None = None) -> None:
        if isinstance(class_id, bool) or int(class_id) != class_id or class_id < 0:
            raise TargetError(
                f"a segmentation class id is a non-negative integer, got {class_id!r}"
            )
        weights = None
        if mask is not None:
            weights = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
            if weights.dim() not in (1, 2, 3, 4):
                raise TargetError(
                    f"a segmentation mask is (H, W) or (B, H, W) (for volumes (D, H, W) or "
                    f"(B, D, H, W)), got shape {tuple(weights.shape)}"
                )
            weights = weights.detach().float()
        object.__setattr__(self, "class_id", int(class_id))
        object.__setattr__(self, "mask", weights)

    def __call__(self, output: Any) -> Tensor:
        """``(B,)`` masked sums of the class's logits."""
        logits = segmentation_logits(output)
        if self.class_id >= logits.shape[1]:
            raise TargetError(
                f"class id {self.class_id} is out of range: the model has {logits.shape[1]} classes"
            )
        scores = logits[:, self.class_id]
        rank = scores.dim() - 1
        if self.mask is None:
            mask = (logits.detach().argmax(dim=1) == self.class_id).to(scores.dtype)
        else:
            mask = self.mask.to(scores.device, scores.dtype)
            if (
                mask.dim() not in (rank, rank + 1)
                or mask.shape[-rank:] != scores.shape[1:]
                or (mask.dim() == rank + 1 and mask.shape[0] not in (1, scores.shape[0]))
            ):
                raise TargetError(
                    f"the mask of shape {tuple(mask.shape)} does not fit the model's "
                    f"{tuple(scores.shape[1:])} score maps for {scores.shape[0]} images"
                )
        return (scores * mask).sum(dim=tuple(range(1, scores.dim())))


def detector_maps(model: nn.Module, x: Tensor, raw: Tensor) -> Tensor:
    """Layer-resolution maps (B, K, h, w) of a torchvision detector, brought onto the input's
    pixels (B, K, H, W) and min-max normalized to [0, 1].

    A detector resizes each image (to ``min_size``, or SSD's fixed size) and pads the batch to
    a multiple of 32 at the bottom and right, so its feature maps cover the padded image: a map
    upsampled straight to the input would be shifted and stretched by the padding. Here each
    map is upsampled (bilinearly) to the padded size, cropped to the resized image, then resized
    to the input. Models without a ``transform`` get the plain upsampling.

    Examples:
        >>> raw = torch.tensor([[[[0.0, 2.0]]]])  # (B, K, h, w) = (1, 1, 1, 2)
        >>> detector_maps(nn.Identity(), torch.zeros(1, 3, 1, 4), raw)  # no transform
        tensor([[[[0.0000, 0.2500, 0.7500, 1.0000]]]])
    """
    size = (x.shape[-2], x.shape[-1])
    transform = getattr(model, "transform", None)
    if not isinstance(transform, nn.Module):
        return normalize(upsample(raw, size))
    with torch.no_grad(), eval_mode(transform):
        images, _ = transform(list(x.detach().float()))
    padded = (int(images.tensors.shape[-2]), int(images.tensors.shape[-1]))
    maps = [
        upsample(upsample(raw[b : b + 1], padded)[..., :height, :width], size)
        for b, (height, width) in enumerate(images.image_sizes)
    ]
    return normalize(torch.cat(maps))


def _last_child(module: nn.Module) -> str:
    names = [name for name, _ in module.named_children()]
    if not names:
        raise LayerError(f"{type(module).__name__} has no stages to choose a layer from")
    return names[-1]


def task_layer(model: nn.Module) -> Layer:
    """The layer to explain a torchvision detector or segmenter at, read channels-first.

    * Faster R-CNN, RetinaNet, FCOS (a backbone with a feature pyramid): the last stage of the
      backbone's body (``backbone.body.layer4`` for ResNets), which every pyramid level, so
      every detection, is computed from;
    * SSD: the VGG features (``backbone.features``), SSDlite: the first MobileNet part
      (``backbone.features.0``), from which all its feature maps are computed;
    * DeepLabV3, FCN, LRASPP: the backbone's last stage (``backbone.layer4`` for ResNets).

    The detectors resize and pad their input, so the layer's map covers the padded image; it is
    read channels-first without the check that its shape fits the input's aspect ratio.

    Raises:
        LayerError: the model has none of these structures (give ``layer=`` yourself).

    Examples:
        >>> import torchvision
        >>> task_layer(torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None,
        ...     weights_backbone=None)).module
        'backbone.16'
    """
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        body = getattr(backbone, "body", None)
        if isinstance(body, nn.Module):
            return Layer(f"backbone.body.{_last_child(body)}", reshape="channels-first")
        features = getattr(backbone, "features", None)
        if isinstance(features, nn.Sequential) and hasattr(backbone, "extra"):
            nested = len(features) and isinstance(features[0], nn.Sequential)
            name = "backbone.features.0" if nested else "backbone.features"
            return Layer(name, reshape="channels-first")
        if isinstance(backbone, nn.ModuleDict):  # IntermediateLayerGetter: segmentation
            return Layer(f"backbone.{_last_child(backbone)}", reshape="channels-first")
    raise LayerError(
        f"cannot choose a layer for {type(model).__name__}: it has no torchvision detection or "
        "segmentation backbone; pass layer= (a stage whose output every score depends on)"
    )
