"""The paper's evaluations of section 8, on the generated scenes with their exact masks.

* :func:`word_pointing`: section 8.1.1. For every color and shape word of a scene's
  ground-truth caption, the maximum of the word's map (:class:`~gradcam.targets.CaptionWord`)
  is a hit when it lies on the mask of the object the word names. Chance is the share of the
  image that object covers (a random point). The paper: 30.0% on COCO.
* :func:`region_ratio`: section 8.1's comparison with DenseCap. For each object, the region
  caption "a <color> <shape>" is explained through the whole-image captioner
  (:class:`~gradcam.targets.CaptionLogProb`); the score is the mean map value inside the
  object's box over the mean outside it. A uniform map gives 1.0; the paper: 3.27 for
  Grad-CAM, 2.32 for Guided Backprop, 6.38 for Guided Grad-CAM.
* :func:`answer_correlation`: section 8.2's comparison with human attention. For every
  question, the rank correlation (Spearman) of the map of the model's answer with the mask of
  the object asked about (where a person would look), and with the other object's mask. The
  paper: 0.136 against human attention maps on VQA.
* :func:`occlusion_correlation`: section 8.2's faithfulness check. The rank correlation of
  each method's map of the model's answer with the occlusion map of the same answer (as in
  section 5.3). The paper: 0.60 for Grad-CAM, 0.42 for Guided Backprop.
* :func:`forced_answers`: Fig. 12 on the scenes. For "what color is the <shape>?", whether
  the map of the right color peaks on that shape, and whether the map of the *other* object's
  color (a forced answer) peaks on the other object.

Examples:
    >>> from gradcam.vl import load_captioner, vl_scene
    >>> score = word_pointing(load_captioner(), [vl_scene(i) for i in range(10)])
    >>> score.hits, score.total, score.accuracy, round(score.chance, 3)
    (22, 40, 0.55, 0.063)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gradcam.evaluate.metrics import spearman
from gradcam.hooks import model_lock
from gradcam.maps import peak
from gradcam.methods import Occlusion, create
from gradcam.methods.registry import DEFAULT_METHOD, GRAD_CAM
from gradcam.synthetic.scenes import Scene
from gradcam.targets import Answer, CaptionLogProb, CaptionWord
from gradcam.vl.models import VL_LAYER, Captioner, VQAModel
from gradcam.vl.scenes import VL_PREPROCESS
from gradcam.vl.text import ANSWERS, VL_COLORS, caption, encode, questions

__all__ = [
    "Correlation",
    "ForcedAnswers",
    "OcclusionCorrelation",
    "PointingScore",
    "Ratio",
    "answer_correlation",
    "forced_answers",
    "inside_outside",
    "occlusion_correlation",
    "region_ratio",
    "word_pointing",
]


@dataclass(frozen=True)
class PointingScore:
    """The result of :func:`word_pointing`: word-level pointing (section 8.1.1). (The pointing
    game *protocol* of section 4.3 is :class:`gradcam.evaluate.Pointing`.)

    Attributes:
        hits: words whose map peaks on the object they name.
        total: words scored (two colors and two shapes per scene).
        other: words whose map peaks on the *other* object.
        chance: the mean share of the image covered by the named object.
        colors: accuracy on color words alone.
        shapes: accuracy on shape words alone.
    """

    hits: int
    total: int
    other: int
    chance: float
    colors: float
    shapes: float

    @property
    def accuracy(self) -> float:
        """``hits / (hits + misses)``."""
        return self.hits / max(self.total, 1)


@dataclass(frozen=True)
class Ratio:
    """Inside/outside ratio of one method (section 8.1) over regions: mean and its standard
    error as the paper reports them, and the median, which a few maps that are almost zero
    outside the box cannot inflate."""

    method: str
    mean: float
    stderr: float
    median: float
    regions: int


@dataclass(frozen=True)
class OcclusionCorrelation:
    """One method's rank correlation with occlusion maps over questions (section 8.2):
    the mean and its standard error, and the median."""

    method: str
    mean: float
    stderr: float
    median: float
    questions: int


@dataclass(frozen=True)
class Correlation:
    """Rank correlation of answer maps with the answer-relevant region (section 8.2).

    Attributes:
        relevant: mean Spearman correlation with the mask of the object asked about.
        other: the same with the other object's mask.
        stderr: standard error of ``relevant``.
        questions: questions scored.
        accuracy: share of them the model answered right.
    """

    relevant: float
    other: float
    stderr: float
    questions: int
    accuracy: float


@dataclass(frozen=True)
class ForcedAnswers:
    """Fig. 12 on the scenes: where the right and a forced color answer look.

    Attributes:
        right: share of questions whose right-color map peaks on the object asked about.
        forced: share whose forced-color map (the other object's color) peaks on the other
            object.
        stayed: share whose right-color map peaks on the other object: where the map was
            before the answer was forced.
        questions: questions scored (two per scene).
    """

    right: float
    forced: float
    stayed: float
    questions: int


def _on(mask: np.ndarray, map2d: Tensor) -> bool:
    """Whether a map's maximum is on a mask; a constant map points nowhere (a miss)."""
    point = peak(map2d)
    return point is not None and bool(mask[point[1], point[0]])


def _input(scene: Scene) -> Tensor:
    return VL_PREPROCESS(scene.image)


def word_pointing(
    model: Captioner, scenes: Sequence[Scene], method: str = DEFAULT_METHOD
) -> PointingScore:
    """Pointing accuracy of the color and shape words of the scenes' true captions."""
    hits = other = total = 0
    by_kind = {"color": [0, 0], "shape": [0, 0]}
    chance = []
    for scene in scenes:
        told = caption(scene)
        tokens = told.tokens
        grounded = [(i, o) for i, o in enumerate(told.objects) if o is not None]
        result = create(method, model.explainable(tokens), VL_LAYER)(
            _input(scene), [CaptionWord(tokens, i) for i, _ in grounded]
        )
        for k, (position, index) in enumerate(grounded):
            named = scene.objects[index].mask
            hit = _on(named, result.maps[0, k])
            hits += hit
            other += _on(scene.objects[1 - index].mask, result.maps[0, k])
            total += 1
            kind = "color" if told.words[position] in VL_COLORS else "shape"
            by_kind[kind][0] += hit
            by_kind[kind][1] += 1
            chance.append(named.mean())
    return PointingScore(
        hits,
        total,
        other,
        float(np.mean(chance)) if chance else math.nan,
        by_kind["color"][0] / max(by_kind["color"][1], 1),
        by_kind["shape"][0] / max(by_kind["shape"][1], 1),
    )


def _box_mask(box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    inside = np.zeros(shape, dtype=bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    return inside


def inside_outside(map2d: Tensor | np.ndarray, inside: np.ndarray) -> float:
    """Mean of a non-negative map inside a region over its mean outside (section 8.1).

    A uniform map gives 1.0, and so does an all-zero one (no evidence anywhere); evidence
    only inside gives ``inf``.

    Examples:
        >>> inside_outside(np.array([[2.0, 1.0]]), np.array([[True, False]]))
        2.0
    """
    values = np.asarray(map2d, dtype=np.float64)
    if values.shape != inside.shape:
        raise ValueError(f"map {values.shape} and region {inside.shape} differ in shape")
    if not inside.any() or inside.all():
        raise ValueError("the region must cover part of the map, not none or all of it")
    mean_in, mean_out = values[inside].mean(), values[~inside].mean()
    if mean_out == 0:
        return 1.0 if mean_in == 0 else math.inf
    return float(mean_in / mean_out)


def _strength(map_: Tensor) -> np.ndarray:
    """A heatmap as it is; a pixel-space map as its absolute value summed over colors."""
    values = map_.abs().sum(dim=0) if map_.dim() == 3 else map_
    return values.detach().numpy()


def region_ratio(
    model: Captioner,
    scenes: Sequence[Scene],
    methods: Sequence[str] = (GRAD_CAM, "guided-backprop", "guided-gradcam"),
) -> list[Ratio]:
    """Inside/outside-box ratios of the maps of each object's region caption."""
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    for scene in scenes:
        x = _input(scene)
        for obj in scene.objects:
            tokens = encode(["a", obj.color, obj.shape])
            adapter = model.explainable(tokens)
            inside = _box_mask(obj.box, obj.mask.shape)
            for name in methods:
                map_ = create(name, adapter, VL_LAYER)(x, CaptionLogProb(tokens)).maps[0, 0]
                ratios[name].append(inside_outside(_strength(map_), inside))
    rows = []
    for name, values in ratios.items():
        finite = np.asarray([v for v in values if math.isfinite(v)])
        stderr = float(finite.std(ddof=1) / math.sqrt(len(finite))) if len(finite) > 1 else 0.0
        mean = float(finite.mean()) if len(finite) else math.nan
        median = float(np.median(values)) if values else math.nan
        rows.append(Ratio(name, mean, stderr, median, len(values)))
    return rows


def answer_correlation(
    model: VQAModel, scenes: Sequence[Scene], method: str = DEFAULT_METHOD
) -> Correlation:
    """Rank correlation of the model's answer maps with the object each question is about."""
    relevant, other = [], []
    right = 0
    for scene in scenes:
        x = _input(scene)
        for question in questions(scene):
            adapter = model.explainable(question.tokens)
            with torch.no_grad(), model_lock(adapter):
                answer = int(adapter(x).argmax(dim=1))
            right += ANSWERS[answer] == question.answer
            map_ = create(method, adapter, VL_LAYER)(x, Answer(answer)).maps[0, 0].numpy()
            relevant.append(spearman(map_, scene.objects[question.object].mask.astype(float)))
            other.append(spearman(map_, scene.objects[1 - question.object].mask.astype(float)))
    count = len(relevant)
    stderr = float(np.std(relevant, ddof=1) / math.sqrt(count)) if count > 1 else 0.0
    return Correlation(
        float(np.mean(relevant)) if count else math.nan,
        float(np.mean(other)) if count else math.nan,
        stderr,
        count,
        right / max(count, 1),
    )


def forced_answers(
    model: VQAModel, scenes: Sequence[Scene], method: str = DEFAULT_METHOD
) -> ForcedAnswers:
    """Where "what color is the <shape>?" looks for the right color and for the other
    object's color (a forced answer), on every object of every scene."""
    right = forced = stayed = total = 0
    for scene in scenes:
        x = _input(scene)
        for index, obj in enumerate(scene.objects):
            other = scene.objects[1 - index]
            adapter = model.explainable(f"what color is the {obj.shape} ?")
            targets = [Answer(ANSWERS.index(obj.color)), Answer(ANSWERS.index(other.color))]
            maps = create(method, adapter, VL_LAYER)(x, targets).maps[0]
            right += _on(obj.mask, maps[0])
            forced += _on(other.mask, maps[1])
            stayed += _on(other.mask, maps[0])
            total += 1
    count = max(total, 1)
    return ForcedAnswers(right / count, forced / count, stayed / count, total)


def occlusion_correlation(
    model: VQAModel,
    scenes: Sequence[Scene],
    methods: Sequence[str] = (GRAD_CAM, "guided-backprop"),
    *,
    window: int = 16,
    stride: int = 8,
) -> list[OcclusionCorrelation]:
    """Mean (and standard error, median) over questions of the Spearman correlation of each
    method's map of the model's answer with its occlusion map (``window`` x ``window`` gray
    patches every ``stride`` pixels; 16 of 96 is about the paper's 35 of 224). Pixel-space
    maps count as their absolute value summed over colors."""
    values: dict[str, list[float]] = {m: [] for m in methods}
    for scene in scenes:
        x = _input(scene)
        for question in questions(scene):
            adapter = model.explainable(question.tokens)
            with torch.no_grad(), model_lock(adapter):
                target = Answer(int(adapter(x).argmax(dim=1)))
            occluded = Occlusion(adapter, window, stride, batch_size=64, progress=False)
            reference = occluded(x, target).maps[0, 0].numpy()
            for name in methods:
                map_ = create(name, adapter, VL_LAYER)(x, target).maps[0, 0]
                values[name].append(spearman(_strength(map_), reference))
    rows = []
    for name, found in values.items():
        array = np.asarray(found)
        stderr = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else 0.0
        mean = float(array.mean()) if len(array) else math.nan
        median = float(np.median(array)) if len(array) else math.nan
        rows.append(OcclusionCorrelation(name, mean, stderr, median, len(array)))
    return rows
