"""The paper's evaluation protocols: how one image is scored, and how the rows are summarized.

* :class:`Localization` (section 4.1, Table 1): top-1/top-5 classification and localization
  error;
* :class:`Pointing` (section 4.3, appendix D): pointing-game accuracy, and its recall variant;
* :class:`Faithfulness` (section 5.3): rank correlation with occlusion, deletion and insertion;
* :class:`Sanity` (Adebayo et al. 2018): cascading model-parameter randomization;
* :class:`Ablations` (appendix B, Table 3): localization error of Grad-CAM's variants.

Localization, pointing, faithfulness and sanity also score volumes and clips (datasets of
rank 3, such as ``open_dataset("synthetic-volumes")``): the same classes, in voxels.

Each is a frozen dataclass of settings (:class:`~gradcam.evaluate.base.Protocol`, whose
settings are checked when it is made: a threshold of 5 or NaN is refused with a
:class:`~gradcam.errors.GradCAMError`) registered once in :mod:`gradcam.evaluate.registry`,
which the CLI and the docs read. :func:`gradcam.evaluate.runner.run` streams a dataset through
one; :func:`gradcam.evaluate.localization` and its siblings run one in this process. Dataset
class indices must be the model's own.

Examples:
    >>> from gradcam.evaluate import read_synthetic, run
    >>> result = run(Localization(), shapes, read_synthetic("bench", 4), progress=False)
    >>> result.summary[0]["images"]
    4
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from gradcam.checks import check_number
from gradcam.errors import GradCAMError
from gradcam.evaluate.base import (
    Progress,
    Protocol,
    Scored,
    Scorer,
    by_shape,
    finished,
    heatmaps,
    model_input,
    no_progress,
    setting,
    stored,
)
from gradcam.evaluate.datasets import Input, Sample
from gradcam.evaluate.metrics import (
    Box,
    area_under_curve,
    localization_correct,
    pointing_hit,
    recall_hit,
    spearman,
)
from gradcam.evaluate.registry import register_protocol
from gradcam.maps import region_box, upsample
from gradcam.methods import CAMResult, Occlusion, create, method_spec
from gradcam.methods.planner import explain_built
from gradcam.methods.registry import DEFAULT_METHOD, GRAD_CAM, check_method
from gradcam.models import LoadedModel
from gradcam.targets import TargetLike, TopK

__all__ = ["ABLATIONS", "Ablations", "Faithfulness", "Localization", "Pointing", "Sanity"]


def _check_fraction(name: str, value: float) -> None:
    check_number(name, value, 0, 1, what="a fraction of the map's maximum")


def _check_at_least(name: str, value: float, low: float, unit: str = "") -> None:
    check_number(name, value, low, unit=unit)


def _error_rate(rows: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], bool]) -> float:
    if not rows:
        return float("nan")
    return round(100.0 * (1 - sum(bool(key(r)) for r in rows) / len(rows)), 2)


def _to_image(box: Box, size: tuple[int, int], image: Image.Image) -> Box:
    """A box on an (h, w) map, as the box of the same region in the image's pixels."""
    sx, sy = image.width / size[1], image.height / size[0]
    x0, y0, x1, y1 = box
    return (
        math.floor(x0 * sx),
        math.floor(y0 * sy),
        min(math.ceil((x1 + 1) * sx) - 1, image.width - 1),
        min(math.ceil((y1 + 1) * sy) - 1, image.height - 1),
    )


def _localize(
    heat: Tensor,
    image: Input,
    classes: list[int],
    sample: Sample,
    threshold: float,
    iou_threshold: float,
) -> dict[str, Any]:
    """Boxes for the (K, *spatial) input-size maps of ``classes`` in the image's pixels (an
    array's voxels), scored against the sample. Segmenting at input size (the image scaled,
    aspect kept) rather than at the photo's own size finds the same region at a fraction of
    the cost on large photos; an array sample is its input, so its boxes need no scaling."""
    truth = [(a.class_id, a.box) for a in sample.annotations if a.box is not None]
    size = (heat.shape[-2], heat.shape[-1])
    boxes = [region_box(heat[k], threshold) for k in range(len(classes))]
    if isinstance(image, Image.Image):
        boxes = [_to_image(box, size, image) for box in boxes]
    correct = [
        localization_correct(c, b, truth, iou_threshold)
        for c, b in zip(classes, boxes, strict=True)
    ]
    return {
        "boxes": [list(b) for b in boxes],
        "loc_top1": correct[0],
        "loc_top5": any(correct),
    }


