"""Reading the folder layouts users have into one form: a :class:`Dataset` of :class:`Sample`.

:func:`open_dataset` detects the layout (what ``gradcam evaluate --data`` does); each layout
also has its own reader:

* :func:`read_folder`: a plain folder of images (no labels; for faithfulness and sanity);
* :func:`read_imagenet`: ImageNet as distributed (the ILSVRC CLS-LOC release:
  ``ILSVRC/Data/CLS-LOC/val`` and ``ILSVRC/Annotations/CLS-LOC/val``), or a flat folder of
  images with a labels file (``FILENAME LABEL`` per line) and/or a folder of PASCAL VOC XML
  box files, one per image, whose object names are WordNet ids (:func:`imagenet_synsets`);
* :func:`read_voc`: PASCAL VOC (``JPEGImages``, ``Annotations``, ``ImageSets/Main``);
* :func:`read_coco`: COCO-style JSON with boxes and masks (polygons or RLE);
* :func:`read_synthetic`: the generated shapes benchmark (exact boxes and masks), written as
  COCO once (:func:`write_benchmark`) and read back like any COCO folder;
* :func:`read_photos`: the real photos shipped inside installed packages;
* :func:`read_synthetic_nd`: the volumetric and video benchmarks (solids in volumes, moving
  squares in clips, with exact 3-D boxes and masks), written as ``.npz`` arrays once and
  read back; their samples are arrays, not photos (:data:`Input`, :attr:`Dataset.rank`).

Boxes become 0-based inclusive pixel boxes (VOC's 1-based coordinates are shifted), VOC's
``difficult`` flags and COCO's ``iscrowd`` are kept, and XML is parsed with ``defusedxml``.
One bad annotation costs its image, not the dataset: an unreadable or malformed annotation,
an unknown class, a truncated RLE string, an image whose annotated size is above Pillow's
decompression-bomb limit or disagrees with the decoded image are each reported in
:attr:`Dataset.problems` (one line naming the file and the problem) and the image is left
out. :attr:`Dataset.identity` says which data a run used, for its manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from defusedxml import ElementTree
from PIL import Image, ImageDraw

from gradcam.errors import GradCAMError
from gradcam.evaluate.coco import box_from_bbox, coco_bbox, decode_rle, encode_rle, write_coco
from gradcam.evaluate.metrics import Box
from gradcam.outputs import write_atomic

__all__ = [
    "DATASET_FORMATS",
    "SYNTHETIC_IMAGES",
    "SYNTHETIC_MODELS",
    "VOC_CLASSES",
    "Annotation",
    "Dataset",
    "DatasetError",
    "Input",
    "Sample",
    "imagenet_synsets",
    "open_dataset",
    "read_array",
    "read_coco",
    "read_folder",
    "read_imagenet",
    "read_photos",
    "read_synthetic",
    "read_synthetic_nd",
    "read_voc",
    "write_benchmark",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
DATASET_FORMATS = (
    "auto", "folder", "imagenet", "voc", "coco", "synthetic", "synthetic-volumes",
    "synthetic-clips", "photos",
)  # fmt: skip
#: Images of the synthetic benchmark when no count is given (every command's default).
SYNTHETIC_IMAGES = 500
"""The values of :func:`open_dataset`'s ``format`` (``gradcam evaluate --format``)."""
#: The shipped model of each synthetic benchmark, by its ``--data`` name: the model a
#: command loads on it when none is given.
SYNTHETIC_MODELS = {
    "synthetic": "shapes",
    "synthetic-volumes": "shapes3d",
    "synthetic-clips": "motion",
}

_DATA = Path(__file__).parents[1] / "data"


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


#: What a sample decodes to: an RGB photo, or an array (C, *spatial) already in the model's
#: input layout (the samples of a dataset of :attr:`Dataset.rank` 3: volumes and clips).
Input = Image.Image | np.ndarray


@dataclass(frozen=True)
class Sample:
    """One image: its path, the classes present, and their annotated instances.

    A ``.npz`` path holds an array sample (:func:`read_array`); its annotations' boxes and
    masks are in the array's voxels (3-D boxes ``(x0, y0, z0, x1, y1, z1)``, (D, H, W) masks).
    """

    path: Path
    labels: tuple[int, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    size: tuple[int, int] | None = None  # (width, height) from the annotation


@dataclass(frozen=True)
class Dataset:
    """Samples with the names of their classes, and what could not be used.

    Attributes:
        name: a short name for tables and folder names.
        class_names: the names of the class ids of the annotations (empty: unlabeled).
        samples: the usable images, in a fixed order.
        problems: one line per image left out, naming the file and the problem.
        identity: which data this is, as plain JSON values, for a run's manifest: always
            ``format``, ``count`` (usable samples) and ``digest`` (16 hex digits of a SHA-256
            over each sample's path relative to ``root``, labels, size and objects' classes,
            boxes, flags and mask areas: it changes when an annotation does); ``root``
            (absolute path) where the data is a folder; and what else selects the data:
            ``split`` (VOC), ``layout``, ``labels``, ``boxes`` (ImageNet), ``annotations``
            (COCO), ``seed``, ``size`` and ``generator`` (synthetic), ``annotated``
            (photos). A dataset built by hand gets ``format`` ``"custom"`` and its ``name``.
        rank: the spatial dimensions of its samples: 2 for photos, 3 for volumes and clips
            (arrays, :data:`Input`); protocols refuse a rank they do not score.

    Examples:
        >>> Dataset("mine", (), []).identity
        {'format': 'custom', 'name': 'mine', 'count': 0, 'digest': 'e3b0c44298fc1c14'}
    """

    name: str
    class_names: tuple[str, ...]
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict, compare=False)
    rank: int = 2

    def __post_init__(self) -> None:
        if not self.identity:
            self.identity.update(format="custom", name=self.name, count=len(self.samples))
        if "digest" not in self.identity:
            self.identity["digest"] = _digest(self.samples, self.identity.get("root"))


