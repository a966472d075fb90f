"""Textual explanations (section 7 of the paper): Grad-CAM's important neurons, by name.

Grad-CAM's weights (eq. 1)

    alpha_k^c = 1/Z sum_i sum_j dy^c / dA^k_ij

are the importance of unit ``k`` of the layer for class ``c``: a high positive ``alpha`` means
the concept the unit detects raises the score, a negative one that its absence does. With
the units named by Network Dissection (:func:`gradcam.dissect.dissect`), the top-5 and
bottom-5 units by ``alpha_k^c`` and their names are a textual explanation of the decision,
printed as the paper's Fig. 9 shows them::

    espresso: positive: cup (unit 12, IoU 0.08), ...; negative: sky (unit 3, IoU 0.06), ...

Each unit comes with its own activation map ``A^k`` over the photo.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from gradcam.dissect.dissect import Dissection, layer_activations
from gradcam.layers import resolve_layer
from gradcam.models import LoadedModel

__all__ = [
    "NeuronEvidence",
    "TextExplanation",
    "explain_text",
    "rank_neurons",
    "save_neurons",
    "text_explanations",
]


@dataclass(frozen=True)
class NeuronEvidence:
    """One important unit for one class.

    Attributes:
        unit: the channel ``k``.
        alpha: its importance ``alpha_k^c`` (eq. 1).
        name: its concept name, ``None`` when the unit is unnamed (best IoU <= threshold).
        category: the concept's category.
        iou: the unit's best IoU in the dissection (named or not).
        concept: its best concept, named or not.
        activation: (h, w) ``A^k`` for the explained image, at layer resolution.
    """

    unit: int
    alpha: float
    name: str | None
    category: str | None
    iou: float
    concept: str
    activation: Tensor

    def label(self) -> str:
        """``"cup (unit 12, IoU 0.08)"``, or ``"unit 12 (unnamed)"``."""
        if self.name is None:
            return f"unit {self.unit} (unnamed)"
        return f"{self.name} (unit {self.unit}, IoU {self.iou:.2f})"


@dataclass(frozen=True)
class TextExplanation:
    """The most important units for a class and their names.

    Attributes:
        class_id: the explained class.
        class_name: its name.
        score: ``y^c``.
        layer: the layer whose units are ranked.
        positive: the units with the highest positive ``alpha_k^c``, most important first.
        negative: the units with the most negative ``alpha_k^c``, most negative first.

    Examples:
        >>> from gradcam import load_model
        >>> from gradcam.dissect import dissect, generated_concepts
        >>> from gradcam.synthetic import make_scene
        >>> shapes = load_model("shapes")
        >>> names = dissect(shapes, generated_concepts(50, size=64))
        >>> text = explain_text(shapes, make_scene(0, shapes=["ring"]).image, names)
        >>> text.class_name, [u.unit for u in text.positive], text.positive[0].label()
        ('ring', [75, 53, 32, 14, 20], 'ring (unit 75, IoU 0.06)')
    """

    class_id: int
    class_name: str
    score: float
    layer: str
    positive: tuple[NeuronEvidence, ...]
    negative: tuple[NeuronEvidence, ...]

    def sentence(self, *, unnamed: bool = False) -> str:
        """The paper's Fig. 9 form: ``class: positive: names...; negative: names...``.

        As in the paper, unnamed units are left out (Fig. 9f), unless ``unnamed``.
        """

        def part(units: tuple[NeuronEvidence, ...]) -> str:
            shown = [u.label() for u in units if unnamed or u.name is not None]
            return ", ".join(shown) or "(no named unit)"

        return (
            f"{self.class_name or self.class_id}: positive: {part(self.positive)}; "
            f"negative: {part(self.negative)}"
        )

    def __str__(self) -> str:
        return self.sentence()

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (without the activation maps)."""

        def unit(u: NeuronEvidence) -> dict[str, Any]:
            return {
                "unit": u.unit,
                "alpha": u.alpha,
                "name": u.name,
                "category": u.category,
                "iou": round(u.iou, 5),
                "concept": u.concept,
            }

        return {
            "class": self.class_id,
            "name": self.class_name,
            "score": round(self.score, 5),
            "layer": self.layer,
            "sentence": self.sentence(),
            "positive": [unit(u) for u in self.positive],
            "negative": [unit(u) for u in self.negative],
        }