def _classified(classes: list[int], sample: Sample) -> dict[str, Any]:
    return {
        "classes": classes,
        "cls_top1": classes[0] in sample.labels,
        "cls_top5": any(c in sample.labels for c in classes),
    }


def _top5(loaded: LoadedModel) -> TopK:
    return TopK(min(5, len(loaded.class_names)))


@register_protocol(
    title="weakly-supervised localization error",
    citation="section 4.1, Table 1",
    summary=(
        "method",
        "images",
        "cls_top1_error",
        "cls_top5_error",
        "loc_top1_error",
        "loc_top5_error",
    ),
)
@dataclass(frozen=True)
class Localization(Protocol):
    """Weakly-supervised localization (section 4.1, Table 1).

    For each image, maps for the top-5 predicted classes are upsampled to the image, binarized
    at ``threshold`` times their maximum, and the box around the largest connected segment is
    the prediction. A prediction is correct when its class is a label of the image and its
    box has IoU >= ``iou_threshold`` with a ground-truth box of that class. Errors are in
    percent. Volumes and clips are localized the same way in 3-D: the largest 26-connected
    segment and its box ``(x0, y0, z0, x1, y1, z1)`` (:func:`gradcam.maps.region_box`), scored
    by 3-D IoU. Images of equal size are explained as one batch. ``layer`` (default: the
    model's default layer) gives appendix B.1's comparison of layers.

    Examples:
        >>> from gradcam.evaluate import read_synthetic, run
        >>> result = run(Localization(), shapes, read_synthetic("bench", 4), progress=False)
        >>> sorted(result.summary[0])[:3]
        ['cls_top1_error', 'cls_top5_error', 'images']
    """

    name: ClassVar[str] = "localization"
    needs: ClassVar[tuple[str, ...]] = ("labels", "boxes")
    ranks: ClassVar[tuple[int, ...]] = (2, 3)
    method: str = field(default=DEFAULT_METHOD, metadata=setting("the explanation method"))
    threshold: float = field(
        default=0.15, metadata=setting("binarize maps at this fraction of their maximum")
    )
    iou_threshold: float = field(
        default=0.5, metadata=setting("a box is correct at this IoU with a true box")
    )
    layer: str | None = field(
        default=None, metadata=setting("the layer to explain (default: the model's)")
    )
    options: dict[str, Any] = field(default_factory=dict, metadata=setting("the method's options"))

    def __post_init__(self) -> None:
        check_method(self.method, self.options)
        _check_fraction("threshold", self.threshold)
        _check_fraction("iou_threshold", self.iou_threshold)

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        layer = self.layer or loaded.default_layer
        explain = create(self.method, loaded.module, layer, **self.options)
        targets = _top5(loaded)
        tell = progress or no_progress

        def score(samples: Sequence[Sample], images: Sequence[Input]) -> list[Scored]:
            xs = [model_input(loaded, image) for image in images]
            scored: list[Scored | None] = [None] * len(xs)
            for group in by_shape(xs):
                result = explain(torch.cat([xs[i] for i in group]), targets)
                raw = heatmaps(result)
                for j, i in enumerate(group):
                    image, sample = images[i], samples[i]
                    heat = upsample(raw[j], tuple(xs[i].shape[2:]))
                    classes = result.classes[j].tolist()
                    row = _classified(classes, sample)
                    row.update(
                        _localize(heat, image, classes, sample, self.threshold, self.iou_threshold)
                    )
                    scored[i] = (row, {self.method: stored(raw[j])})
                tell(len(group))
            return [s for s in scored if s is not None]

        return score

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        return [
            {
                "method": self.method,
                "images": len(done),
                "cls_top1_error": _error_rate(done, lambda r: r["cls_top1"]),
                "cls_top5_error": _error_rate(done, lambda r: r["cls_top5"]),
                "loc_top1_error": _error_rate(done, lambda r: r["loc_top1"]),
                "loc_top5_error": _error_rate(done, lambda r: r["loc_top5"]),
            }
        ]


