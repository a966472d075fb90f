"""Creating the two human studies of section 5 as study files.

* :func:`create_class_discrimination` (section 5.1): photos with exactly two annotated object
  categories; for each photo, one of its two categories is picked (seeded), and for each
  method the map of that category becomes one item asking "Which of the two object
  categories is depicted?", with the two categories as answers (in a seeded order).
* :func:`create_trust` (section 5.2): two models; the photos where both predict the same
  correct class; for each such photo and method, one item shows both models' maps side by
  side, model A on the left or the right with equal probability (seeded), and asks for the
  5-point scale of :data:`~gradcam.study.store.TRUST_SCALE`.

Every picture is rendered here, once, and stored in the study file with its SHA-256, so the
participants, the report and a re-run all see the same bytes. The photos come from
:func:`study_images`: generated two-object scenes (``"synthetic"``), the shipped two-object
photo (``"photo"``), or any dataset layout ``gradcam evaluate`` reads.
"""

from __future__ import annotations

import functools
import json
import os
import random
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gradcam.errors import GradCAMError
from gradcam.evaluate.metrics import Box
from gradcam.explain import explain_image
from gradcam.maps import upsample
from gradcam.methods import method_spec
from gradcam.models import LoadedModel, load_model
from gradcam.study.store import (
    TRUST_SCALE,
    NewItem,
    StudyError,
    StudyStore,
    new_study_path,
    png_bytes,
    write_study,
)

__all__ = [
    "CLASS_QUESTION",
    "TRUST_QUESTION",
    "Category",
    "StudyImage",
    "check_create",
    "create_class_discrimination",
    "create_trust",
    "load_study_model",
    "study_images",
]

CLASS_QUESTION = "Which of the two object categories is depicted?"
"""Section 5.1's question, word for word."""

TRUST_QUESTION = (
    "Both models predicted the same category. From the two explanations, how reliable is the "
    "left model compared to the right one?"
)
"""Section 5.2's question, as the participant reads it."""

# Pictures are stored at most this many pixels on their long side: enough to judge a map.
MAX_SIDE = 512
_SHIPPED = Path(__file__).parents[1] / "data"


@dataclass(frozen=True)
class Category:
    """An annotated object category of a photo.

    Attributes:
        name: the answer shown to participants.
        class_ids: the model's classes that name it (the best-scoring one is explained).
        boxes: its annotated boxes in photo pixels, ``(x0, y0, x1, y1)`` inclusive.
    """

    name: str
    class_ids: tuple[int, ...]
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class StudyImage:
    """A photo that can go into a study: its name, how to read it, and its categories."""

    name: str
    load: Callable[[], Image.Image]
    categories: tuple[Category, ...]


def load_study_model(spec: str) -> LoadedModel:
    """Load ``NAME`` or ``NAME@WEIGHTS`` (any :func:`gradcam.load_model` name).

    A model with random weights is refused: its maps would mean nothing to a participant.

    Examples:
        >>> load_study_model("shapes").name
        'shapes'
    """
    name, _, weights = spec.partition("@")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = load_model(name, weights or None)
    if not loaded.pretrained:
        raise StudyError(f"model {spec!r} has random weights: give a weights file as {name}@FILE")
    return loaded


def _constant(image: Image.Image) -> Callable[[], Image.Image]:
    return lambda: image


def _synthetic(count: int, seed: int, objects: int) -> list[StudyImage]:
    from gradcam.synthetic.scenes import SHAPES, make_scene

    images = []
    for index in range(count):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), objects, replace=False)]
        scene = make_scene(rng, shapes=shapes, min_size=0.3, max_size=0.45)
        categories = tuple(
            Category(o.shape, (SHAPES.index(o.shape),), (o.box,)) for o in scene.objects
        )
        images.append(StudyImage(f"scene-{index:04d}", _constant(scene.image), categories))
    return images


def _shipped_photo() -> StudyImage:
    from gradcam.images import load_image

    notes = json.loads((_SHIPPED / "photos_annotations.json").read_text())
    cat, coffee = notes["chelsea.png"], notes["coffee.png"]
    # cat_and_coffee.jpg is chelsea.png (451 x 300) and, right of it, coffee.png (600 x 400)
    # scaled to the cat's height (data/README.md): the boxes follow the same moves.
    scale, shift = 300 / 400, 451
    x0, y0, x1, y1 = coffee["box"]
    coffee_box = (
        round(x0 * scale) + shift,
        round(y0 * scale),
        round(x1 * scale) + shift,
        round(y1 * scale),
    )
    categories = (
        Category("cat", tuple(cat["classes"]), (tuple(cat["box"]),)),  # type: ignore[arg-type]
        Category("coffee", tuple(coffee["classes"]), (coffee_box,)),
    )
    path = _SHIPPED / "cat_and_coffee.jpg"
    return StudyImage(path.name, lambda: load_image(path), categories)