def rank_neurons(
    alpha: Tensor,
    activations: Tensor,
    names: Dissection,
    *,
    top: int = 5,
    named_only: bool = False,
) -> tuple[tuple[NeuronEvidence, ...], tuple[NeuronEvidence, ...]]:
    """The ``top`` units with the highest positive and the most negative ``alpha``.

    Args:
        alpha: (C,) ``alpha_k^c`` of one class.
        activations: (C, h, w) the layer's maps for the image.
        names: the layer's dissection.
        top: how many of each (the paper: 5).
        named_only: rank only the named units (the paper ranks them all and shows the named).

    Examples:
        >>> from gradcam import GradCAM, load_model
        >>> from gradcam.dissect import dissect, generated_concepts
        >>> from gradcam.synthetic import make_scene
        >>> shapes = load_model("shapes")
        >>> names = dissect(shapes, generated_concepts(50, size=64))
        >>> layer = resolve_layer(shapes.module, names.layer)
        >>> x = shapes.preprocess(make_scene(0, shapes=["ring"]).image)
        >>> alpha = GradCAM(shapes.module, layer)(x, [5]).weights[0, 0]  # class 5: ring
        >>> maps = layer_activations(shapes.module, layer, x)[0]
        >>> positive, negative = rank_neurons(alpha, maps, names, top=3)
        >>> [u.label() for u in positive]
        ['ring (unit 75, IoU 0.06)', 'ring (unit 53, IoU 0.21)', 'ring (unit 32, IoU 0.21)']
        >>> [u.label() for u in negative]
        ['unit 28 (unnamed)', 'square (unit 7, IoU 0.07)', 'triangle (unit 54, IoU 0.09)']
    """
    names.check(names.layer, int(alpha.shape[0]))
    alpha = alpha.detach().float().cpu()
    keep = torch.tensor([not named_only or u.name is not None for u in names.units])

    def evidence(k: int) -> NeuronEvidence:
        unit = names.units[k]
        return NeuronEvidence(
            k,
            float(alpha[k]),
            unit.name,
            unit.category,
            unit.iou,
            unit.concept,
            activations[k].detach().float().cpu(),
        )

    order = torch.argsort(alpha, descending=True, stable=True).tolist()
    positive = [k for k in order if alpha[k] > 0 and keep[k]][:top]
    negative = [k for k in reversed(order) if alpha[k] < 0 and keep[k]][:top]
    return tuple(evidence(k) for k in positive), tuple(evidence(k) for k in negative)


def explain_text(
    loaded: LoadedModel,
    image: Image.Image,
    names: Dissection,
    *,
    class_id: int | None = None,
    top: int = 5,
    named_only: bool = False,
) -> TextExplanation:
    """Explain a photo's top-1 class (or ``class_id``) in words, by its most important units.

    One Grad-CAM forward and backward pass for ``alpha`` (on the dissected layer) and one
    no-grad forward pass for the maps ``A^k``.

    Raises:
        DissectionError: ``names`` are for another model, layer or number of units.

    Examples:
        >>> from gradcam import load_model
        >>> from gradcam.dissect import dissect, generated_concepts
        >>> from gradcam.synthetic import make_scene
        >>> shapes = load_model("shapes")
        >>> names = dissect(shapes, generated_concepts(50, size=64))
        >>> print(explain_text(shapes, make_scene(0, shapes=["ring"]).image, names))
        ring: positive: ring (unit 75, IoU 0.06), ring (unit 53, IoU 0.21), ...; negative: ...
    """
    from gradcam.methods import GradCAM
    from gradcam.targets import TopK

    module = loaded.module
    layer = resolve_layer(module, names.layer)
    x = loaded.preprocess(image)
    maps = layer_activations(module, layer, x)[0]
    names.check(layer.name, int(maps.shape[0]), loaded.name)
    result = GradCAM(module, layer)(x, TopK(1) if class_id is None else [class_id])
    assert result.weights is not None
    chosen = int(result.classes[0, 0])
    positive, negative = rank_neurons(
        result.weights[0, 0], maps, names, top=top, named_only=named_only
    )
    return TextExplanation(
        chosen,
        loaded.class_names[chosen],
        float(result.scores[0, 0]),
        layer.name,
        positive,
        negative,
    )


def text_explanations(
    loaded: LoadedModel, x: Tensor, results: Any, names: Dissection, *, top: int = 5
) -> list[TextExplanation]:
    """Text explanations of every class of a Grad-CAM result already computed on ``x``.

    ``results`` is a Grad-CAM :class:`~gradcam.methods.CAMResult` on ``names.layer`` (its
    ``weights`` are ``alpha``); one more no-grad forward pass gives the maps ``A^k``.

    Raises:
        DissectionError: the names are for another model, layer or number of units.
    """
    layer = resolve_layer(loaded.module, results.layer)
    maps = layer_activations(loaded.module, layer, x)[0]
    names.check(layer.name, int(maps.shape[0]), loaded.name)
    found = []
    for k in range(results.classes.shape[1]):
        class_id = int(results.classes[0, k])
        positive, negative = rank_neurons(results.weights[0, k], maps, names, top=top)
        label = loaded.class_names[class_id] if class_id >= 0 else ""
        score = float(results.scores[0, k])
        found.append(TextExplanation(class_id, label, score, layer.name, positive, negative))
    return found


def save_neurons(
    texts: list[TextExplanation], image: Image.Image, out_dir: str | os.PathLike[str]
) -> list[dict[str, Any]]:
    """Write each named unit's activation map over the photo, and add the text explanations
    to ``summary.json`` in ``out_dir`` (under ``"neurons"``), when there is one.

    Pictures: ``neuron_<rank>_<positive|negative><i>_unit<k>_<name>.png``, ``rank`` the
    class's rank among the explained classes.

    Returns:
        What was added to the summary: per class, :meth:`TextExplanation.to_dict` with the
        picture of each named unit.
    """
    from gradcam.viz import overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, text in enumerate(texts, start=1):
        entry = text.to_dict()
        for side in ("positive", "negative"):
            for i, (unit, item) in enumerate(
                zip(getattr(text, side), entry[side], strict=True), start=1
            ):
                if unit.name is None:
                    item["overlay"] = None
                    continue
                slug = "".join(ch if ch.isalnum() else "-" for ch in unit.name.lower())[:30]
                filename = f"neuron_{rank}_{side}{i}_unit{unit.unit}_{slug}.png"
                overlay(image, unit.activation).save(out / filename)
                item["overlay"] = filename
        written.append(entry)
    summary_path = out / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        summary["neurons"] = written
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return written
