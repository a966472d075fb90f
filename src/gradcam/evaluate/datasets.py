"""Reading the folder layouts users have into one form: a :class:`Dataset` of :class:`Sample`.

* :func:`read_folder`: a plain folder of images (no labels; for faithfulness and sanity);
* :func:`read_imagenet`: ImageNet validation style: a flat folder of images, a labels file
  (``FILENAME LABEL`` per line), and optionally one PASCAL VOC XML file of boxes per image;
* :func:`read_voc`: PASCAL VOC (``JPEGImages``, ``Annotations``, ``ImageSets/Main``);
* :func:`read_coco`: COCO-style JSON with boxes and masks (polygons or RLE);
* :func:`read_synthetic`: the generated shapes benchmark (exact boxes and masks), written as
  COCO once and read back like any COCO folder.

Boxes become 0-based inclusive pixel boxes (VOC's 1-based coordinates are shifted), VOC's
``difficult`` flags and COCO's ``iscrowd`` are kept, XML is parsed with ``defusedxml``, and
images whose decoded size disagrees with their annotation are reported in
:attr:`Dataset.problems` and left out (their boxes cannot be trusted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from defusedxml import ElementTree
from PIL import Image, ImageDraw

from gradcam.errors import GradCAMError
from gradcam.evaluate.metrics import Box

__all__ = [
    "VOC_CLASSES",
    "Annotation",
    "Dataset",
    "Sample",
    "decode_rle",
    "read_coco",
    "read_folder",
    "read_imagenet",
    "read_photos",
    "read_synthetic",
    "read_voc",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


class DatasetError(GradCAMError):
    """A dataset folder or annotation file cannot be read; the message names the file."""


@dataclass(frozen=True)
class Annotation:
    """One annotated object instance.

    Attributes:
        class_id: index into :attr:`Dataset.class_names`.
        box: ``(x0, y0, x1, y1)`` 0-based inclusive pixels, or ``None``.
        mask: boolean (H, W) mask, or ``None``.
        difficult: VOC's "difficult" flag or COCO's "iscrowd".
    """

    class_id: int
    box: Box | None = None
    mask: np.ndarray | None = field(default=None, compare=False)
    difficult: bool = False


@dataclass(frozen=True)
class Sample:
    """One image: its path, the classes present, and their annotated instances."""

    path: Path
    labels: tuple[int, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    size: tuple[int, int] | None = None  # (width, height) from the annotation


@dataclass(frozen=True)
class Dataset:
    """Samples with the names of their classes, and what could not be used."""

    name: str
    class_names: tuple[str, ...]
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _size_problem(path: Path, size: tuple[int, int] | None) -> str | None:
    if size is None:
        return None
    try:
        with Image.open(path) as image:
            actual = image.size
    except FileNotFoundError:
        return f"{path}: image file is missing"
    except OSError as exc:
        return f"{path}: cannot be read as an image ({exc})"
    if actual != size:
        return (
            f"{path}: decoded size {actual[0]}x{actual[1]} disagrees with the annotation's "
            f"{size[0]}x{size[1]}"
        )
    return None


def read_folder(folder: str | os.PathLike[str]) -> Dataset:
    """Every image under ``folder`` (recursively, sorted), without labels."""
    root = Path(folder)
    return Dataset(root.name, (), [Sample(p) for p in _images_in(root)])


PHOTOS = ("chelsea.png", "coffee.png", "motorcycle_left.png", "astronaut.png", "rocket.jpg")


def read_photos(annotated: bool = False) -> Dataset:
    """The real photos shipped inside installed packages: scikit-image's ``chelsea``,
    ``coffee``, ``motorcycle_left``, ``astronaut`` and ``rocket`` (when scikit-image is
    installed) and matplotlib's ``grace_hopper``.

    Without labels by default (for faithfulness and sanity). With ``annotated``, only the
    photos with an ImageNet class, with their classes and a box drawn by hand by this project
    (``gradcam/data/photos_annotations.json``), for localization and pointing with an
    ImageNet model.
    """
    import matplotlib

    paths = []
    try:
        import skimage

        paths += [Path(skimage.__file__).parent / "data" / name for name in PHOTOS]
    except ImportError:
        pass
    paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    paths = [p for p in paths if p.is_file()]
    if not annotated:
        return Dataset("photos", (), [Sample(p) for p in paths])
    notes = json.loads((Path(__file__).parents[1] / "data" / "photos_annotations.json").read_text())
    samples = []
    for path in paths:
        if path.name in notes:
            classes, box = notes[path.name]["classes"], tuple(notes[path.name]["box"])
            annotations = tuple(Annotation(c, box) for c in classes)
            samples.append(Sample(path, tuple(classes), annotations))
    return Dataset("photos-annotated", (), samples)


def _voc_objects(
    xml_path: Path, class_index: dict[str, int]
) -> tuple[list[Annotation], tuple[int, int] | None]:
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise DatasetError(f"{xml_path}: not a readable annotation file ({exc})") from None
    except Exception as exc:  # defusedxml refuses entity expansion and external references
        raise DatasetError(f"{xml_path}: refused unsafe XML ({type(exc).__name__})") from None
    size = None
    size_node = root.find("size")
    if size_node is not None and size_node.findtext("width") and size_node.findtext("height"):
        size = (int(float(size_node.findtext("width"))), int(float(size_node.findtext("height"))))
    annotations = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_index:
            raise DatasetError(f"{xml_path}: unknown class {name!r}")
        node = obj.find("bndbox")
        box = None
        if node is not None:
            # VOC coordinates are 1-based and inclusive.
            x0, y0, x1, y1 = (
                round(float(node.findtext(k) or "nan")) - 1
                for k in ("xmin", "ymin", "xmax", "ymax")
            )
            box = (x0, y0, x1, y1)
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        annotations.append(Annotation(class_index[name], box, None, difficult))
    return annotations, size


def _with_checks(name: str, classes: Sequence[str], candidates: list[Sample]) -> Dataset:
    samples, problems = [], []
    for sample in candidates:
        problem = _size_problem(sample.path, sample.size)
        if problem is None:
            samples.append(sample)
        else:
            problems.append(problem)
    return Dataset(name, tuple(classes), samples, problems)


def read_voc(
    root: str | os.PathLike[str], split: str = "val", classes: Sequence[str] = VOC_CLASSES
) -> Dataset:
    """PASCAL VOC: the images of ``ImageSets/Main/<split>.txt`` with their XML annotations.

    Raises:
        DatasetError: naming the missing folder or file, or an unknown class in an XML file.
    """
    base = Path(root)
    listing = base / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: no such file (is {base} a VOC folder?)")
    class_index = {c: i for i, c in enumerate(classes)}
    candidates = []
    for image_id in listing.read_text().split():
        annotations, size = _voc_objects(base / "Annotations" / f"{image_id}.xml", class_index)
        labels = tuple(sorted({a.class_id for a in annotations}))
        path = base / "JPEGImages" / f"{image_id}.jpg"
        candidates.append(Sample(path, labels, tuple(annotations), size))
    return _with_checks(f"voc-{split}", classes, candidates)


def read_imagenet(
    images: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    boxes: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """ImageNet validation style: a flat folder of images and a ``FILENAME LABEL`` labels file.

    A label is a class index, or a class identifier from ``classes`` (default: the 1000
    ImageNet class names; pass the WordNet ids in model order to use ``n01440764``-style
    labels). ``boxes`` is a folder with one VOC XML file per image (named after the image),
    whose object names are resolved the same way.
    """
    from gradcam.models import imagenet_classes

    names = tuple(classes) if classes is not None else imagenet_classes()
    index = {c: i for i, c in enumerate(names)}
    folder, label_file = Path(images), Path(labels)
    if not label_file.is_file():
        raise DatasetError(f"{label_file}: no such labels file")
    candidates = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        filename, _, label = line.strip().partition(" ")
        label = label.strip()
        class_id = int(label) if label.isdigit() else index.get(label, -1)
        if not 0 <= class_id < len(names):
            raise DatasetError(f"{label_file}:{number}: unknown label {label!r}")
        annotations: list[Annotation] = []
        size = None
        if boxes is not None:
            xml_path = Path(boxes) / f"{Path(filename).stem}.xml"
            if xml_path.is_file():
                by_name = {**index, **{str(i): i for i in range(len(names))}}
                annotations, size = _voc_objects(xml_path, by_name)
        candidates.append(Sample(folder / filename, (class_id,), tuple(annotations), size))
    return _with_checks(folder.name, names, candidates)


def decode_rle(counts: str | Sequence[int], height: int, width: int) -> np.ndarray:
    """Decode a COCO run-length encoding (compressed string or list of counts) to a mask.

    Runs alternate background and foreground, starting with background, over the pixels in
    column-major order. The compressed form stores each count (after the first two, as a
    difference from the count two before it) in 5-bit groups offset by 48 into ASCII.
    """
    if isinstance(counts, str):
        values: list[int] = []
        position = 0
        while position < len(counts):
            value, shift, more = 0, 0, True
            while more:
                chunk = ord(counts[position]) - 48
                value |= (chunk & 0x1F) << (5 * shift)
                more = bool(chunk & 0x20)
                position += 1
                shift += 1
                if not more and chunk & 0x10:
                    value |= -1 << (5 * shift)
            if len(values) > 2:
                value += values[-2]
            values.append(value)
        runs: Sequence[int] = values
    else:
        runs = counts
    flat = np.zeros(height * width, dtype=bool)
    position, foreground = 0, False
    for run in runs:
        if foreground:
            flat[position : position + run] = True
        position += run
        foreground = not foreground
    if position != height * width:
        raise ValueError(f"RLE counts cover {position} pixels, not {height}x{width}")
    return flat.reshape(width, height).T


def _coco_mask(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    if isinstance(segmentation, list) and segmentation:
        canvas = Image.new("1", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in segmentation:
            if len(polygon) >= 6:
                draw.polygon([float(v) for v in polygon], fill=1, outline=1)
        return np.asarray(canvas, dtype=bool)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        h, w = segmentation.get("size", (height, width))
        return decode_rle(segmentation["counts"], int(h), int(w))
    return None


def read_coco(annotations: str | os.PathLike[str], images: str | os.PathLike[str]) -> Dataset:
    """COCO-style JSON: ``images``, ``annotations`` (``bbox`` as x, y, w, h; ``segmentation``
    as polygons or RLE) and ``categories`` (ids mapped to indices in id order)."""
    path = Path(annotations)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a JSON file ({exc})") from None
    try:
        categories = sorted(data["categories"], key=lambda c: c["id"])
        index = {c["id"]: i for i, c in enumerate(categories)}
        by_image: dict[int, list[Annotation]] = {img["id"]: [] for img in data["images"]}
        info = {img["id"]: img for img in data["images"]}
        for ann in data.get("annotations", []):
            img = info[ann["image_id"]]
            box = None
            if ann.get("bbox"):
                x, y, w, h = (float(v) for v in ann["bbox"])
                box = (
                    round(x),
                    round(y),
                    max(round(x + w) - 1, round(x)),
                    max(round(y + h) - 1, round(y)),
                )
            mask = _coco_mask(ann.get("segmentation"), int(img["height"]), int(img["width"]))
            by_image[ann["image_id"]].append(
                Annotation(index[ann["category_id"]], box, mask, bool(ann.get("iscrowd", 0)))
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(
            f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})"
        ) from None
    candidates = [
        Sample(
            Path(images) / img["file_name"],
            tuple(sorted({a.class_id for a in by_image[img["id"]]})),
            tuple(by_image[img["id"]]),
            (int(img["width"]), int(img["height"])),
        )
        for img in sorted(data["images"], key=lambda i: i["id"])
    ]
    return _with_checks(path.stem, [str(c["name"]) for c in categories], candidates)


def read_synthetic(folder: str | os.PathLike[str], count: int = 500, *, seed: int = 0) -> Dataset:
    """The synthetic shapes benchmark: ``count`` generated photos of one shape each on a
    textured background, with exact boxes and masks, for the shipped ``"shapes"`` model.

    The images and their COCO annotations are written to ``folder`` the first time (the same
    ``count`` and ``seed`` always give the same files) and read back with :func:`read_coco`.

    Example:
        >>> dataset = read_synthetic("bench", 100)
        >>> dataset.class_names[0], len(dataset.samples)
        ('circle', 100)
    """
    from gradcam.synthetic.scenes import write_benchmark

    root = Path(folder)
    annotations = root / "annotations.json"
    try:
        written = len(json.loads(annotations.read_text())["images"])
    except (OSError, ValueError, KeyError, TypeError):
        written = -1
    if written != count:
        annotations = write_benchmark(root, count, seed=seed)
    dataset = read_coco(annotations, root / "images")
    return replace(dataset, name=f"synthetic-shapes-{seed}-{count}")
