"""Explaining one photo end to end, and writing what the CLI shows: the plain functions under
``gradcam explain``.

:func:`explain_image` runs one forward and one backward pass and returns the maps with their
peaks and localization boxes in the photo's own pixels; :func:`save_explanation` writes the
overlays, ``summary.json`` and optionally ``maps.npz``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from gradcam.engine import layer_gradients
from gradcam.maps import bounding_box, peak, upsample
from gradcam.methods.gradcam import CAMResult, GradCAM, cam_result
from gradcam.models import LoadedModel
from gradcam.targets import TopK

__all__ = ["Explanation", "MapEntry", "explain_image", "save_explanation"]


@dataclass(frozen=True)
class MapEntry:
    """One explained class: where its map peaks and its box, in original-photo pixels."""

    kind: str
    rank: int
    class_id: int
    class_name: str
    score: float
    peak: tuple[int, int]
    box: tuple[int, int, int, int]
    raw: Tensor


@dataclass(frozen=True)
class Explanation:
    """Everything :func:`explain_image` found for one photo."""

    image_size: tuple[int, int]
    input: Tensor
    layer: str
    predictions: list[dict[str, Any]]
    entries: list[MapEntry]
    results: dict[str, CAMResult]


def _entries(
    kind: str, result: CAMResult, loaded: LoadedModel, size: tuple[int, int], threshold: float
) -> list[MapEntry]:
    width, height = size
    entries = []
    for k in range(result.raw.shape[1]):
        full = upsample(result.raw[0, k], (height, width))
        class_id = int(result.classes[0, k])
        entries.append(
            MapEntry(
                kind=kind,
                rank=k + 1,
                class_id=class_id,
                class_name=loaded.class_names[class_id] if class_id >= 0 else "",
                score=float(result.scores[0, k]),
                peak=peak(full),
                box=bounding_box(full, threshold),
                raw=result.raw[0, k],
            )
        )
    return entries


def explain_image(
    loaded: LoadedModel,
    image: Image.Image,
    *,
    classes: Sequence[int] | None = None,
    top_k: int = 1,
    counterfactual: bool = False,
    layer: str | None = None,
    threshold: float = 0.15,
) -> Explanation:
    """Grad-CAM (and optionally its counterfactual) of one photo, from one forward pass.

    Args:
        loaded: a model from :func:`gradcam.load_model`.
        image: an RGB photo, e.g. from :func:`gradcam.load_image`.
        classes: class ids to explain; ``None`` explains the ``top_k`` best classes.
        counterfactual: also compute counterfactual maps (section 3.3) from the same gradients.
        layer: dotted layer name; ``None`` uses the model's default layer.
        threshold: fraction of a map's maximum that bounds its localization box (section 4.1).

    Example:
        >>> loaded = load_model()
        >>> result = explain_image(loaded, load_image("cat.jpg"), top_k=2)
        >>> result.entries[0].class_name, result.entries[0].box
    """
    x = loaded.preprocess(image)
    module, name = GradCAM(loaded.module, layer or loaded.default_layer).layer_for(x)
    targets = list(classes) if classes else TopK(top_k)
    grads = layer_gradients(loaded.module, module, name, x, targets)
    size = (image.width, image.height)
    input_size = (x.shape[-2], x.shape[-1])
    results = {"gradcam": cam_result(grads, input_size, name)}
    if counterfactual:
        results["counterfactual"] = cam_result(grads, input_size, name, counterfactual=True)
    entries = [
        entry
        for kind, result in results.items()
        for entry in _entries(kind, result, loaded, size, threshold)
    ]
    predictions = []
    if grads.logits is not None:
        probs = grads.logits[0].float().softmax(dim=0)
        top = grads.logits[0].float().topk(min(5, grads.logits.shape[1]))
        for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            predictions.append(
                {
                    "class": index,
                    "name": loaded.class_names[index],
                    "score": round(score, 5),
                    "probability": round(float(probs[index]), 5),
                }
            )
    return Explanation(size, x, name, predictions, entries, results)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "target"


def save_explanation(
    explanation: Explanation,
    image: Image.Image,
    out_dir: str | Path,
    *,
    source: str = "",
    model: str = "",
    save_maps: bool = False,
) -> dict[str, Any]:
    """Write one overlay PNG per map, ``summary.json`` and optionally ``maps.npz`` to ``out_dir``.

    ``maps.npz`` holds ``input`` (the preprocessed tensor), ``raw`` (layer-resolution maps),
    ``maps`` (upsampled to the input, in [0, 1]) and ``classes``, plus ``counterfactual_raw``
    and ``counterfactual_maps`` when counterfactual maps were computed.

    Returns:
        The summary written to ``summary.json``.
    """
    from gradcam.viz import overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    maps = []
    for entry in explanation.entries:
        label = entry.class_name or f"target-{entry.rank}"
        filename = f"{entry.kind}_{entry.rank}_{_slug(label)}.png"
        overlay(image, entry.raw, box=entry.box).save(out / filename)
        maps.append(
            {
                "kind": entry.kind,
                "rank": entry.rank,
                "class": entry.class_id,
                "name": entry.class_name,
                "score": round(entry.score, 5),
                "peak": list(entry.peak),
                "box": list(entry.box),
                "overlay": filename,
            }
        )
    summary = {
        "image": source,
        "size": list(explanation.image_size),
        "model": model,
        "layer": explanation.layer,
        "predictions": explanation.predictions,
        "maps": maps,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if save_maps:
        arrays: dict[str, Any] = {"input": explanation.input.numpy()}
        for kind, result in explanation.results.items():
            prefix = "" if kind == "gradcam" else f"{kind}_"
            arrays[f"{prefix}raw"] = result.raw[0].numpy()
            arrays[f"{prefix}maps"] = result.maps[0].numpy()
        arrays["classes"] = explanation.results["gradcam"].classes[0].numpy()
        np.savez_compressed(out / "maps.npz", **arrays)
    return summary