def _read_dataset(data: str, **readers: Any) -> Any:
    """The annotated dataset at ``data``, detected as ``gradcam evaluate --data`` does."""
    from gradcam.evaluate.datasets import open_dataset

    return open_dataset(
        data,
        labels=readers.get("labels"),
        boxes=readers.get("boxes"),
        annotations=readers.get("annotations"),
        split=readers.get("split") or "val",
        annotated=True,
    )


def _dataset_images(data: str, model: LoadedModel, **readers: Any) -> list[StudyImage]:
    from gradcam.images import load_image

    dataset = _read_dataset(data, **readers)
    names = dataset.class_names
    model_ids: dict[int, int] = {}
    images = []
    for sample in dataset.samples:
        boxes: dict[int, list[Box]] = {}
        for annotation in sample.annotations:
            if annotation.box is not None:
                boxes.setdefault(annotation.class_id, []).append(annotation.box)
        # Classes annotated with the very same boxes name one object (the shipped photos
        # list synonyms such as "espresso" and "cup"): they make one category.
        grouped: dict[tuple[Box, ...] | int, list[int]] = {}
        for class_id in sample.labels:
            if class_id not in model_ids:
                try:
                    # Datasets without class names hold the model's own class ids.
                    model_ids[class_id] = model.class_index(names[class_id] if names else class_id)
                except GradCAMError as exc:
                    raise StudyError(
                        f"{data}: class {names[class_id] if names else class_id!r} is not a "
                        f"class of model {model.name!r} ({exc})"
                    ) from None
            key = tuple(sorted(boxes.get(class_id, ()))) or class_id
            grouped.setdefault(key, []).append(model_ids[class_id])
        categories = [
            Category(model.class_names[ids[0]], tuple(ids), key if isinstance(key, tuple) else ())
            for key, ids in grouped.items()
        ]
        images.append(
            StudyImage(
                sample.path.name, functools.partial(load_image, sample.path), tuple(categories)
            )
        )
    return images


def study_images(
    data: str,
    model: LoadedModel,
    *,
    count: int = 12,
    seed: int = 0,
    objects: int = 2,
    **readers: Any,
) -> list[StudyImage]:
    """The photos a study can be made of, with their categories in ``model``'s classes.

    Args:
        data: ``"synthetic"`` (``count`` generated scenes of ``objects`` distinct shapes, for
            the shipped ``"shapes"`` model), ``"photo"`` (the shipped cat-and-coffee photo,
            for ImageNet models), ``"photos"`` (the annotated real photos of scikit-image and
            matplotlib) or a dataset folder (VOC, COCO with ``annotations=``, ImageNet-style
            with ``labels=`` and ``boxes=``).
        model: the model whose classes the categories are mapped to (by name).
        count: synthetic scenes to generate.
        seed: synthetic scenes' seed.
        objects: objects per synthetic scene.
        readers: ``annotations``, ``labels``, ``boxes``, ``split`` for dataset folders.

    Raises:
        StudyError: unreadable data, or a category the model does not know.

    Examples:
        >>> [c.name for c in study_images("photo", load_model())[0].categories]
        ['cat', 'coffee']
    """
    if data == "synthetic":
        if count < 1:
            raise StudyError(f"the number of scenes must be at least 1, got {count}")
        return _synthetic(count, seed, objects)
    if data == "photo":
        if len(model.class_names) != 1000:
            raise StudyError(
                f"the shipped photo's categories are ImageNet classes; model {model.name!r} "
                f"has {len(model.class_names)} classes"
            )
        return [_shipped_photo()]
    return _dataset_images(data, model, **readers)


def check_create(out: str | os.PathLike[str], *, limit: int | None = None) -> Path:
    """The checks of creating a study that need neither a model nor a photo, run before any
    work (``gradcam study create`` runs them before it loads anything): ``out`` can be
    written as a new study and ``limit``, when given, is at least 1.

    Raises:
        GradCAMError: naming the bad ``out`` (exists, a folder, under a file, in a missing
            or read-only folder) or ``limit``.

    Examples:
        >>> check_create("new.db", limit=0)
        Traceback (most recent call last):
        ...
        gradcam.study.store.StudyError: limit must be at least 1 photo, got 0
    """
    if limit is not None and limit < 1:
        raise StudyError(f"limit must be at least 1 photo, got {limit}")
    return new_study_path(out)