@register_protocol(
    title="pointing-game accuracy",
    citation="section 4.3, appendix D",
    summary=("method", "variant", "threshold", "tolerance", "maps", "rejected", "accuracy"),
)
@dataclass(frozen=True)
class Pointing(Protocol):
    """The pointing game (section 4.3): a map for each ground-truth class of each image; a hit
    when its maximum lies within ``tolerance`` pixels of an instance (box or mask) of the class.

    Volumes and clips play it in voxels with their 3-D masks (an instance's box only where
    it has no mask): with ``tolerance=0`` a hit is a maximum in the object's voxels, for a
    clip on the object in the frame where it is.

    With ``recall_threshold``, the paper's recall variant (appendix D): maps for the top-5
    predictions, each rejected when its maximum (before normalization) is below the threshold;
    a correct rejection of an absent class is a hit. Accuracy is ``hits / (hits + misses)``.
    """

    name: ClassVar[str] = "pointing"
    needs: ClassVar[tuple[str, ...]] = ("labels", "boxes or masks")
    ranks: ClassVar[tuple[int, ...]] = (2, 3)
    method: str = field(default=DEFAULT_METHOD, metadata=setting("the explanation method"))
    tolerance: float = field(
        default=15.0, metadata=setting("a hit within this many pixels of an instance")
    )
    recall_threshold: float | None = field(
        default=None,
        metadata=setting("the recall variant: reject maps whose maximum is below this"),
    )
    layer: str | None = field(
        default=None, metadata=setting("the layer to explain (default: the model's)")
    )
    options: dict[str, Any] = field(default_factory=dict, metadata=setting("the method's options"))

    def __post_init__(self) -> None:
        check_method(self.method, self.options)
        _check_at_least("tolerance", self.tolerance, 0, " pixels")
        if self.recall_threshold is not None:
            # The threshold is on the map's raw maximum, whose scale is the model's: any
            # non-negative number may be right, so only what no map can reach is refused.
            _check_at_least("recall_threshold", self.recall_threshold, 0)

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        layer = self.layer or loaded.default_layer
        explain = create(self.method, loaded.module, layer, **self.options)
        recall = self.recall_threshold
        tell = progress or no_progress

        def hits(
            sample: Sample, heat: Tensor, raw_max: list[float], classes: list[int]
        ) -> list[bool]:
            outcome = []
            # A clip's box spans the object's whole path over all frames, so in 3-D a mask,
            # where there is one, is the only target: the right place in the right frame.
            by_mask = heat.dim() > 3
            for k, class_id in enumerate(classes):
                instances = [a for a in sample.annotations if a.class_id == class_id]
                pointed = pointing_hit(
                    heat[k],
                    boxes=[
                        a.box
                        for a in instances
                        if a.box is not None and not (by_mask and a.mask is not None)
                    ],
                    masks=[a.mask for a in instances if a.mask is not None],
                    tolerance=self.tolerance,
                )
                if recall is not None:
                    pointed = recall_hit(raw_max[k], recall, class_id in sample.labels, pointed)
                outcome.append(bool(pointed))
            return outcome

        def score(samples: Sequence[Sample], images: Sequence[Input]) -> list[Scored]:
            xs = [model_input(loaded, image) for image in images]
            scored: list[Scored] = [({"classes": [], "hits": [], "map_max": []}, {})] * len(xs)
            # Images of one size with as many labels run as one batch, each with its classes.
            keys = [
                (*x.shape, -1 if recall is not None else len(s.labels))
                for x, s in zip(xs, samples, strict=True)
            ]
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, key in enumerate(keys):
                if key[-1] != 0:  # no label: nothing to point at
                    groups.setdefault(key, []).append(i)
            tell(len(xs) - sum(len(g) for g in groups.values()))
            for group in groups.values():
                targets: TargetLike = (
                    _top5(loaded)
                    if recall is not None
                    else torch.tensor([list(samples[i].labels) for i in group])
                )
                result = explain(torch.cat([xs[i] for i in group]), targets)
                raw = heatmaps(result)
                for j, i in enumerate(group):
                    image = images[i]
                    # A photo's map at the photo's size (where its boxes are), an array's at
                    # its own.
                    size = (
                        (image.height, image.width)
                        if isinstance(image, Image.Image)
                        else tuple(image.shape[1:])
                    )
                    heat = upsample(raw[j], size)
                    raw_max = raw[j].flatten(1).amax(dim=1).tolist()
                    classes = result.classes[j].tolist()
                    row = {
                        "classes": classes,
                        "hits": hits(samples[i], heat, raw_max, classes),
                        "map_max": raw_max,
                    }
                    scored[i] = (row, {self.method: stored(raw[j])})
                tell(len(group))
            return scored

        return score

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        outcomes = [hit for row in done for hit in row["hits"]]
        maxima = [m for row in done for m in row["map_max"]]
        rejected = None
        if self.recall_threshold is not None and maxima:
            # The share of maps rejected says whether the threshold suits the maps' scale.
            below = sum(m < self.recall_threshold for m in maxima)
            rejected = round(100.0 * below / len(maxima), 2)
        return [
            {
                "method": self.method,
                "variant": "recall" if self.recall_threshold is not None else "precision",
                "threshold": self.recall_threshold,
                "tolerance": self.tolerance,
                "maps": len(outcomes),
                "rejected": rejected,
                "accuracy": (
                    round(100.0 * sum(outcomes) / len(outcomes), 2) if outcomes else float("nan")
                ),
            }
        ]