def _digest(samples: Sequence[Sample], root: str | None) -> str:
    """A fingerprint of what the samples say: paths (relative to the dataset's root), labels,
    sizes, and each object's class, box, flag and mask area."""
    digest = hashlib.sha256()
    for sample in samples:
        path = sample.path
        if root is not None and path.is_relative_to(root):
            path = path.relative_to(root)
        objects = [
            (a.class_id, a.box, a.difficult, None if a.mask is None else int(a.mask.sum()))
            for a in sample.annotations
        ]
        digest.update(f"{path.as_posix()}|{sample.labels}|{sample.size}|{objects}\n".encode())
    return digest.hexdigest()[:16]


#: Keys of :attr:`Dataset.identity` that say where the data lies, not what it is: absolute
#: paths of the dataset's folder and of its label, box and annotation files. A run's manifest
#: records them but does not compare them, so a run folder and its data copied elsewhere resume.
LOCATION_KEYS = ("root", "labels", "boxes", "annotations")


def _identity(kind: str, root: str | os.PathLike[str] | None, **extra: Any) -> dict[str, Any]:
    where = {} if root is None else {"root": str(Path(root).resolve())}
    return {"format": kind, **where, **extra}


def _finish(
    name: str,
    classes: Sequence[str],
    candidates: Iterable[Sample],
    problems: Iterable[str],
    identity: dict[str, Any],
) -> Dataset:
    """Leave out the images whose decoded size disagrees with their annotation."""
    samples, found = [], list(problems)
    for sample in candidates:
        problem = _size_problem(sample.path, sample.size)
        if problem is None:
            samples.append(sample)
        else:
            found.append(problem)
    return Dataset(name, tuple(classes), samples, found, {**identity, "count": len(samples)})


def _too_many_pixels(width: int, height: int) -> str | None:
    """Why an annotated size is refused before anything of that size is allocated."""
    if width <= 0 or height <= 0:
        return f"size {width}x{height} is not positive"
    limit = Image.MAX_IMAGE_PIXELS  # what load_image refuses (None: the user lifted it)
    if limit is not None and width * height > limit:
        return (
            f"size {width}x{height} ({width * height} pixels) is above the decompression-bomb "
            f"limit of {int(limit)} pixels"
        )
    return None


def _size_problem(path: Path, size: tuple[int, int] | None) -> str | None:
    if size is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                actual = image.size
    except FileNotFoundError:
        return f"{path}: image file is missing"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"{path}: image is too large to decode safely (decompression-bomb limit)"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{path}: cannot be read as an image ({exc})"
    if actual != size:
        return (
            f"{path}: decoded size {actual[0]}x{actual[1]} disagrees with the annotation's "
            f"{size[0]}x{size[1]}"
        )
    return None


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, not a {what}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: {what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start})"
        ) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def read_folder(folder: str | os.PathLike[str]) -> Dataset:
    """Every image under ``folder`` (recursively, sorted), without labels.

    Examples:
        >>> data = read_folder(write_benchmark("bench", 4).parent / "images")
        >>> [s.path.name for s in data.samples[:2]], data.identity["count"]
        (['000000.png', '000001.png'], 4)
    """
    root = Path(folder)
    samples = [Sample(p) for p in _images_in(root)]
    return Dataset(root.name, (), samples, [], _identity("folder", root, count=len(samples)))


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
        samples = [Sample(p) for p in paths]
        identity = _identity("photos", None, annotated=False, count=len(samples))
        return Dataset("photos", (), samples, [], identity)
    notes = json.loads((_DATA / "photos_annotations.json").read_text())
    samples = []
    for path in paths:
        if path.name in notes:
            classes, box = notes[path.name]["classes"], tuple(notes[path.name]["box"])
            annotations = tuple(Annotation(c, box) for c in classes)
            samples.append(Sample(path, tuple(classes), annotations))
    identity = _identity("photos", None, annotated=True, count=len(samples))
    return Dataset("photos-annotated", (), samples, [], identity)


# ---------------------------------------------------------------------------------------------
# PASCAL VOC XML (VOC itself and ImageNet's box files)


def _number(node: Any, key: str, where: str) -> float:
    text = node.findtext(key)
    if text is None or not text.strip():
        raise DatasetError(f"{where}: missing <{key}>")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{where}: <{key}> is not a number ({text.strip()[:40]!r})")
    return value


