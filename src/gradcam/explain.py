"""Explaining one photo end to end, and writing what the CLI shows: the plain functions under
``gradcam explain``.

:func:`explain_image` computes every requested method with as few passes as the math allows
(:func:`gradcam.methods.planner.explain_built`, given the methods built once from their
entries and the input checked once): all gradient methods share one forward pass, with
one backward pass to the layer and one to the input per rectifier rule; the others (CAM,
occlusion, perturbation methods) add their own passes. At most :data:`MAX_CLASSES` classes are
explained per photo, :data:`CLASS_CHUNK` per pass, so memory stays bounded however many are
asked for (:func:`check_classes`).
:func:`save_explanation` writes the pictures, ``summary.json`` and optionally ``maps.npz``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gradcam.engine import check_input, eval_mode
from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike, resolve_layer
from gradcam.maps import bounding_box, peak, upsample
from gradcam.methods import Result, method_spec
from gradcam.methods.planner import explain_built
from gradcam.methods.registry import DEFAULT_METHOD, GRAD_CAM, MethodSpec, resolve_methods
from gradcam.models import LoadedModel
from gradcam.outputs import output_folder
from gradcam.paths import slug
from gradcam.targets import TopK, as_logits

__all__ = [
    "CLASS_CHUNK",
    "FIGURE_METHODS",
    "MAX_CLASSES",
    "Explanation",
    "MapEntry",
    "check_classes",
    "explain_image",
    "explain_input",
    "map_arrays",
    "npz_key",
    "save_explanation",
    "top_predictions",
]

#: The paper's Fig. 1: the photo, then these methods' pictures side by side.
FIGURE_METHODS = ["guided-backprop", GRAD_CAM, "guided-gradcam"]

#: The most classes explained for one photo (``--top-k``, or ``--class`` repeated): each one
#: is a picture per method on disk, and a pixel-space method holds a map the size of the input
#: per class.
MAX_CLASSES = 100

#: Classes explained per pass: the backward passes are batched over the classes, so their
#: memory grows with the number of classes in one pass.
CLASS_CHUNK = 16


@dataclass(frozen=True)
class MapEntry:
    """One map of one method for one explained class.

    ``map`` is the layer-resolution (or, for occlusion, input-resolution) heatmap (h, w), or the
    (C, H, W) pixel-space map; ``peak`` and ``box`` are in original-photo pixels, for heatmaps.
    ``kind`` is the method's (:attr:`gradcam.methods.MethodSpec.kind`), carried so that
    drawing it needs no registry lookup.
    """

    method: str
    rank: int
    class_id: int
    class_name: str
    score: float
    map: Tensor
    peak: tuple[int, int] | None
    box: tuple[int, int, int, int] | None
    kind: str = "heatmap"


@dataclass(frozen=True)
class Explanation:
    """Everything :func:`explain_image` found for one photo."""

    image_size: tuple[int, int]
    input: Tensor
    layer: str
    predictions: list[dict[str, Any]]
    entries: list[MapEntry]
    results: dict[str, Result]


def _heat_entry(
    name: str, k: int, result: Result, heat: Tensor, label: str, size: tuple[int, int], cut: float
) -> MapEntry:
    width, height = size
    full = upsample(heat, (height, width)).clamp(min=0)
    return MapEntry(
        method=name,
        rank=k + 1,
        class_id=int(result.classes[0, k]),
        class_name=label,
        score=float(result.scores[0, k]),
        map=heat,
        peak=peak(full),
        box=bounding_box(full, cut),
    )


def check_classes(loaded: LoadedModel, classes: Sequence[int] | None, top_k: int) -> None:
    """Refuse a request for more classes than the model has or than :data:`MAX_CLASSES`.

    Raises:
        GradCAMError: ``top_k`` below 1 or above the model's classes, or more than
            :data:`MAX_CLASSES` classes in all, with a message naming the limit.

    Examples:
        >>> from gradcam import load_model
        >>> check_classes(load_model("shapes"), None, 100000)
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: top-k 100000 is more than the model's 8 classes
    """
    count = len(loaded.class_names)
    if not classes:
        if top_k < 1:
            raise GradCAMError(f"top-k must be at least 1, got {top_k}")
        if count and top_k > count:
            raise GradCAMError(f"top-k {top_k} is more than the model's {count} classes")
    wanted = len(classes) if classes else top_k
    if wanted > MAX_CLASSES:
        raise GradCAMError(
            f"{wanted} classes asked for: at most {MAX_CLASSES} are explained per photo "
            "(each is a picture per method)"
        )


def _concat(parts: Sequence[Any]) -> Any:
    """One result from results of the same method for consecutive chunks of classes: every
    tensor field is (B, K, ...) and is joined along K, except the shared ``logits``."""
    first = parts[0]
    if len(parts) == 1:
        return first
    joined: dict[str, Any] = {}
    for item in fields(first):
        values = [getattr(part, item.name) for part in parts]
        if item.name == "logits" or values[0] is None:
            continue
        if isinstance(values[0], Tensor):
            joined[item.name] = torch.cat(values, dim=1)
        elif isinstance(values[0], Result):
            joined[item.name] = _concat(values)
    return replace(first, **joined)


def _top_classes(loaded: LoadedModel, x: Tensor, top_k: int) -> list[int]:
    with torch.no_grad(), eval_mode(loaded.module):
        logits = as_logits(loaded.module(x))
    return [int(c) for c in logits[0].topk(min(top_k, logits.shape[1])).indices]


def explain_input(
    loaded: LoadedModel,
    x: Tensor,
    *,
    methods: Sequence[str | MethodSpec] = (DEFAULT_METHOD,),
    classes: Sequence[int] | None = None,
    top_k: int = 1,
    layer: LayerLike | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Result]:
    """Run ``methods`` on the preprocessed input ``x`` (one photo, clip, volume or signal) for
    ``classes`` or the ``top_k`` best, :data:`CLASS_CHUNK` classes per pass (one more forward
    pass finds the best first when more are asked for); what :func:`explain_image` computes,
    for any input rank.

    Examples:
        >>> found = explain_input(shapes, x, methods=["gradcam", "cam"], top_k=2)
        >>> [(name, tuple(result.maps.shape)) for name, result in found.items()]
        [('gradcam', (1, 2, 128, 128)), ('cam', (1, 2, 128, 128))]
    """
    check_classes(loaded, classes, top_k)
    specs = resolve_methods(methods)
    module = loaded.module
    # The input is checked once, here; the built methods are handed to the planner.
    x = check_input(x, module)
    layer_ref = resolve_layer(module, loaded.default_layer if layer is None else layer)
    given = options or {}
    built = {s.name: s.create(module, layer_ref, **given.get(s.name, {})) for s in specs}
    ids = list(classes) if classes else None
    if ids is None and top_k > CLASS_CHUNK:
        ids = _top_classes(loaded, x, top_k)
    if ids is None:
        return explain_built(built, module, x, TopK(top_k), checked=True)
    parts = [
        explain_built(built, module, x, ids[i : i + CLASS_CHUNK], checked=True)
        for i in range(0, len(ids), CLASS_CHUNK)
    ]
    return {name: _concat([part[name] for part in parts]) for name in parts[0]}


def top_predictions(
    loaded: LoadedModel, results: Mapping[str, Result], count: int = 5
) -> list[dict[str, Any]]:
    """The model's ``count`` best classes for the first input, from the logits a result kept:
    class, name, logit (``score``) and softmax ``probability``, rounded to 5 digits; empty
    when no result kept logits."""
    predictions: list[dict[str, Any]] = []
    logits_of = next((r.logits for r in results.values() if r.logits is not None), None)
    if logits_of is None:
        return predictions
    logits = logits_of[0].float()
    probs = logits.softmax(dim=0)
    top = logits.topk(min(count, logits.shape[0]))
    for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        predictions.append(
            {
                "class": index,
                "name": loaded.class_names[index],
                "score": round(score, 5),
                "probability": round(float(probs[index]), 5),
            }
        )
    return predictions


def explain_image(
    loaded: LoadedModel,
    image: Image.Image,
    *,
    methods: Sequence[str | MethodSpec] = (DEFAULT_METHOD,),
    classes: Sequence[int] | None = None,
    top_k: int = 1,
    layer: str | None = None,
    threshold: float = 0.15,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Explanation:
    """Explain one photo with several methods, sharing passes where the math allows.

    Args:
        loaded: a model from :func:`gradcam.load_model`.
        image: an RGB photo, e.g. from :func:`gradcam.load_image`.
        methods: names from :func:`gradcam.methods`, or their entries resolved once by the
            caller (:func:`gradcam.methods.registry.resolve_methods`): then no lookup is made.
        classes: class ids to explain; ``None`` explains the ``top_k`` best classes.
        top_k: how many of the best classes to explain, at most the model's classes and
            :data:`MAX_CLASSES`; more than :data:`CLASS_CHUNK` are explained that many per
            pass (one more forward pass finds them first).
        layer: dotted layer name; ``None`` uses the model's default layer.
        threshold: fraction of a map's maximum that bounds its localization box (section 4.1).
        options: per method name, its options (see :func:`gradcam.methods.create_method`),
            e.g. ``{"occlusion": {"window": 21}}``.

    Raises:
        GradCAMError: more classes than :func:`check_classes` allows, an unknown method or
            layer.

    Examples:
        >>> scene = gradcam.synthetic.make_scene(0, shapes=["star"])  # a synthetic photo
        >>> loaded = gradcam.load_model("shapes")                    # its small CNN
        >>> found = explain_image(loaded, scene.image, methods=["gradcam", "cam"], top_k=2)
        >>> [(e.method, e.class_name) for e in found.entries]
        [('gradcam', 'star'), ('gradcam', 'cross'), ('cam', 'star'), ('cam', 'cross')]
        >>> found.entries[0].box  # (x0, y0, x1, y1) in photo pixels, around the star
        (62, 0, 113, 49)
    """
    check_classes(loaded, classes, top_k)
    specs = {spec.name: spec for spec in resolve_methods(methods)}
    x = loaded.preprocess(image)
    layer_name = layer or loaded.default_layer  # resolved once, by explain_input
    results = explain_input(
        loaded,
        x,
        methods=list(specs.values()),
        classes=classes,
        top_k=top_k,
        layer=layer_name,
        options=options,
    )
    entries = []
    for name, result in results.items():
        for k in range(result.classes.shape[1]):
            class_id = int(result.classes[0, k])
            label = loaded.class_names[class_id] if class_id >= 0 else ""
            if specs[name].kind == "pixel":
                entries.append(
                    MapEntry(
                        name, k + 1, class_id, label, float(result.scores[0, k]),
                        result.maps[0, k], None, None, "pixel",
                    )
                )  # fmt: skip
            else:
                heat = getattr(result, "raw", result.maps)[0, k]
                size = (image.width, image.height)
                entries.append(_heat_entry(name, k, result, heat, label, size, threshold))
    predictions = top_predictions(loaded, results)
    return Explanation((image.width, image.height), x, layer_name, predictions, entries, results)


def npz_key(method: str, field: str) -> str:
    """The key of a method's array in a saved ``.npz``: Grad-CAM's without a prefix.

    Examples:
        >>> npz_key("gradcam", "raw"), npz_key("guided-backprop", "maps")
        ('raw', 'guided_backprop_maps')
    """
    prefix = "" if method == GRAD_CAM else method.replace("-", "_").replace("+", "p") + "_"
    return prefix + field


def map_arrays(results: Mapping[str, Result], target: int | None = None) -> dict[str, np.ndarray]:
    """The maps of the first image of each result as numpy arrays, under :func:`npz_key`.

    Every method gives its ``maps``; heatmap methods also their ``raw`` maps. With ``target``
    only that target's maps are kept, else all K of them.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> found = gradcam.methods.explain_methods(
        ...     ["gradcam", "guided-backprop"], net, torch.rand(1, 3, 6, 6)
        ... )
        >>> {k: v.shape for k, v in map_arrays(found, target=0).items()}
        {'maps': (6, 6), 'raw': (4, 4), 'guided_backprop_maps': (3, 6, 6)}
    """
    pick = slice(None) if target is None else target
    arrays: dict[str, np.ndarray] = {}
    for name, result in results.items():
        arrays[npz_key(name, "maps")] = result.maps[0, pick].numpy()
        raw = getattr(result, "raw", None)
        if raw is not None:
            arrays[npz_key(name, "raw")] = raw[0, pick].numpy()
    return arrays


def _picture(entry: MapEntry, image: Image.Image) -> Image.Image:
    from gradcam.viz import gradient_image, overlay

    if entry.kind == "pixel":
        return gradient_image(entry.map, image.size)
    return overlay(image, entry.map, box=entry.box)


def save_explanation(
    explanation: Explanation,
    image: Image.Image,
    out_dir: str | Path,
    *,
    source: str = "",
    model: str = "",
    save_maps: bool = False,
    figure: bool = False,
) -> dict[str, Any]:
    """Write one picture per map, ``summary.json``, and optionally ``maps.npz`` and figures.

    Heatmaps are written as overlays on the photo, with their localization box; pixel-space
    maps as gradient images (:func:`gradcam.viz.gradient_image`), both at the photo's size.
    With ``figure``, one ``figure_<rank>_<class>.png`` per class puts the photo, Guided
    Backprop, Grad-CAM and Guided Grad-CAM side by side (the paper's Fig. 1); those methods
    must be in the explanation.

    ``maps.npz`` holds ``input`` (the preprocessed tensor), ``classes``, and for each method its
    ``maps`` (heatmaps upsampled to the input and in [0, 1], or pixel-space maps) and, for
    heatmap methods, ``raw`` maps, under the keys of :func:`npz_key` (Grad-CAM's without a
    prefix, the others prefixed with the method name: ``counterfactual_raw``,
    ``guided_backprop_maps``, ``gradcampp_raw`` for ``gradcam++``, ...).

    Returns:
        The summary written to ``summary.json``.
    """
    from gradcam.viz import side_by_side

    out = output_folder(out_dir)
    pictures: dict[tuple[str, int], Image.Image] = {}
    maps = []
    for entry in explanation.entries:
        label = entry.class_name or f"target-{entry.rank}"
        filename = f"{entry.method}_{entry.rank}_{slug(label, fallback='target')}.png"
        picture = _picture(entry, image)
        pictures[(entry.method, entry.rank)] = picture
        picture.save(out / filename)
        maps.append(
            {
                "kind": entry.method,
                "rank": entry.rank,
                "class": entry.class_id,
                "name": entry.class_name,
                "score": round(entry.score, 5),
                "peak": None if entry.peak is None else list(entry.peak),
                "box": None if entry.box is None else list(entry.box),
                "overlay": filename,
            }
        )
    figures = []
    if figure:
        missing = [m for m in FIGURE_METHODS if m not in explanation.results]
        if missing:
            raise GradCAMError(f"a figure needs the methods {', '.join(missing)}")
        for entry in (e for e in explanation.entries if e.method == GRAD_CAM):
            label = entry.class_name or f"target-{entry.rank}"
            panels = [("Original", image)] + [
                (f"{method_spec(m).title}: {label}", pictures[(m, entry.rank)])
                for m in FIGURE_METHODS
            ]
            filename = f"figure_{entry.rank}_{slug(label, fallback='target')}.png"
            side_by_side(panels).save(out / filename)
            figures.append(filename)
    summary = {
        "image": source,
        "size": list(explanation.image_size),
        "model": model,
        "layer": explanation.layer,
        "predictions": explanation.predictions,
        "maps": maps,
        "figures": figures,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if save_maps:
        arrays: dict[str, Any] = {"input": explanation.input.numpy()}
        arrays |= map_arrays(explanation.results)
        first = next(iter(explanation.results.values()))
        arrays["classes"] = first.classes[0].numpy()
        np.savez_compressed(out / "maps.npz", **arrays)
    return summary