class _Counted(nn.Module):
    """``module`` that tells ``count`` how many images each forward pass was given."""

    def __init__(self, module: nn.Module, count: Callable[[int], None]) -> None:
        super().__init__()
        self.module = module
        self.count = count

    def forward(self, x: Tensor) -> Any:
        output = self.module(x)
        self.count(int(x.shape[0]))
        return output


def _curves(
    module: nn.Module, x: Tensor, class_id: int, order: Tensor, steps: int
) -> tuple[list[float], list[float]]:
    """Deletion and insertion curves: the class probability as the most important pixels (or
    voxels) are removed (set to 0, the dataset mean after normalization) or inserted into a
    blurred copy (a mean over an 11-wide box, a cube for volumes and clips)."""
    spatial = tuple(x.shape[2:])
    count = math.prod(spatial)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(spatial)]
    # 11 wide, or the widest odd width an axis shorter than that holds (a clip's 8 frames: 7).
    kernel = tuple(min(11, n - 1 + n % 2) for n in spatial)
    padding = tuple(k // 2 for k in kernel)
    blurred = pool(x, kernel, stride=1, padding=padding, count_include_pad=False)
    deleted, inserted = [], []
    for i in range(steps + 1):
        keep = torch.zeros(count, dtype=torch.bool)
        keep[order[: round(i / steps * count)]] = True
        mask = keep.view(1, 1, *spatial)
        deleted.append(torch.where(mask, torch.zeros_like(x), x))
        inserted.append(torch.where(mask, x, blurred))
    with torch.no_grad():
        batch = torch.cat(deleted + inserted)
        probs = module(batch).softmax(dim=1)[:, class_id].tolist()
    return probs[: steps + 1], probs[steps + 1 :]


def _method_means(
    rows: Sequence[dict[str, Any]], method: str, keys: dict[str, str]
) -> dict[str, float]:
    """Means over images of ``row[method][key]``, reported under ``keys[key]``."""
    out = {}
    for key, label in keys.items():
        values = [r[method][key] for r in rows]
        out[label] = round(float(np.mean(values)), 4) if values else float("nan")
    return out


@register_protocol(
    title="rank correlation with occlusion, deletion and insertion",
    citation="section 5.3",
    summary=("method", "images", "spearman_with_occlusion", "deletion_auc", "insertion_auc"),
)
@dataclass(frozen=True)
class Faithfulness(Protocol):
    """Faithfulness (section 5.3): for the top-1 class of each image, the Spearman rank
    correlation between each method's map and the occlusion map (Table 2's last column), and
    the areas under the deletion curve (lower is better) and insertion curve (higher is
    better). Needs no labels. On volumes and clips the occlusion window is a cube of
    ``window`` voxels and the curves delete and insert voxels.
    """

    name: ClassVar[str] = "faithfulness"
    ranks: ClassVar[tuple[int, ...]] = (2, 3)
    methods: tuple[str, ...] = field(
        default=(GRAD_CAM, "guided-backprop", "guided-gradcam", "cam"),
        metadata=setting("the explanation methods"),
    )
    window: int = field(default=35, metadata=setting("occlusion window in input pixels"))
    stride: int = field(default=8, metadata=setting("occlusion stride in input pixels"))
    steps: int = field(default=16, metadata=setting("points of the deletion and insertion curves"))
    options: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=setting("each method's options, by method")
    )

    def __post_init__(self) -> None:
        for method in self.methods:
            check_method(method, self.options.get(method, {}))
        _check_at_least("window", self.window, 1, " pixels")
        _check_at_least("stride", self.stride, 1, " pixels")
        _check_at_least("steps", self.steps, 1)

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        tell = progress or no_progress
        # Occlusion's passes are most of an image's work: count them as they run.
        share = [0.0]
        counted = _Counted(loaded.module, lambda copies: tell(copies * share[0]))
        occlusion = Occlusion(counted, window=self.window, stride=self.stride, progress=False)
        explainers = {
            m: create(m, loaded.module, loaded.default_layer, **self.options.get(m, {}))
            for m in self.methods
        }
        # A method's cost in forward passes of one image: its explanation (about three), then
        # the deletion and insertion curves.
        per_method = 3 + 2 * (self.steps + 1)

        def one(sample: Sample, image: Input) -> Scored:
            x = model_input(loaded, image)
            size = tuple(int(n) for n in x.shape[2:])
            passes = len(occlusion.boxes(size)) + 1
            total = passes + per_method * len(self.methods)
            share[0] = 1.0 / total
            reference = occlusion(x, TopK(1))
            class_id = int(reference.classes[0, 0])
            row: dict[str, Any] = {"class": class_id}
            maps = {"occlusion": stored(reference.raw[0, 0])}
            for name, explain in explainers.items():
                raw = heatmaps(explain(x, [class_id]))[0, 0]
                heat = upsample(raw, size)
                order = heat.flatten().argsort(descending=True)
                deletion, insertion = _curves(loaded.module, x, class_id, order, self.steps)
                row[name] = {
                    "spearman": spearman(heat, reference.raw[0, 0]),
                    "deletion_auc": area_under_curve(deletion),
                    "insertion_auc": area_under_curve(insertion),
                }
                maps[name] = stored(raw)
                tell(per_method / total)
            return row, maps

        return lambda samples, images: [one(s, i) for s, i in zip(samples, images, strict=True)]

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        keys = {
            "spearman": "spearman_with_occlusion",
            "deletion_auc": "deletion_auc",
            "insertion_auc": "insertion_auc",
        }
        return [
            {"method": m, "images": len(done), **_method_means(done, m, keys)} for m in self.methods
        ]


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


