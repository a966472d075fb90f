"""The paper's evaluation protocols as plain functions that return plain results.

* :func:`localization` (section 4.1): top-1/top-5 classification and localization error;
* :func:`pointing` (section 4.3, appendix D): pointing-game accuracy, and its recall variant;
* :func:`faithfulness` (section 5.3): rank correlation with occlusion, deletion and insertion;
* :func:`sanity` (Adebayo et al. 2018): cascading model-parameter randomization.

Each runs one image at a time (the image read, explained and scored, then released), records
an unreadable image in its row and goes on. Dataset class indices must be the model's own.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from gradcam.errors import GradCAMError, ImageLoadError
from gradcam.evaluate.datasets import Dataset, Sample
from gradcam.evaluate.metrics import (
    area_under_curve,
    localization_correct,
    pointing_hit,
    recall_hit,
    spearman,
)
from gradcam.images import load_image
from gradcam.maps import bounding_box, upsample
from gradcam.methods import Occlusion, Result, create
from gradcam.models import LoadedModel
from gradcam.targets import TargetLike, TopK

__all__ = [
    "ProtocolResult",
    "faithfulness",
    "heatmaps",
    "localization",
    "pointing",
    "sanity",
]


@dataclass(frozen=True)
class ProtocolResult:
    """What a protocol measured: a summary table and one row per image.

    Attributes:
        protocol: the protocol's name.
        summary: rows of the report table (one per method or setting), plain values.
        rows: one dict per image, with ``"image"`` and ``"error"`` (``None`` when it worked).
    """

    protocol: str
    summary: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows of images that could not be evaluated."""
        return [row for row in self.rows if row["error"] is not None]


def heatmaps(result: Result) -> Tensor:
    """One non-negative (B, K, h, w) heatmap per target from any method's result.

    Grad-CAM and CAM give their layer-resolution maps, occlusion its positive score drops, and
    pixel-space methods the absolute value summed over channels.
    """
    raw: Tensor | None = getattr(result, "raw", None)
    if raw is not None:
        return raw.clamp(min=0)
    return result.maps.abs().sum(dim=2)


def _samples(dataset: Dataset, limit: int | None, desc: str) -> Iterable[Sample]:
    samples = dataset.samples[:limit] if limit is not None else dataset.samples
    bar: Iterable[Sample] = tqdm(
        samples, desc=desc, unit="image", disable=len(samples) < 2, file=sys.stderr
    )
    return bar


def _check_classes(loaded: LoadedModel, dataset: Dataset) -> None:
    if dataset.class_names and len(dataset.class_names) != len(loaded.class_names):
        raise GradCAMError(
            f"dataset {dataset.name!r} has {len(dataset.class_names)} classes but the model has "
            f"{len(loaded.class_names)}: evaluate a model trained on the dataset's classes"
        )


def _explain(
    loaded: LoadedModel, method: str, image: Image.Image, targets: TargetLike
) -> tuple[Result, Tensor]:
    """The method's result and its heatmaps (K, H0, W0) at the photo's own size."""
    x = loaded.preprocess(image)
    result = create(method, loaded.module, loaded.default_layer)(x, targets)
    heat = upsample(heatmaps(result)[0], (image.height, image.width))
    return result, heat


def _method(name: str, loaded: LoadedModel, module: nn.Module) -> Any:
    return create(name, module, loaded.default_layer)


def _row(sample: Sample) -> dict[str, Any]:
    return {"image": str(sample.path), "error": None}


def localization(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    method: str = "gradcam",
    threshold: float = 0.15,
    iou_threshold: float = 0.5,
    limit: int | None = None,
) -> ProtocolResult:
    """Weakly-supervised localization (section 4.1, Table 1).

    For each image, maps for the top-5 predicted classes are binarized at ``threshold`` times
    their maximum, and the box around the largest connected segment is the prediction. A
    prediction is correct when its class is a label of the image and its box has IoU >=
    ``iou_threshold`` with a ground-truth box of that class. Errors are in percent.
    """
    _check_classes(loaded, dataset)
    rows = []
    for sample in _samples(dataset, limit, "localization"):
        row = _row(sample)
        rows.append(row)
        try:
            image = load_image(sample.path)
        except ImageLoadError as exc:
            row["error"] = str(exc)
            continue
        result, heat = _explain(loaded, method, image, TopK(5))
        classes = result.classes[0].tolist()
        truth = [(a.class_id, a.box) for a in sample.annotations if a.box is not None]
        boxes = [bounding_box(heat[k], threshold) for k in range(len(classes))]
        correct = [
            localization_correct(c, b, truth, iou_threshold)
            for c, b in zip(classes, boxes, strict=True)
        ]
        row.update(
            classes=classes,
            boxes=[list(b) for b in boxes],
            cls_top1=classes[0] in sample.labels,
            cls_top5=any(c in sample.labels for c in classes),
            loc_top1=correct[0],
            loc_top5=any(correct),
        )
    done = [r for r in rows if r["error"] is None]

    def error(key: str) -> float:
        if not done:
            return float("nan")
        hits = sum(bool(r[key]) for r in done)
        return round(100.0 * (1 - hits / len(done)), 2)

    summary = [
        {
            "method": method,
            "images": len(done),
            "cls_top1_error": error("cls_top1"),
            "cls_top5_error": error("cls_top5"),
            "loc_top1_error": error("loc_top1"),
            "loc_top5_error": error("loc_top5"),
        }
    ]
    return ProtocolResult("localization", summary, rows)


