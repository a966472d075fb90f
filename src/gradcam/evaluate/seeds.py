"""Segmentation seeds from any method's maps, scored against masks (section 4.2, Fig. 4).

Weakly-supervised segmentation with SEC (Kolesnikov & Lampert 2016) starts from *seeds*:
pixels labelled with a class (or background) from image-level labels only. SEC took its
foreground seeds from CAM; the paper (section 4.2; supplement section 6) took them from
Grad-CAM of the standard VGG-16 and got 49.6 mIoU instead of 44.6 on PASCAL VOC 2012. This
protocol measures the seeds themselves, for any registered method:

* foreground: for each class the image is labelled with, the pixels where its map, upsampled
  bilinearly to the image, is above ``foreground`` (SEC: 0.2) times the map's maximum;
  where two classes claim a pixel, the one with the higher normalized score keeps it;
* background: the pixels where every labelled class's normalized map is at most
  ``background`` (default 0.1). SEC took its background cue from a separate saliency map
  (Simonyan et al.'s gradient saliency, its least salient pixels); here the class maps
  themselves are the saliency, so that the seeds depend on the method under test alone;
* every other pixel is no seed: it counts in no class's precision.

Each seed is scored against the ground-truth masks (annotation masks of COCO folders and the
synthetic scenes; ``SegmentationClass`` PNGs of a VOC folder, whose void pixels are
ignored): per class, ``precision = |S_c & G_c| / |S_c|``, ``recall = |S_c & G_c| / |G_c|``
and ``IoU = |S_c & G_c| / |S_c | G_c|``, with the pixel counts summed over the dataset as
VOC's mIoU is; ``mIoU`` is the mean IoU over background and the classes that occur.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gradcam.checks import check_number
from gradcam.errors import GradCAMError
from gradcam.evaluate.base import (
    Progress,
    Protocol,
    Scored,
    Scorer,
    finished,
    heatmaps,
    no_progress,
    setting,
    stored,
)
from gradcam.evaluate.datasets import Dataset, Sample
from gradcam.evaluate.registry import register_protocol
from gradcam.maps import upsample
from gradcam.methods import create
from gradcam.methods.registry import DEFAULT_METHOD, check_method
from gradcam.models import LoadedModel

__all__ = ["BACKGROUND", "Seeds", "seed_counts", "seeds", "truth_masks"]

BACKGROUND = -1
"""The class id of background in :class:`Seeds` rows (dataset classes count from 0)."""

#: A VOC ``SegmentationClass`` pixel that no class owns (object borders, unclear regions).
_VOC_VOID = 255


def seeds(maps: Tensor, foreground: float = 0.2, background: float = 0.1) -> Tensor:
    """SEC's localization cues from K class maps: one boolean plane per seed class.

    With ``m_k = maps[k] / max(maps[k])`` (an all-zero map stays zero), pixel ``u`` is a
    foreground seed of class ``k`` when ``m_k(u) > foreground`` and ``m_k(u)`` is the
    largest of the ``m_j(u)`` (the first such ``k`` on ties), and a background seed when
    ``max_k m_k(u) <= background``.

    Args:
        maps: (K, H, W) non-negative maps, one per class in the image, at the resolution the
            seeds are wanted at.
        foreground: the fraction of a map's maximum above which its pixels are seeds.
        background: the fraction at or below which, for every class, a pixel is background.

    Returns:
        (K + 1, H, W) booleans: plane 0 is background, plane ``k + 1`` class ``k``; each pixel
        is in at most one plane.

    Examples:
        >>> maps = torch.tensor([[[0.0, 1.0, 4.0, 10.0]], [[2.0, 0.0, 1.0, 1.0]]])
        >>> seeds(maps).int()[:, 0].tolist()  # scaled: [0, .1, .4, 1] and [1, 0, .5, .5]
        [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]
    """
    if maps.dim() != 3 or len(maps) == 0:
        raise GradCAMError(f"seeds need (K, H, W) maps with K >= 1, got shape {tuple(maps.shape)}")
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    scaled = torch.where(peak > 0, maps / torch.where(peak > 0, peak, 1.0), 0.0)
    best, owner = scaled.max(dim=0)
    planes = [best <= background]
    planes += [(owner == k) & (best > foreground) for k in range(len(maps))]
    return torch.stack(planes)


def seed_counts(
    seeded: Tensor, truth: Tensor, ignore: Tensor | None = None
) -> tuple[list[int], list[int], list[int]]:
    """Per plane: ``|S & G|``, ``|S|`` and ``|G|`` in pixels, leaving out ``ignore``.

    Args:
        seeded: (P, H, W) booleans, the seeds of :func:`seeds`.
        truth: (P, H, W) booleans, the ground truth of the same planes.
        ignore: (H, W) booleans, pixels counted nowhere (VOC's void border), or ``None``.

    Examples:
        >>> s = torch.tensor([[[True, True, False, False]]])
        >>> g = torch.tensor([[[False, True, True, False]]])
        >>> seed_counts(s, g)
        ([1], [2], [2])
        >>> seed_counts(s, g, ignore=torch.tensor([[True, False, False, False]]))
        ([1], [1], [2])
    """
    if seeded.shape != truth.shape:
        raise GradCAMError(
            f"seeds of shape {tuple(seeded.shape)} and masks of shape {tuple(truth.shape)} differ"
        )
    if ignore is not None:
        seeded, truth = seeded & ~ignore, truth & ~ignore
    both = (seeded & truth).sum(dim=(-2, -1))
    return both.tolist(), seeded.sum(dim=(-2, -1)).tolist(), truth.sum(dim=(-2, -1)).tolist()


def _voc_class_png(sample: Sample) -> Path | None:
    """The ``SegmentationClass`` PNG beside a VOC image, if the image has one."""
    if sample.path.parent.name != "JPEGImages":
        return None
    png = sample.path.parent.parent / "SegmentationClass" / f"{sample.path.stem}.png"
    return png if png.is_file() else None


def truth_masks(
    sample: Sample, classes: Sequence[int], size: tuple[int, int]
) -> tuple[Tensor, Tensor | None]:
    """Ground truth of background and ``classes`` as (K + 1, H, W) booleans, and the pixels
    to ignore (VOC's void label) or ``None``.

    The masks are the sample's annotation masks (COCO, the synthetic scenes), the union of
    a class's instances; without them, a VOC image's ``SegmentationClass`` PNG (palette
    index ``i`` is class ``i - 1`` of :data:`~gradcam.evaluate.datasets.VOC_CLASSES`,
    0 background, 255 void).

    Args:
        sample: the annotated image.
        classes: the class ids, in plane order after background.
        size: ``(H, W)`` of the decoded image.

    Raises:
        GradCAMError: the sample has no masks, an unreadable mask file, or masks of another
            size than the image.
    """
    height, width = size
    planes = np.zeros((len(classes) + 1, height, width), dtype=bool)
    ignore = None
    masked = [(a.class_id, a.mask) for a in sample.annotations if a.mask is not None]
    png = None if masked else _voc_class_png(sample)
    if masked:
        objects = np.zeros((height, width), dtype=bool)
        for class_id, mask in masked:
            if mask.shape != (height, width):
                raise GradCAMError(
                    f"a mask of {mask.shape[1]}x{mask.shape[0]} pixels for an image of "
                    f"{width}x{height}"
                )
            if class_id in classes:
                planes[list(classes).index(class_id) + 1] |= mask
            objects |= mask
    elif png is not None:
        try:
            with Image.open(png) as opened:
                index = np.asarray(opened)
        except OSError as exc:
            raise GradCAMError(f"{png}: not a readable segmentation mask ({exc})") from None
        if index.shape != (height, width):
            raise GradCAMError(
                f"{png}: {index.shape[1]}x{index.shape[0]} pixels, not {width}x{height}"
            )
        for k, class_id in enumerate(classes):
            planes[k + 1] = index == class_id + 1
        void = index == _VOC_VOID
        objects = (index != 0) & ~void
        ignore = torch.from_numpy(void)
    else:
        raise GradCAMError(
            "no masks: seeds are scored against segmentation masks (COCO masks, VOC "
            "SegmentationClass, the synthetic scenes)"
        )
    planes[0] = ~objects if ignore is None else ~objects & ~ignore.numpy()
    return torch.from_numpy(planes), ignore


def _has_masks(sample: Sample) -> bool:
    return any(a.mask is not None for a in sample.annotations) or _voc_class_png(sample) is not None


def _ratio(numerator: float, denominator: float) -> float:
    return round(100.0 * numerator / denominator, 2) if denominator else float("nan")


@register_protocol(
    title="seed precision, recall and mIoU",
    citation="section 4.2 (SEC's seeds, Kolesnikov and Lampert 2016)",
    summary=(
        "method",
        "class",
        "images",
        "precision",
        "recall",
        "iou",
        "miou",
        "coverage",
        "precision_pixels",
    ),
)
@dataclass(frozen=True)
class Seeds(Protocol):
    """Seed precision, recall and mIoU of a method's maps against masks (section 4.2).

    For each image, the method explains the classes the image is labelled with (image-level
    labels: the weak supervision SEC has), and :func:`seeds` turns the maps, upsampled
    bilinearly to the image, into foreground and background seeds, which
    :func:`seed_counts` scores against :func:`truth_masks`. The summary's first row is
    the whole dataset (``class`` ``"all"``: ``miou`` and the mean precision and recall over
    the classes that occur, ``coverage`` the share of pixels seeded, ``precision_pixels`` the
    share of seeded pixels that are right), then one row per class, background first.

    Args:
        method: any registered method (``gradcam``, ``cam``, ...).
        foreground: seeds where a class's map exceeds this fraction of its maximum (SEC: 0.2).
        background: background where every class's map is at most this fraction.
        layer: the method's layer (default: the model's).
        options: the method's options, as the method registry takes them.

    Examples:
        >>> from gradcam.evaluate import open_dataset, run
        >>> data = open_dataset("synthetic", count=8, workdir="runs")
        >>> result = run(Seeds("cam"), shapes, data, progress=False)
        >>> overall = result.summary[0]
        >>> overall["class"], overall["images"], 0 < overall["miou"] < 100
        ('all', 8, True)
        >>> Seeds(foreground=2.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        gradcam.errors.GradCAMError: foreground must be a fraction of the map's maximum ...
    """

    name: ClassVar[str] = "seeds"
    needs: ClassVar[tuple[str, ...]] = ("labels", "masks")
    method: str = field(default=DEFAULT_METHOD, metadata=setting("the explanation method"))
    foreground: float = field(
        default=0.2, metadata=setting("seed a class where its map exceeds this fraction of its max")
    )
    background: float = field(
        default=0.1, metadata=setting("seed background where every map is at most this fraction")
    )
    layer: str | None = field(
        default=None, metadata=setting("the layer to explain (default: the model's)")
    )
    options: dict[str, Any] = field(default_factory=dict, metadata=setting("the method's options"))

    def __post_init__(self) -> None:
        check_method(self.method, self.options)
        for name in ("foreground", "background"):
            check_number(name, getattr(self, name), 0, 1, what="a fraction of the map's maximum")
        if self.background > self.foreground:
            raise GradCAMError(
                f"background ({self.background}) must not be above foreground "
                f"({self.foreground}): a pixel would be seeded twice"
            )

    def check(self, dataset: Dataset) -> None:
        """Refuse a dataset without labels, or without any segmentation mask."""
        super().check(dataset)
        if dataset.samples and not any(_has_masks(s) for s in dataset.samples):
            raise GradCAMError(
                f"dataset {dataset.name!r} has no segmentation masks: seeds are scored against "
                "masks (a COCO folder with masks, VOC with SegmentationClass, or synthetic)"
            )

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        explain = create(
            self.method, loaded.module, self.layer or loaded.default_layer, **self.options
        )
        tell = progress or no_progress
        names = list(loaded.class_names)

        def one(sample: Sample, image: Image.Image) -> Scored:
            classes = sorted(set(sample.labels))
            if not classes:
                raise GradCAMError("no image-level labels: nothing to seed")
            size = (image.height, image.width)
            truth, ignore = truth_masks(sample, classes, size)
            raw = heatmaps(explain(loaded.preprocess(image), torch.tensor([classes])))[0]
            seeded = seeds(upsample(raw, size), self.foreground, self.background)
            both, seeded_area, truth_area = seed_counts(seeded, truth, ignore)
            tell(1)
            row = {
                "classes": [BACKGROUND, *classes],
                "names": ["background", *(names[c] for c in classes)],
                "intersection": both,
                "seeded": seeded_area,
                "truth": truth_area,
                "pixels": int(size[0] * size[1] - (0 if ignore is None else ignore.sum())),
            }
            return row, {self.method: stored(raw)}

        return lambda samples, images: [one(s, i) for s, i in zip(samples, images, strict=True)]

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        totals: dict[int, list[int]] = {}
        names: dict[int, str] = {}
        for row in done:
            for i, class_id in enumerate(row["classes"]):
                counts = totals.setdefault(int(class_id), [0, 0, 0, 0])
                counts[0] += int(row["intersection"][i])
                counts[1] += int(row["seeded"][i])
                counts[2] += int(row["truth"][i])
                counts[3] += 1
                names[int(class_id)] = str(row["names"][i])
        pixels_all = sum(int(r["pixels"]) for r in done)
        per_class: list[dict[str, Any]] = []
        occurring: list[dict[str, Any]] = []
        for class_id in sorted(totals):
            both, seeded, truth, images = totals[class_id]
            per_class.append(
                {
                    "method": self.method,
                    "class": names[class_id],
                    "images": images,
                    "precision": _ratio(both, seeded),
                    "recall": _ratio(both, truth),
                    "iou": _ratio(both, seeded + truth - both),
                    "miou": None,  # a dataset-wide measure: the "all" row's
                    "coverage": _ratio(seeded, pixels_all),
                    "precision_pixels": _ratio(both, seeded),
                }
            )
            if truth > 0:
                occurring.append(per_class[-1])

        def mean(key: str) -> float:
            values = [float(r[key]) for r in occurring if r[key] == r[key]]  # no NaN
            return round(float(np.mean(values)), 2) if values else float("nan")

        pixels = sum(int(r["pixels"]) for r in done)
        seeded_all = sum(t[1] for t in totals.values())
        right = sum(t[0] for t in totals.values())
        overall = {
            "method": self.method,
            "class": "all",
            "images": len(done),
            "precision": mean("precision"),
            "recall": mean("recall"),
            "iou": mean("iou"),
            "miou": mean("iou"),
            "coverage": _ratio(seeded_all, pixels),
            "precision_pixels": _ratio(right, seeded_all),
        }
        return [overall, *per_class]