def _randomized_copies(
    module: nn.Module, points: int, seed: int
) -> list[tuple[str, int, nn.Module]]:
    """``(last layer randomized, layers randomized, model)`` per cascade step, on copies."""
    randomized = copy.deepcopy(module)
    names = dict(randomized.named_modules())
    state = torch.random.get_rng_state()
    copies = []
    try:
        torch.manual_seed(seed)
        done: set[str] = set()
        for layers in _cascade(module, points):
            for name in layers:
                if name not in done and hasattr(names[name], "reset_parameters"):
                    names[name].reset_parameters()
                done.add(name)
            copies.append((layers[-1], len(layers), copy.deepcopy(randomized)))
    finally:
        torch.random.set_rng_state(state)
    return copies


@register_protocol(
    title="model-parameter randomization",
    citation="Adebayo et al. 2018",
    summary=("randomized_to", "layers", "<method>"),
)
@dataclass(frozen=True)
class Sanity(Protocol):
    """Model-parameter randomization test (Adebayo et al. 2018), cascading from the top.

    Copies of the model (the user's model is not touched) have their layers re-initialized
    from the output side in ``points`` cumulative steps; at each step, each method's map for
    the original top-1 class is compared with the map of the trained model by Spearman rank
    correlation. A method that explains the model should change (correlation falls); Guided
    Backprop is known not to. Needs no labels. Holds ``points`` copies of the model per
    process.
    """

    name: ClassVar[str] = "sanity"
    ranks: ClassVar[tuple[int, ...]] = (2, 3)
    methods: tuple[str, ...] = field(
        default=(GRAD_CAM, "guided-backprop", "guided-gradcam"),
        metadata=setting("the explanation methods"),
    )
    points: int = field(default=5, metadata=setting("randomization steps"))
    seed: int = field(
        default=0, metadata=setting("seed of the re-initialization", flag="--randomization-seed")
    )
    options: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=setting("each method's options, by method")
    )

    def __post_init__(self) -> None:
        for method in self.methods:
            check_method(method, self.options.get(method, {}))
        _check_at_least("points", self.points, 1)

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        tell = progress or no_progress
        steps = _randomized_copies(loaded.module, self.points, self.seed)
        # Explanations per image: the first, the trained model's, one per step and method.
        share = 1.0 / (1 + len(self.methods) * (1 + len(steps)))

        def heat(module: nn.Module, name: str, x: Tensor, targets: TargetLike) -> Tensor:
            options = self.options.get(name, {})
            result = create(name, module, loaded.default_layer, **options)(x, targets)
            return upsample(heatmaps(result)[0, 0], tuple(x.shape[2:]))

        def one(sample: Sample, image: Input) -> Scored:
            x = model_input(loaded, image)
            first = create(self.methods[0], loaded.module, loaded.default_layer)(x, TopK(1))
            class_id = int(first.classes[0, 0])
            tell(share)
            original = {m: heat(loaded.module, m, x, [class_id]) for m in self.methods}
            tell(share * len(self.methods))
            row: dict[str, Any] = {"class": class_id, "steps": []}
            for last, count, module in steps:
                step: dict[str, Any] = {"randomized_to": last, "layers": count}
                for m in self.methods:
                    step[m] = spearman(heat(module, m, x, [class_id]), original[m])
                    tell(share)
                row["steps"].append(step)
            return row, {}

        return lambda samples, images: [one(s, i) for s, i in zip(samples, images, strict=True)]

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        if not done:
            return []
        summary = []
        for k, first in enumerate(done[0]["steps"]):
            values = {m: [r["steps"][k][m] for r in done] for m in self.methods}
            summary.append(
                {
                    "randomized_to": first["randomized_to"],
                    "layers": first["layers"],
                    **{m: round(float(np.mean(v)), 4) for m, v in values.items()},
                }
            )
        return summary