def pointing(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    method: str = "gradcam",
    tolerance: float = 15.0,
    recall_threshold: float | None = None,
    limit: int | None = None,
) -> ProtocolResult:
    """The pointing game (section 4.3): a map for each ground-truth class of each image; a hit
    when its maximum lies within ``tolerance`` pixels of an instance (box or mask) of the class.

    With ``recall_threshold``, the paper's recall variant: maps for the top-5 predictions, each
    rejected when its maximum (before normalization) is below the threshold; a correct rejection
    of an absent class is a hit. Accuracy is ``hits / (hits + misses)`` in percent.
    """
    _check_classes(loaded, dataset)
    rows, hits, total = [], 0, 0
    for sample in _samples(dataset, limit, "pointing"):
        row = _row(sample)
        rows.append(row)
        try:
            image = load_image(sample.path)
        except ImageLoadError as exc:
            row["error"] = str(exc)
            continue
        targets: TargetLike = TopK(5) if recall_threshold is not None else list(sample.labels)
        if not sample.labels and recall_threshold is None:
            row["hits"] = []
            continue
        result, heat = _explain(loaded, method, image, targets)
        raw_max = heatmaps(result)[0].amax(dim=(-2, -1)).tolist()
        outcome = []
        for k, class_id in enumerate(result.classes[0].tolist()):
            instances = [a for a in sample.annotations if a.class_id == class_id]
            pointed = pointing_hit(
                heat[k],
                boxes=[a.box for a in instances if a.box is not None],
                masks=[a.mask for a in instances if a.mask is not None],
                tolerance=tolerance,
            )
            if recall_threshold is not None:
                present = class_id in sample.labels
                pointed = recall_hit(raw_max[k], recall_threshold, present, pointed)
            outcome.append(bool(pointed))
        row.update(classes=result.classes[0].tolist(), hits=outcome, map_max=raw_max)
        hits += sum(outcome)
        total += len(outcome)
    summary = [
        {
            "method": method,
            "variant": "recall" if recall_threshold is not None else "precision",
            "threshold": recall_threshold,
            "tolerance": tolerance,
            "maps": total,
            "accuracy": round(100.0 * hits / total, 2) if total else float("nan"),
        }
    ]
    return ProtocolResult("pointing", summary, rows)


def _curves(
    module: nn.Module, x: Tensor, class_id: int, order: Tensor, steps: int
) -> tuple[list[float], list[float]]:
    """Deletion and insertion curves: the class probability as the most important pixels are
    removed (set to 0, the dataset mean after normalization) or inserted into a blurred copy."""
    height, width = x.shape[-2], x.shape[-1]
    blurred = F.avg_pool2d(x, 11, stride=1, padding=5, count_include_pad=False)
    deleted, inserted = [], []
    for i in range(steps + 1):
        keep = torch.zeros(height * width, dtype=torch.bool)
        keep[order[: round(i / steps * height * width)]] = True
        mask = keep.view(1, 1, height, width)
        deleted.append(torch.where(mask, torch.zeros_like(x), x))
        inserted.append(torch.where(mask, x, blurred))
    with torch.no_grad():
        batch = torch.cat(deleted + inserted)
        probs = module(batch).softmax(dim=1)[:, class_id].tolist()
    return probs[: steps + 1], probs[steps + 1 :]