def _voc_objects(
    xml_path: Path, class_index: dict[str, int]
) -> tuple[list[Annotation], tuple[int, int]]:
    """The objects and the ``(width, height)`` of one VOC XML file.

    Raises:
        DatasetError: naming the file and the first problem found in it.
    """
    try:
        root = ElementTree.parse(xml_path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{xml_path}: no such annotation file") from None
    except (ElementTree.ParseError, OSError) as exc:
        raise DatasetError(f"{xml_path}: not a readable annotation file ({exc})") from None
    except Exception as exc:  # defusedxml refuses entity expansion and external references
        raise DatasetError(f"{xml_path}: refused unsafe XML ({type(exc).__name__})") from None
    size_node = root.find("size")
    if size_node is None:
        raise DatasetError(f"{xml_path}: missing <size>")
    width = _number(size_node, "width", f"{xml_path}: <size>")
    height = _number(size_node, "height", f"{xml_path}: <size>")
    size = (int(width), int(height))
    refused = _too_many_pixels(*size)
    if refused is not None or size != (width, height):
        raise DatasetError(f"{xml_path}: <size> {refused or 'is not whole pixels'}")
    annotations = []
    for number, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"{xml_path}: object {number} ({name or 'no name'})"
        if name not in class_index:
            raise DatasetError(f"{xml_path}: unknown class {name!r}")
        node = obj.find("bndbox")
        box = None
        if node is not None:
            # VOC coordinates are 1-based and inclusive; a box past the border is clipped.
            x0, y0, x1, y1 = (
                round(_number(node, k, where)) - 1 for k in ("xmin", "ymin", "xmax", "ymax")
            )
            if x0 > x1 or y0 > y1:
                raise DatasetError(f"{where}: empty box (xmin > xmax or ymin > ymax)")
            x0, y0 = max(x0, 0), max(y0, 0)
            x1, y1 = min(x1, size[0] - 1), min(y1, size[1] - 1)
            if x0 > x1 or y0 > y1:
                raise DatasetError(f"{where}: box lies outside the {size[0]}x{size[1]} image")
            box = (x0, y0, x1, y1)
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        annotations.append(Annotation(class_index[name], box, None, difficult))
    return annotations, size


def read_voc(
    root: str | os.PathLike[str], split: str = "val", classes: Sequence[str] = VOC_CLASSES
) -> Dataset:
    """PASCAL VOC: the images of ``ImageSets/Main/<split>.txt`` with their XML annotations.

    An image whose XML file is missing or malformed (no ``<size>``, a missing or
    non-numeric coordinate, an unknown class...) is left out and reported in
    :attr:`Dataset.problems`.

    Raises:
        DatasetError: naming the missing folder or listing file.
    """
    base = Path(root)
    listing = base / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: no such file (is {base} a VOC folder?)")
    class_index = {c: i for i, c in enumerate(classes)}
    candidates, problems = [], []
    for image_id in _text(listing, "image list").split():
        try:
            annotations, size = _voc_objects(base / "Annotations" / f"{image_id}.xml", class_index)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        labels = tuple(sorted({a.class_id for a in annotations}))
        path = base / "JPEGImages" / f"{image_id}.jpg"
        candidates.append(Sample(path, labels, tuple(annotations), size))
    identity = _identity("voc", base, split=split)
    return _finish(f"voc-{split}", classes, candidates, problems, identity)


# ---------------------------------------------------------------------------------------------
# ImageNet


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The WordNet ids of the 1000 ILSVRC-2012 classes, sorted: the class order of
    torchvision's (and timm's) ImageNet models, so that ``imagenet_synsets()[i]`` is class
    ``i``. Shipped as ``gradcam/data/imagenet_synsets.txt`` (its source is named in that
    folder's README).

    Examples:
        >>> from gradcam.models import imagenet_classes
        >>> synsets = imagenet_synsets()
        >>> synsets.index("n02124075"), imagenet_classes()[synsets.index("n02124075")]
        (285, 'Egyptian cat')
    """
    return tuple((_DATA / "imagenet_synsets.txt").read_text().split())


def _ilsvrc_folders(root: Path, split: str) -> tuple[Path, Path] | None:
    """The images and box folders of the CLS-LOC release under ``root`` (or ``root/ILSVRC``)."""
    for base in (root / "ILSVRC", root):
        images = base / "Data" / "CLS-LOC" / split
        if images.is_dir():
            return images, base / "Annotations" / "CLS-LOC" / split
    return None


def _imagenet_index(classes: Sequence[str] | None) -> tuple[tuple[str, ...], dict[str, int]]:
    """Class names, and each name, WordNet id and index (as text) to its class index."""
    if classes is not None:
        names = tuple(classes)
        index = {c: i for i, c in enumerate(names)}
    else:
        from gradcam.models import imagenet_classes

        names = imagenet_classes()
        index = {c: i for i, c in enumerate(names)}
        index.update((w, i) for i, w in enumerate(imagenet_synsets()))
    index.update((str(i), i) for i in range(len(names)))
    return names, index


def _labels_file(path: Path, index: dict[str, int]) -> tuple[list[tuple[str, int]], list[str]]:
    entries, problems = [], []
    for number, line in enumerate(_text(path, "labels file").splitlines(), start=1):
        if not line.strip():
            continue
        filename, _, label = line.strip().partition(" ")
        label = label.strip()
        if not label:
            problems.append(f"{path}:{number}: expected 'FILENAME LABEL', got {line.strip()!r}")
        elif label not in index:
            problems.append(f"{path}:{number}: unknown label {label!r}")
        else:
            entries.append((filename, index[label]))
    return entries, problems


def read_imagenet(
    images: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    boxes: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    *,
    split: str = "val",
) -> Dataset:
    """ImageNet as distributed, or a flat folder of images with labels and/or boxes.

    ``images`` is one of:

    * the root of the ILSVRC CLS-LOC release (the folder holding ``ILSVRC/``, or ``ILSVRC``
      itself): the images of ``Data/CLS-LOC/<split>`` with the boxes of
      ``Annotations/CLS-LOC/<split>`` (``labels`` and ``boxes`` are then optional);
    * a flat folder of images, with ``labels`` (a ``FILENAME LABEL`` file), ``boxes`` (a
      folder of VOC XML files named after the images, such as ImageNet's official
      bounding-box release), or both.

    Without ``labels``, an image's labels are the classes of all the objects in its XML file
    and every object's box is kept. A label or object name is a class index, a WordNet id
    (``n02124075``, mapped through :func:`imagenet_synsets`), or a class name from
    ``classes`` (default: the 1000 ImageNet class names; passing ``classes`` replaces both
    names and WordNet ids by its entries, in model order).

    An image with a bad labels line or a missing or malformed XML file is left out and
    reported in :attr:`Dataset.problems`.

    Raises:
        DatasetError: naming the folder or file: a missing folder, a labels file that cannot
            be read or is not UTF-8, or neither labels nor boxes to read.

    Examples:
        >>> Path("val").mkdir(exist_ok=True)
        >>> Image.new("RGB", (8, 8)).save("val/cat.JPEG")
        >>> _ = Path("labels.txt").write_text("cat.JPEG n02124075\\n")
        >>> read_imagenet("val", "labels.txt").samples[0].labels
        (285,)
    """
    folder = Path(images)
    layout = "flat"
    found = _ilsvrc_folders(folder, split) if labels is None or boxes is None else None
    root = folder
    if found is not None:
        layout, (folder, release_boxes) = "cls-loc", found
        if boxes is None:
            boxes = release_boxes
            if not release_boxes.is_dir():
                raise DatasetError(
                    f"{release_boxes}: no such folder (the CLS-LOC release keeps the box files "
                    "there)"
                )
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    if labels is None and boxes is None:
        raise DatasetError(
            f"{folder}: ImageNet needs a labels file (--labels FILE), a folder of box XML "
            "files (--boxes DIR), or the ILSVRC CLS-LOC layout (ILSVRC/Data/CLS-LOC/"
            f"{split} beside ILSVRC/Annotations/CLS-LOC/{split})"
        )
    if boxes is not None and not Path(boxes).is_dir():
        raise DatasetError(f"{boxes}: no such folder of box XML files")
    names, index = _imagenet_index(classes)
    problems: list[str] = []
    if labels is not None:
        listed, problems = _labels_file(Path(labels), index)
        entries: list[tuple[str, int | None]] = list(listed)
    else:
        entries = [(p.relative_to(folder).as_posix(), None) for p in _images_in(folder)]
    candidates = []
    for filename, label in entries:
        annotations: list[Annotation] = []
        size = None
        if boxes is not None:
            xml_path = Path(boxes) / Path(filename).with_suffix(".xml")
            if xml_path.is_file() or label is None:
                try:
                    annotations, size = _voc_objects(xml_path, index)
                except DatasetError as exc:
                    problems.append(str(exc))
                    continue
        if label is not None:
            found_labels: tuple[int, ...] = (label,)
        else:
            found_labels = tuple(sorted({a.class_id for a in annotations}))
            if not found_labels:
                problems.append(f"{xml_path}: no <object>, so no label")
                continue
        candidates.append(Sample(folder / filename, found_labels, tuple(annotations), size))
    identity = _identity(
        "imagenet",
        root,
        layout=layout,
        split=split if layout == "cls-loc" else None,
        labels=None if labels is None else str(Path(labels).resolve()),
        boxes=None if boxes is None else str(Path(boxes).resolve()),
    )
    return _finish(folder.name, names, candidates, problems, identity)


# ---------------------------------------------------------------------------------------------
# COCO


def clip_polygon(
    points: Sequence[tuple[float, float]], box: tuple[float, float, float, float]
) -> list[tuple[float, float]]:
    """The polygon ``points`` clipped to the rectangle ``box`` = ``(x0, y0, x1, y1)``
    (Sutherland-Hodgman: one pass per side, each edge cut where it crosses the side).

    Pillow draws a polygon with coordinates past its integer range wrongly (a polygon
    reaching 1e12 px becomes one pixel): clipped to a band around the image first, it covers
    the same pixels of the image, with coordinates Pillow draws exactly.

    Examples:
        >>> clip_polygon([(-10, 0), (10, 0), (10, 1e12)], (-1, -1, 5, 5))
        [(5.0, 5), (-1.0, 5), (-1, 0.0), (5, 0.0)]
    """
    result = list(points)
    # Each side: the axis it bounds, the bound, and +1 (inside is above it) or -1 (below).
    sides = ((0, box[0], 1.0), (0, box[2], -1.0), (1, box[1], 1.0), (1, box[3], -1.0))
    for axis, bound, sign in sides:
        clipped: list[tuple[float, float]] = []
        for k, b in enumerate(result):
            a = result[k - 1]
            a_in, b_in = sign * (a[axis] - bound) >= 0, sign * (b[axis] - bound) >= 0
            if a_in != b_in:
                t = (bound - a[axis]) / (b[axis] - a[axis])
                other = a[1 - axis] + t * (b[1 - axis] - a[1 - axis])
                clipped.append((bound, other) if axis == 0 else (other, bound))
            if b_in:
                clipped.append(b)
        result = clipped
    return result


def _coco_mask(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    if isinstance(segmentation, list) and segmentation:
        canvas = Image.new("1", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) % 2:
                raise ValueError("a polygon must be a list of x, y pairs")
            values = [float(v) for v in polygon]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"a polygon vertex is not a finite number: {polygon}")
            # Vertices within one image size of the image are drawn as given.
            around = (-width, -height, 2 * width, 2 * height)
            points = clip_polygon(list(zip(values[::2], values[1::2], strict=True)), around)
            if len(points) >= 3:
                draw.polygon(points, fill=1, outline=1)
        return np.asarray(canvas, dtype=bool)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        h, w = (int(v) for v in segmentation.get("size", (height, width)))
        if (h, w) != (height, width):
            raise ValueError(f"RLE size {w}x{h} differs from the image's {width}x{height}")
        return decode_rle(segmentation["counts"], height, width)
    return None


def _in_id_order(ids: Iterable[Any]) -> list[Any]:
    try:
        return sorted(ids)
    except TypeError:  # ids of mixed types: keep the file's order
        return list(ids)


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return str(exc)


def read_coco(annotations: str | os.PathLike[str], images: str | os.PathLike[str]) -> Dataset:
    """COCO-style JSON: ``images``, ``annotations`` (``bbox`` as x, y, w, h; ``segmentation``
    as polygons or RLE, see :mod:`gradcam.evaluate.coco`) and ``categories`` (ids mapped to
    indices in id order).

    An image whose entry or annotations are bad (a missing field, an unknown category, a
    truncated RLE string, a size above Pillow's decompression-bomb limit...) is left out and
    reported in :attr:`Dataset.problems`; its masks are never allocated.

    Raises:
        DatasetError: naming the file when it is missing, not JSON, or has no ``images``
            and ``categories`` lists.
    """
    path = Path(annotations)
    try:
        data = json.loads(_text(path, "annotation file"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not a JSON file ({exc})") from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("images"), list)
        and isinstance(data.get("categories"), list)
    ):
        raise DatasetError(f"{path}: not a COCO annotation file (needs 'images' and 'categories')")
    try:
        categories = sorted(data["categories"], key=lambda c: c["id"])
        names = [str(c["name"]) for c in categories]
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: bad 'categories' ({_reason(exc)})") from None
    index = {c["id"]: i for i, c in enumerate(categories)}
    info: dict[Any, dict[str, Any]] = {}
    bad: dict[Any, str] = {}
    problems = []
    for number, img in enumerate(data["images"], start=1):
        try:
            image_id, file_name = img["id"], str(img["file_name"])
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{path}: image entry {number}: {_reason(exc)}")
            continue
        info[image_id] = {"file_name": file_name, "width": width, "height": height}
        refused = _too_many_pixels(width, height)
        if refused is not None:
            bad[image_id] = f"{path}: image {file_name!r}: {refused}"
    by_image: dict[Any, list[Annotation]] = {i: [] for i in info}
    annotation_list = data.get("annotations", [])
    if not isinstance(annotation_list, list):
        raise DatasetError(f"{path}: 'annotations' is not a list")
    for number, ann in enumerate(annotation_list, start=1):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in info:
            problems.append(f"{path}: annotation {number} names no image of 'images'")
            continue
        if image_id in bad:
            continue
        img = info[image_id]
        try:
            if ann["category_id"] not in index:
                raise ValueError(f"unknown category_id {ann['category_id']!r}")
            box = box_from_bbox(ann["bbox"]) if ann.get("bbox") else None
            mask = _coco_mask(ann.get("segmentation"), img["height"], img["width"])
        except (KeyError, TypeError, ValueError) as exc:
            bad[image_id] = f"{path}: image {img['file_name']!r}: annotation {number}: " + _reason(
                exc
            )
            continue
        by_image[image_id].append(
            Annotation(index[ann["category_id"]], box, mask, bool(ann.get("iscrowd", 0)))
        )
    problems += bad.values()
    candidates = []
    for image_id in _in_id_order(info):
        if image_id in bad:
            continue
        img, found = info[image_id], by_image[image_id]
        candidates.append(
            Sample(
                Path(images) / img["file_name"],
                tuple(sorted({a.class_id for a in found})),
                tuple(found),
                (img["width"], img["height"]),
            )
        )
    identity = _identity("coco", images, annotations=str(path.resolve()))
    return _finish(path.stem, names, candidates, problems, identity)


# ---------------------------------------------------------------------------------------------
# The synthetic benchmark

_BENCHMARK = "gradcam synthetic shapes benchmark"


def _benchmark_settings(count: int, seed: int, size: int) -> dict[str, Any]:
    from gradcam.synthetic.scenes import SCENES_VERSION

    return {"count": count, "seed": seed, "size": size, "generator": SCENES_VERSION}


def write_benchmark(
    folder: str | os.PathLike[str], count: int, *, seed: int = 0, size: int = 128
) -> Path:
    """Write ``count`` one-object scenes and their COCO annotations; return the JSON's path.

    The images go to ``folder/images/NNNNNN.png``; ``folder/annotations.json`` has
    ``images``, ``categories`` (``id`` = index in :data:`~gradcam.synthetic.SHAPES`,
    ``name`` = shape) and ``annotations`` with ``bbox`` ``[x, y, w, h]`` (COCO's convention,
    so the inclusive box ``(x0, y0, x1, y1)`` has ``w = x1 - x0 + 1``), ``area`` (visible
    pixels), ``iscrowd`` 0, the object's ``color``, and ``segmentation`` as uncompressed RLE
    (:func:`gradcam.evaluate.coco.encode_rle`). Its ``info`` records the settings (count,
    seed, size and the drawing code's :data:`~gradcam.synthetic.SCENES_VERSION`), which
    :func:`read_synthetic` checks. Shapes are balanced
    (:func:`~gradcam.synthetic.benchmark_label`). The same arguments always write the same
    bytes.

    Examples:
        >>> path = write_benchmark("bench", 16, seed=0)
        >>> data = read_coco(path, path.parent / "images")
        >>> data.class_names[:3]
        ('circle', 'square', 'triangle')
    """
    from gradcam.synthetic.scenes import SHAPES, benchmark_scene

    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    root = Path(folder)
    images_folder = root / "images"
    images_folder.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(count):
        scene = benchmark_scene(index, seed, size)
        name = f"{index:06d}.png"
        scene.image.save(images_folder / name, format="PNG")
        images.append({"id": index + 1, "file_name": name, "width": size, "height": size})
        for obj in scene.objects:
            annotations.append(
                {
                    # COCO tools use id 0 to mean "unmatched", so ids start at 1.
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": SHAPES.index(obj.shape),
                    "bbox": coco_bbox(obj.box),
                    "area": obj.area,
                    "iscrowd": 0,
                    "color": obj.color,
                    "segmentation": encode_rle(obj.mask),
                }
            )
    categories = [{"id": i, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPES)]
    info = {"description": _BENCHMARK, **_benchmark_settings(count, seed, size)}
    return write_coco(root / "annotations.json", images, categories, annotations, info)


def _written(annotations: Path) -> dict[str, Any] | None:
    """The ``info`` and image names of a benchmark folder; ``None`` when there is none yet.

    Raises:
        DatasetError: when the folder holds an annotation file that is not a benchmark's.
    """
    if not annotations.exists():
        return None
    try:
        data = json.loads(annotations.read_text())
        info = dict(data["info"])
        names = [str(i["file_name"]) for i in data["images"]]
    except (OSError, ValueError, KeyError, TypeError):
        info, names = {}, []
    if info.get("description") != _BENCHMARK:
        raise DatasetError(
            f"{annotations}: not a synthetic benchmark written by gradcam; generate the "
            "benchmark in another folder"
        )
    return {**info, "file_names": names}


def read_synthetic(
    folder: str | os.PathLike[str],
    count: int = SYNTHETIC_IMAGES,
    *,
    seed: int = 0,
    size: int = 128,
) -> Dataset:
    """The synthetic shapes benchmark: ``count`` generated photos of one shape each on a
    textured background, with exact boxes and masks, for the shipped ``"shapes"`` model.

    The images and their COCO annotations are written to ``folder`` by
    :func:`write_benchmark` the first time and read back with :func:`read_coco`. The folder
    records its settings (count, seed, image size, drawing code version): a folder written
    with other settings, or missing some of its images, is written again (the same settings
    always give the same files), so it never serves another seed's images.

    Raises:
        DatasetError: when ``folder`` holds an ``annotations.json`` that is not a
            benchmark's (it is never overwritten), or ``count`` is below 1.

    Examples:
        >>> dataset = read_synthetic("bench", 100)
        >>> dataset.class_names[0], len(dataset.samples), dataset.identity["seed"]
        ('circle', 100, 0)
    """
    if count < 1:
        raise DatasetError(
            f"the synthetic benchmark needs at least 1 image (--synthetic-images), got {count}"
        )
    root = Path(folder)
    annotations = root / "annotations.json"
    wanted = _benchmark_settings(count, seed, size)
    written = _written(annotations)
    fresh = (
        written is not None
        and all(written.get(k) == v for k, v in wanted.items())
        and all((root / "images" / name).is_file() for name in written["file_names"])
    )
    if not fresh:
        if written is not None:
            # Another seed's or count's images must not linger beside the new ones.
            for name in written["file_names"]:
                (root / "images" / Path(name).name).unlink(missing_ok=True)
        write_benchmark(root, count, seed=seed, size=size)
    dataset = read_coco(annotations, root / "images")
    identity = _identity("synthetic", root, **wanted)
    return replace(
        dataset,
        name=f"synthetic-shapes-{seed}-{count}",
        identity={**identity, "count": len(dataset.samples)},
    )


# ---------------------------------------------------------------------------------------------
# The volumetric and video benchmarks

_BENCHMARK_ND = "gradcam synthetic {} benchmark"
#: How many samples of the volumetric or video benchmark a folder may hold: a volume's
#: annotations (a 32^3 mask) are held in memory for the whole run.
MAX_ND_SAMPLES = 20_000


def read_array(path: str | os.PathLike[str]) -> np.ndarray:
    """The input array of a ``.npz`` sample (its ``input`` entry: float32 (C, *spatial)).

    Raises:
        DatasetError: the file is missing or holds no finite float ``input`` array.

    Examples:
        >>> data = read_synthetic_nd("clips", "bench-clips", 4)
        >>> read_array(data.samples[0].path).shape
        (1, 8, 32, 32)
    """
    try:
        with np.load(Path(path), allow_pickle=False) as archive:
            array = np.asarray(archive["input"], dtype=np.float32)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such sample file") from None
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: not a sample array ({_reason(exc)})") from None
    if array.ndim < 2 or not np.isfinite(array).all():
        raise DatasetError(f"{path}: the input is not a finite (C, *spatial) array")
    return array


def _npz_writer(array: np.ndarray, mask: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, input=array, mask=mask)

    return write


def _nd_generator(kind: str) -> tuple[tuple[str, ...], int, Any]:
    """The class names, drawing-code version and ``index, seed -> (array, class, mask, box)``
    of a benchmark kind."""
    if kind == "volumes":
        from gradcam.synthetic import volumes

        def volume(index: int, seed: int) -> tuple[np.ndarray, int, np.ndarray, Box]:
            v = volumes.benchmark_volume(index, seed)
            return v.array, volumes.SOLIDS.index(v.solid), v.mask, v.box

        return volumes.SOLIDS, volumes.VOLUMES_VERSION, volume
    if kind == "clips":
        from gradcam.synthetic import clips

        def clip(index: int, seed: int) -> tuple[np.ndarray, int, np.ndarray, Box]:
            c = clips.benchmark_clip(index, seed)
            return c.array, clips.DIRECTIONS.index(c.direction), c.mask, c.box

        return clips.DIRECTIONS, clips.CLIPS_VERSION, clip
    raise DatasetError(f"unknown synthetic benchmark {kind!r}; choose from volumes, clips")


def read_synthetic_nd(
    kind: str, folder: str | os.PathLike[str], count: int = SYNTHETIC_IMAGES, *, seed: int = 0
) -> Dataset:
    """The volumetric (``kind="volumes"``) or video (``"clips"``) benchmark: ``count``
    generated samples with exact 3-D boxes and masks, for the shipped ``"shapes3d"`` and
    ``"motion"`` models (:mod:`gradcam.synthetic.model3d`).

    Volumes (:func:`gradcam.synthetic.volumes.benchmark_volume`) hold one solid each; the
    class is the solid, the box ``(x0, y0, z0, x1, y1, z1)`` and the (D, H, W) mask its
    voxels. Clips (:func:`gradcam.synthetic.clips.benchmark_clip`) hold a moving and a static
    square; the class is the direction of motion, the mask the moving square's pixels in
    each frame (T, H, W) and the box ``(x0, y0, t0, x1, y1, t1)``. Classes are balanced.

    The samples are written to ``folder/samples/NNNNNN.npz`` (``input``: float32 (1,
    *spatial); ``mask``: bool) with ``folder/annotations.json`` (settings, class names, and
    each sample's class and box) the first time; a folder written with other settings is
    written again, so it never serves another seed's samples.

    Raises:
        DatasetError: an unknown ``kind``, ``count`` below 1 or above
            :data:`MAX_ND_SAMPLES`, or a folder holding an ``annotations.json`` that is not
            this benchmark's (it is never overwritten).

    Examples:
        >>> data = read_synthetic_nd("volumes", "bench-volumes", 4)
        >>> data.class_names, data.rank, data.samples[0].annotations[0].mask.shape
        (('sphere', 'cube', 'cylinder', 'torus'), 3, (32, 32, 32))
    """
    names, version, draw = _nd_generator(kind)
    if not 1 <= count <= MAX_ND_SAMPLES:
        raise DatasetError(
            f"the synthetic {kind} benchmark needs 1 to {MAX_ND_SAMPLES} samples "
            f"(--synthetic-images), got {count}"
        )
    root = Path(folder)
    path = root / "annotations.json"
    description = _BENCHMARK_ND.format(kind)
    wanted = {"count": count, "seed": seed, "generator": version}
    data: dict[str, Any] | None = None
    if path.exists():
        try:
            data = json.loads(path.read_text())
            found = dict(data["info"])  # type: ignore[index]
        except (OSError, ValueError, KeyError, TypeError):
            found = {}
        if found.get("description") != description:
            raise DatasetError(
                f"{path}: not a synthetic {kind} benchmark written by gradcam; generate the "
                "benchmark in another folder"
            )
        files = [root / "samples" / str(s["file"]) for s in data["samples"]]  # type: ignore[index]
        if any(found.get(k) != v for k, v in wanted.items()) or not all(f.is_file() for f in files):
            for f in files:
                f.unlink(missing_ok=True)
            data = None
    if data is None:
        (root / "samples").mkdir(parents=True, exist_ok=True)
        entries = []
        for index in range(count):
            array, class_id, mask, box = draw(index, seed)
            name = f"{index:06d}.npz"
            write_atomic(root / "samples" / name, _npz_writer(array, mask))
            entries.append({"file": name, "class": class_id, "box": list(box)})
        data = {
            "info": {"description": description, **wanted},
            "classes": list(names),
            "samples": entries,
        }
        # Written last: a folder with annotations holds all of its samples.
        write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data)))
    samples = []
    for entry in data["samples"]:
        file = root / "samples" / str(entry["file"])
        with np.load(file, allow_pickle=False) as archive:
            mask = np.asarray(archive["mask"], dtype=bool)
        class_id = int(entry["class"])
        box = tuple(int(v) for v in entry["box"])
        samples.append(Sample(file, (class_id,), (Annotation(class_id, box, mask),)))
    identity = _identity(f"synthetic-{kind}", root, **{**wanted, "count": len(samples)})
    return Dataset(f"synthetic-{kind}-{seed}-{count}", tuple(names), samples, [], identity, 3)


# ---------------------------------------------------------------------------------------------
# Detection


def open_dataset(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    labels: str | os.PathLike[str] | None = None,
    boxes: str | os.PathLike[str] | None = None,
    annotations: str | os.PathLike[str] | None = None,
    split: str = "val",
    classes: Sequence[str] | None = None,
    count: int = SYNTHETIC_IMAGES,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    annotated: bool = False,
) -> Dataset:
    """Open a dataset, detecting its layout (what ``gradcam evaluate --data`` reads).

    With ``format="auto"``, the first that applies:

    1. ``annotations`` given: COCO (:func:`read_coco`; ``path`` is the images folder);
    2. ``path`` is ``"synthetic"``: the generated shapes benchmark (:func:`read_synthetic`,
       ``count`` images of ``seed``, written under ``workdir``, default ``gradcam_eval``);
    3. ``path`` is ``"synthetic-volumes"`` or ``"synthetic-clips"``: the volumetric or video
       benchmark (:func:`read_synthetic_nd`, for the shipped ``"shapes3d"`` and ``"motion"``
       models), written under ``workdir`` likewise;
    4. ``path`` is ``"photos"``: the real photos shipped with scikit-image and matplotlib
       (:func:`read_photos`; ``annotated`` keeps those with hand-drawn boxes);
    5. ``labels`` given, ``path`` holds the ILSVRC CLS-LOC release (``ILSVRC/Data/CLS-LOC``),
       or ``boxes`` given: ImageNet (:func:`read_imagenet`);
    6. ``path/ImageSets`` exists: PASCAL VOC (:func:`read_voc`, ``split``);
    7. ``path/annotations.json`` beside ``path/images``: COCO (as the benchmark is written);
    8. otherwise a plain folder of images (:func:`read_folder`).

    Any other ``format`` (see :data:`DATASET_FORMATS`) skips the detection.

    Raises:
        DatasetError: naming what is missing (the folder, the file a format needs) or what
            cannot be read, or an unknown ``format``.

    Examples:
        >>> open_dataset("synthetic", count=8, workdir="runs").identity["seed"]
        0
        >>> open_dataset("runs/synthetic-0-8").identity["format"]  # the folder it wrote
        'coco'
    """
    if format not in DATASET_FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; choose from {DATASET_FORMATS}")
    name = os.fspath(path)
    root = Path(name)
    kind = format
    if kind == "auto":
        if annotations is not None:
            kind = "coco"
        elif name in ("synthetic", "synthetic-volumes", "synthetic-clips", "photos"):
            kind = name
        elif labels is not None or boxes is not None or _ilsvrc_folders(root, split):
            kind = "imagenet"
        elif (root / "ImageSets").is_dir():
            kind = "voc"
        elif (root / "annotations.json").is_file() and (root / "images").is_dir():
            kind, annotations, root = "coco", root / "annotations.json", root / "images"
        else:
            kind = "folder"
    if kind == "synthetic":
        folder = Path(workdir or "gradcam_eval") / f"synthetic-{seed}-{count}"
        return read_synthetic(folder, count, seed=seed)
    if kind in ("synthetic-volumes", "synthetic-clips"):
        folder = Path(workdir or "gradcam_eval") / f"{kind}-{seed}-{count}"
        return read_synthetic_nd(kind.removeprefix("synthetic-"), folder, count, seed=seed)
    if kind == "photos":
        return read_photos(annotated=annotated)
    if kind not in ("coco", "imagenet") and not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if kind == "coco":
        if annotations is None:
            raise DatasetError("--format coco needs --annotations FILE (annotations= in Python)")
        return read_coco(annotations, root)
    if kind == "imagenet":
        return read_imagenet(root, labels, boxes, classes, split=split)
    if kind == "voc":
        return read_voc(root, split) if classes is None else read_voc(root, split, classes)
    return read_folder(root)