#: The variants of appendix B's Table 3: name -> the options of the ``gradcam`` method
#: (pooling of the gradients, final ReLU, backward rule between the layer and the score).
ABLATIONS: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "max-pooling": {"pooling": "max"},
    "abs-gradients": {"pooling": "abs"},
    "no-relu": {"relu": False},
    "guided-relu": {"gradient_rule": "guided"},
    "deconv-relu": {"gradient_rule": "deconv"},
}


def _ablation_setting(variant: str, option: str) -> Any:
    """A variant's value of a Grad-CAM option (the registry's default where it sets none)."""
    return ABLATIONS[variant].get(option, method_spec(GRAD_CAM).option(option).default)


@register_protocol(
    title="localization error of Grad-CAM's variants",
    citation="appendix B, Table 3",
    summary=(
        "variant",
        "pooling",
        "relu",
        "gradient_rule",
        "images",
        "loc_top1_error",
        "loc_top5_error",
    ),
)
@dataclass(frozen=True)
class Ablations(Protocol):
    """Grad-CAM's design choices under the localization protocol (appendix B, Table 3).

    Each variant of :data:`ABLATIONS` (global-average vs global-max pooling of the gradients,
    absolute gradients, no final ReLU, guided or deconvolution backward rule at the rectifiers
    between the layer and the score) localizes the top-5 classes as in :class:`Localization`.
    Variants with the same backward rule share one forward and one backward pass.

    At a layer followed only by global average pooling and one linear layer (CAM's
    architecture), the gradient is the same at every position and no rectifier lies between
    the layer and the score, so max pooling and the guided and deconvolution rules change
    nothing there; choose an earlier ``layer`` to see them differ.
    """

    name: ClassVar[str] = "ablations"
    needs: ClassVar[tuple[str, ...]] = ("labels", "boxes")
    variants: tuple[str, ...] = field(
        default=tuple(ABLATIONS), metadata=setting("the variants of Grad-CAM to compare")
    )
    threshold: float = field(
        default=0.15, metadata=setting("binarize maps at this fraction of their maximum")
    )
    iou_threshold: float = field(
        default=0.5, metadata=setting("a box is correct at this IoU with a true box")
    )
    layer: str | None = field(
        default=None, metadata=setting("the layer to explain (default: the model's)")
    )

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in ABLATIONS]
        if unknown:
            raise GradCAMError(
                f"unknown ablation {unknown[0]!r}; choose from {', '.join(ABLATIONS)}"
            )
        _check_fraction("threshold", self.threshold)
        _check_fraction("iou_threshold", self.iou_threshold)

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        tell = progress or no_progress
        layer = self.layer or loaded.default_layer
        built = {v: create(GRAD_CAM, loaded.module, layer, **ABLATIONS[v]) for v in self.variants}
        targets = _top5(loaded)

        def score(samples: Sequence[Sample], images: Sequence[Input]) -> list[Scored]:
            xs = [loaded.preprocess(cast(Image.Image, image)) for image in images]
            scored: list[Scored | None] = [None] * len(xs)
            for group in by_shape(xs):
                x = torch.cat([xs[i] for i in group])
                # Variants with the same backward rule share one forward and backward pass.
                results = explain_built(built, loaded.module, x, targets)
                raws = {v: cast(CAMResult, r).raw for v, r in results.items()}
                classes = next(iter(results.values())).classes.tolist()
                for j, i in enumerate(group):
                    image, sample = images[i], samples[i]
                    row = _classified(classes[j], sample)
                    for variant in self.variants:
                        heat = upsample(raws[variant][j], (xs[i].shape[-2], xs[i].shape[-1]))
                        if not _ablation_setting(variant, "relu"):
                            # Without the ReLU the map is min-max normalized, as it is for
                            # display, so its negative evidence lowers the threshold.
                            heat = heat - heat.amin(dim=(-2, -1), keepdim=True)
                        located = _localize(
                            heat, image, classes[j], sample, self.threshold, self.iou_threshold
                        )
                        row[variant] = {k: located[k] for k in ("loc_top1", "loc_top5")}
                    maps = {v: stored(raws[v][j]) for v in self.variants}
                    scored[i] = (row, maps)
                tell(len(group))
            return [s for s in scored if s is not None]

        return score

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        return [
            {
                "variant": variant,
                "pooling": _ablation_setting(variant, "pooling"),
                "relu": _ablation_setting(variant, "relu"),
                "gradient_rule": _ablation_setting(variant, "gradient_rule"),
                "images": len(done),
                "loc_top1_error": _error_rate(done, _field(variant, "loc_top1")),
                "loc_top5_error": _error_rate(done, _field(variant, "loc_top5")),
            }
            for variant in self.variants
        ]


def _field(variant: str, key: str) -> Callable[[dict[str, Any]], bool]:
    return lambda row: bool(row[variant][key])