def _check_methods(names: Sequence[str]) -> list[str]:
    if not names:
        raise StudyError("give at least one method")
    for name in names:
        method_spec(name)  # raises GradCAMError naming the known methods
    return list(dict.fromkeys(names))


def _render(
    loaded: LoadedModel, image: Image.Image, methods: Sequence[str], class_ids: Sequence[int]
) -> tuple[int, dict[str, tuple[Image.Image, np.ndarray]]]:
    """The best-scoring class of ``class_ids`` and, per method, its picture and evidence map.

    The evidence map is what a simulated participant looks at: the heatmap upsampled to the
    photo and clamped at zero, or, for pixel-space maps, the gradient's magnitude summed over
    color channels. Both are scaled to the stored picture's size.
    """
    from gradcam.viz import gradient_image, overlay

    found = explain_image(loaded, image, methods=methods, classes=list(class_ids))
    best = max(found.entries, key=lambda e: e.score)
    scale = min(1.0, MAX_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    shown = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    rendered = {}
    for entry in found.entries:
        if entry.class_id != best.class_id:
            continue
        if method_spec(entry.method).kind == "pixel":
            picture = gradient_image(entry.map, size)
            evidence = entry.map.detach().float().abs().sum(dim=0)
        else:
            picture = overlay(shown, entry.map)
            evidence = entry.map.detach().float()
        evidence = upsample(torch.nan_to_num(evidence), (size[1], size[0])).clamp(min=0)
        rendered[entry.method] = (picture, evidence.numpy())
    return best.class_id, rendered


def _scaled(boxes: Sequence[Box], image: Image.Image) -> list[list[int]]:
    scale = min(1.0, MAX_SIDE / max(image.size))
    return [[round(v * scale) for v in box] for box in boxes]


def _progress(images: Sequence[StudyImage], what: str) -> Iterator[StudyImage]:
    import sys

    from tqdm import tqdm

    yield from tqdm(images, desc=what, unit="image", disable=len(images) < 2, file=sys.stderr)


def create_class_discrimination(
    out: str | os.PathLike[str],
    images: Sequence[StudyImage],
    model: LoadedModel,
    methods: Sequence[str],
    *,
    seed: int = 0,
    both_categories: bool = False,
    limit: int | None = None,
    each_image_once: bool = False,
) -> StudyStore:
    """Write a class-discrimination study (section 5.1) to ``out``.

    Only photos with exactly two categories (each with a box) are used. For each of them one
    category is picked with a seeded generator (both with ``both_categories``); each method's
    map of it becomes an item whose answers are the two categories, in a seeded order.

    Args:
        out: the new study file (never overwritten).
        images: from :func:`study_images`.
        model: the model whose maps are shown.
        methods: registry names (:func:`gradcam.methods.methods`).
        seed: seeds every random choice, so the same arguments give the same study.
        both_categories: one item per category and method instead of one category per photo.
        limit: use at most this many photos (at least 1).
        each_image_once: each participant sees one item per photo, the methods rotating
            over photos and participants (see :meth:`StudyStore.order`), so that seeing one
            method's map cannot give away the answer for another's.

    Raises:
        StudyError: no photo with exactly two categories, an unknown method, a limit below
            1, or an ``out`` that exists or cannot be written (:func:`check_create`).

    Examples:
        >>> shapes = load_model("shapes")
        >>> study = create_class_discrimination(
        ...     "cd.db", study_images("synthetic", shapes, count=2), shapes, ["gradcam"])
        >>> [(item.method, len(item.choices)) for item in study.items()]
        [('gradcam', 2), ('gradcam', 2)]
    """
    check_create(out, limit=limit)
    names = _check_methods(methods)
    pairs = [
        im
        for im in images
        if len({c.name for c in im.categories}) == len(im.categories) == 2
        and all(c.boxes for c in im.categories)
    ]
    if not pairs:
        raise StudyError(
            f"none of the {len(images)} images has exactly two annotated categories with boxes"
        )
    if limit is not None:
        pairs = pairs[:limit]
    rng = random.Random(seed)
    items: list[NewItem] = []
    for photo in _progress(pairs, "rendering"):
        image = photo.load()
        chosen = list(photo.categories) if both_categories else [rng.choice(photo.categories)]
        boxes = {c.name: _scaled(c.boxes, image) for c in photo.categories}
        for category in chosen:
            class_id, rendered = _render(model, image, names, category.class_ids)
            for name in names:
                choices = [c.name for c in photo.categories]
                rng.shuffle(choices)
                picture, evidence = rendered[name]
                info = {"boxes": boxes, "class_id": class_id, "model": model.name}
                info["class_name"] = model.class_names[class_id]
                items.append(
                    NewItem(
                        photo.name, name, category.name, choices, None, info,
                        {"map": (png_bytes(picture), evidence)},
                    )
                )  # fmt: skip
    config = {
        "model": model.name,
        "methods": names,
        "images": len(pairs),
        "each_image_once": each_image_once,
    }
    return write_study(
        out, "class-discrimination", items, seed=seed, question=CLASS_QUESTION, config=config
    )


def _prediction(loaded: LoadedModel, image: Image.Image) -> int:
    from gradcam.engine import eval_mode

    # In eval mode (restored after) so that a model left in training mode keeps its
    # BatchNorm statistics.
    with eval_mode(loaded.module), torch.no_grad():
        logits = loaded.module(loaded.preprocess(image))
    return int(logits.reshape(1, -1).argmax())


def create_trust(
    out: str | os.PathLike[str],
    images: Sequence[StudyImage],
    model_a: LoadedModel,
    model_b: LoadedModel,
    methods: Sequence[str],
    *,
    seed: int = 0,
    limit: int | None = None,
    names: Mapping[str, str] | None = None,
    each_image_once: bool = False,
) -> StudyStore:
    """Write a trust study (section 5.2) to ``out``.

    Only photos where both models' top-1 class is the same annotated category are used, so
    the explanations, not the predictions, tell the models apart. Each photo and method makes
    an item with both models' maps of that class side by side; model A is on the left with
    probability 1/2 (seeded). Answers are stored as a signed score for model A.

    Args:
        out: the new study file (never overwritten).
        images: from :func:`study_images` (with ``model_a``'s classes).
        model_a: model A (the score is for it).
        model_b: model B, with the same class names.
        methods: registry names.
        seed: seeds every random choice.
        limit: use at most this many photos (at least 1).
        names: how to call the models in the report (default: their load names).
        each_image_once: each participant sees one item per photo (see
            :func:`create_class_discrimination`).

    Raises:
        StudyError: the models' classes differ, no photo where both are right, an unknown
            method, a limit below 1, or an ``out`` that exists or cannot be written.

    Examples:
        The shapes CNN against a worse copy of it (noise on its weights):

        >>> shapes = load_model("shapes")
        >>> noisy = {k: v + 0.3 * v.std() * torch.randn(v.shape) if v.dim() > 1 else v
        ...          for k, v in shapes.module.state_dict().items()}
        >>> torch.save(noisy, "noisy_shapes.pt")
        >>> worse = load_model("shapes", "noisy_shapes.pt")
        >>> scenes = study_images("synthetic", shapes, count=5, objects=1)
        >>> study = create_trust("trust.db", scenes, shapes, worse, ["gradcam"],
        ...                      names={"A": "shapes", "B": "noisy"})
        >>> study.kind, len(study.items())  # the scenes where both models are right
        ('trust', 5)
    """
    check_create(out, limit=limit)
    method_names = _check_methods(methods)
    if model_a.class_names != model_b.class_names:
        raise StudyError(
            f"models {model_a.name!r} and {model_b.name!r} have different classes; a trust "
            "study needs two models of the same classes"
        )
    labels = dict(names or {"A": model_a.name, "B": model_b.name})
    rng = random.Random(seed)
    items: list[NewItem] = []
    used = 0
    for photo in _progress(images, "predicting"):
        if limit is not None and used >= limit:
            break
        image = photo.load()
        predicted = _prediction(model_a, image)
        if predicted != _prediction(model_b, image):
            continue
        category = next((c for c in photo.categories if predicted in c.class_ids), None)
        if category is None:
            continue
        used += 1
        _, maps_a = _render(model_a, image, method_names, [predicted])
        _, maps_b = _render(model_b, image, method_names, [predicted])
        for name in method_names:
            left = "A" if rng.random() < 0.5 else "B"
            info = {
                "boxes": {category.name: _scaled(category.boxes, image)},
                "class_id": predicted,
                "models": labels,
            }
            pictures = {
                slot: (png_bytes(found[name][0]), found[name][1])
                for slot, found in (("A", maps_a), ("B", maps_b))
            }
            choices = [str(value) for value, _ in TRUST_SCALE]
            items.append(NewItem(photo.name, name, category.name, choices, left, info, pictures))
    if not items:
        raise StudyError(
            f"in none of the {len(images)} images do both models predict the same annotated "
            "category"
        )
    config = {
        "models": labels,
        "methods": method_names,
        "images": used,
        "each_image_once": each_image_once,
    }
    return write_study(out, "trust", items, seed=seed, question=TRUST_QUESTION, config=config)