def faithfulness(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    methods: Sequence[str] = ("gradcam", "guided-backprop", "guided-gradcam", "cam"),
    window: int = 35,
    stride: int = 8,
    steps: int = 16,
    limit: int | None = None,
) -> ProtocolResult:
    """Faithfulness (section 5.3): for the top-1 class of each image, the Spearman rank
    correlation between each method's map and the occlusion map (Table 2's last column), and
    the areas under the deletion curve (lower is better) and insertion curve (higher is better).
    Needs no labels.
    """
    occlusion = Occlusion(loaded.module, window=window, stride=stride, progress=False)
    rows = []
    for sample in _samples(dataset, limit, "faithfulness"):
        row = _row(sample)
        rows.append(row)
        try:
            image = load_image(sample.path)
        except ImageLoadError as exc:
            row["error"] = str(exc)
            continue
        x = loaded.preprocess(image)
        reference = occlusion(x, TopK(1))
        class_id = int(reference.classes[0, 0])
        size = (x.shape[-2], x.shape[-1])
        row["class"] = class_id
        for name in methods:
            result = create(name, loaded.module, loaded.default_layer)(x, [class_id])
            heat = upsample(heatmaps(result)[0, 0], size)
            order = heat.flatten().argsort(descending=True)
            deletion, insertion = _curves(loaded.module, x, class_id, order, steps)
            row[name] = {
                "spearman": spearman(heat, reference.raw[0, 0]),
                "deletion_auc": area_under_curve(deletion),
                "insertion_auc": area_under_curve(insertion),
            }
    done = [r for r in rows if r["error"] is None]
    summary = []
    for name in methods:

        def mean(key: str, name: str = name) -> float:
            values = [r[name][key] for r in done]
            return round(float(np.mean(values)), 4) if values else float("nan")

        summary.append(
            {
                "method": name,
                "images": len(done),
                "spearman_with_occlusion": mean("spearman"),
                "deletion_auc": mean("deletion_auc"),
                "insertion_auc": mean("insertion_auc"),
            }
        )
    return ProtocolResult("faithfulness", summary, rows)


def _cascade(module: nn.Module, points: int) -> list[list[str]]:
    """Groups of parametrized leaf modules, from the output side, cut into ``points`` steps."""
    leaves = [
        name
        for name, m in module.named_modules()
        if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
    ]
    leaves.reverse()
    points = max(1, min(points, len(leaves)))
    bounds = np.linspace(0, len(leaves), points + 1).round().astype(int)
    return [leaves[: int(end)] for end in bounds[1:]]


def sanity(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    methods: Sequence[str] = ("gradcam", "guided-backprop", "guided-gradcam"),
    points: int = 5,
    seed: int = 0,
    limit: int | None = None,
) -> ProtocolResult:
    """Model-parameter randomization test (Adebayo et al. 2018), cascading from the top.

    A copy of the model (the user's model is not touched) has its layers re-initialized from
    the output side in ``points`` cumulative steps; at each step, each method's map for the
    original top-1 class is compared with the map of the trained model by Spearman rank
    correlation. A method that explains the model should change (correlation falls); Guided
    Backprop is known not to. Needs no labels.
    """
    steps = _cascade(loaded.module, points)
    rows = []
    prepared = []
    for sample in _samples(dataset, limit, "sanity: trained model"):
        row = _row(sample)
        rows.append(row)
        try:
            image = load_image(sample.path)
        except ImageLoadError as exc:
            row["error"] = str(exc)
            continue
        x = loaded.preprocess(image)
        first = create(methods[0], loaded.module, loaded.default_layer)(x, TopK(1))
        class_id = int(first.classes[0, 0])
        size = (x.shape[-2], x.shape[-1])
        original = {
            name: upsample(
                heatmaps(_method(name, loaded, loaded.module)(x, [class_id]))[0, 0], size
            )
            for name in methods
        }
        row.update({"class": class_id, "steps": []})
        prepared.append((row, x, class_id, original))
    randomized = copy.deepcopy(loaded.module)
    names = dict(randomized.named_modules())
    generator_state = torch.random.get_rng_state()
    summary = []
    try:
        torch.manual_seed(seed)
        done_layers: set[str] = set()
        for layers in steps:
            for name in layers:
                if name not in done_layers and hasattr(names[name], "reset_parameters"):
                    names[name].reset_parameters()
                done_layers.add(name)
            correlations: dict[str, list[float]] = {m: [] for m in methods}
            for row, x, class_id, original in prepared:
                step: dict[str, Any] = {"randomized_to": layers[-1]}
                for name in methods:
                    result = _method(name, loaded, randomized)(x, [class_id])
                    heat = upsample(heatmaps(result)[0, 0], (x.shape[-2], x.shape[-1]))
                    value = spearman(heat, original[name])
                    step[name] = value
                    correlations[name].append(value)
                row["steps"].append(step)
            summary.append(
                {
                    "randomized_to": layers[-1],
                    "layers": len(layers),
                    **{
                        m: round(float(np.mean(v)), 4) if v else float("nan")
                        for m, v in correlations.items()
                    },
                }
            )
    finally:
        torch.random.set_rng_state(generator_state)
    return ProtocolResult("sanity", summary, rows)
