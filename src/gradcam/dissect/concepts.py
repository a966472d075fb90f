"""Concept data for Network Dissection: images whose pixels are labelled with named concepts.

A :class:`ConceptSet` gives, for each image, the photo and its label maps: one (H, W) integer
map per annotated category layer, each pixel holding a concept id (``0``: no concept).
Concept ``i`` is ``concepts[i - 1]``.

Two sources:

* :func:`read_broden`: the Broden dataset of Bau et al. (2017) in its own layout, so a user who
  has Broden gets the names the paper used (section 7);
* :func:`generated_concepts`: a small offline stand-in with exact masks, made here: colours
  (Broden's colour names), textures (scikit-image's brick, grass and gravel photos, and
  procedural stripes, checks and dots) and the shapes of :mod:`gradcam.synthetic`. It is not
  Broden: it names what a network trained on :mod:`gradcam.synthetic` scenes can know.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from gradcam.errors import GradCAMError, ImageLoadError
from gradcam.images import MAX_PIXELS, load_image
from gradcam.synthetic.scenes import COLORS, SHAPES, shape_mask

__all__ = [
    "BRODEN_COLORS",
    "MAX_CONCEPT_PIXELS",
    "MAX_GENERATED_SIZE",
    "TEXTURES",
    "Concept",
    "ConceptError",
    "ConceptImage",
    "ConceptSet",
    "decode_labels",
    "generated_concepts",
    "read_broden",
    "read_concepts",
    "read_mask",
]


#: The largest side of a generated concept image (the default is 128): the set is a small
#: stand-in, and its label maps and the layer's maps grow with the square of the side.
MAX_GENERATED_SIZE = 1024
#: The most pixels of a Broden label map (an ``sh`` x ``sw`` size cell, or a mask file) and
#: of a decoded photo (larger photos are decoded at reduced size, as by ``gradcam explain``):
#: Broden's own are 112 x 112 and 224 x 224.
MAX_CONCEPT_PIXELS = MAX_PIXELS
#: The image modes a Broden mask may have: its labels are ``R + 256 * G`` of RGB pixels (a
#: palette's colours are RGB too); a grayscale mask has no such labels.
_MASK_MODES = ("RGB", "RGBA", "P")


class ConceptError(GradCAMError):
    """A concept folder cannot be read: missing, empty or malformed files."""


@dataclass(frozen=True)
class Concept:
    """A named concept and its category (``"color"``, ``"texture"``, ``"object"``, ...)."""

    name: str
    category: str


@dataclass(frozen=True)
class ConceptImage:
    """One image of a concept set with its label maps.

    Attributes:
        image: the RGB photo.
        layers: ``(category index, labels)`` pairs; ``labels`` is an (H, W) integer map of
            concept ids (0: none) at the segmentation's resolution, which may be smaller than
            the photo's (Broden's masks are half size).
    """

    image: Image.Image
    layers: tuple[tuple[int, np.ndarray], ...]


@dataclass(frozen=True)
class ConceptSet:
    """Images labelled with concepts, read lazily.

    Attributes:
        source: where the set came from (a folder, or ``"generated:<count>:<size>:<seed>"``).
        concepts: concept ``i`` (ids from 1) is ``concepts[i - 1]``.
        categories: the category names; a concept's ``category`` is one of them.
        length: the number of images.
        load: ``load(i)`` reads image ``i`` with its label maps.
        load_image: ``load_image(i)`` reads only the photo (faster where labels are separate
            files, as in Broden); ``None``: through ``load``.
        portable: made by :func:`read_broden` or :func:`generated_concepts`, so that ``source``
            (and ``length``) say how to make it again: it is pickled as them and remade in a
            worker process (its readers are closures, which pickle cannot carry). A set built
            by hand is not, and pickles as its fields.

    Examples:
        >>> concepts = generated_concepts(4, size=64)
        >>> len(concepts), concepts.concepts[0]
        (4, Concept(name='black', category='color'))
    """

    source: str
    concepts: tuple[Concept, ...]
    categories: tuple[str, ...]
    length: int
    load: Callable[[int], ConceptImage] = field(repr=False, compare=False)
    load_image: Callable[[int], Image.Image] | None = field(default=None, repr=False, compare=False)
    portable: bool = field(default=False, repr=False, compare=False)

    def __reduce_ex__(self, protocol: typing.SupportsIndex) -> str | tuple[typing.Any, ...]:
        if self.portable:
            return _remade, (self.source, self.length)
        return super().__reduce_ex__(protocol)

    def __len__(self) -> int:
        return self.length

    def image(self, index: int) -> Image.Image:
        """The photo of image ``index``, without its labels."""
        if self.load_image is None:
            return self[index].image
        if not 0 <= index < self.length:
            raise IndexError(f"concept image {index} out of range (0..{self.length - 1})")
        return self.load_image(index)

    def __getitem__(self, index: int) -> ConceptImage:
        if not 0 <= index < self.length:
            raise IndexError(f"concept image {index} out of range (0..{self.length - 1})")
        return self.load(index)

    def category_of(self) -> np.ndarray:
        """(N + 1,) the category index of each concept id (id 0: -1)."""
        index = {name: i for i, name in enumerate(self.categories)}
        return np.array([-1] + [index[c.category] for c in self.concepts], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Broden


def decode_labels(mask: Image.Image) -> np.ndarray:
    """Broden's colour-coded label image to label numbers: ``label = R + 256 * G``.

    Examples:
        >>> decode_labels(Image.new("RGB", (2, 1), (4, 1, 0)))
        array([[260, 260]])
    """
    rgb = np.asarray(mask.convert("RGB"), dtype=np.int64)
    labels: np.ndarray = rgb[..., 0] + 256 * rgb[..., 1]
    return labels


def read_mask(path: Path) -> np.ndarray:
    """A Broden mask file's label numbers (:func:`decode_labels`), its size checked before
    it is decoded.

    Raises:
        ConceptError: naming the file: missing or unreadable, more than
            :data:`MAX_CONCEPT_PIXELS` pixels (or a decompression bomb), or not an RGB image.

    Examples:
        >>> Image.new("L", (4, 4), 7).save("gray.png")
        >>> read_mask(Path("gray.png"))
        Traceback (most recent call last):
        ...
        gradcam.dissect.concepts.ConceptError: gray.png: a Broden mask must be an RGB ... mode L
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as mask:  # reads the header only
                width, height = mask.size
                if width * height > MAX_CONCEPT_PIXELS:
                    raise ConceptError(
                        f"{path}: mask of {width}x{height} pixels, more than the "
                        f"{MAX_CONCEPT_PIXELS} a Broden mask may have"
                    )
                if mask.mode not in _MASK_MODES:
                    raise ConceptError(
                        f"{path}: a Broden mask must be an RGB image (label = R + 256 * G), "
                        f"got mode {mask.mode}"
                    )
                return decode_labels(mask)
    except ConceptError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConceptError(f"{path}: mask too large to decode safely") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConceptError(f"{path}: unreadable mask ({exc})") from None


_FIXED = ("image", "split", "ih", "iw", "sh", "sw")
_COUNT = re.compile(r"^\s*([A-Za-z_]+)\s*\((\d+)\)\s*$")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ConceptError(f"{path.parent} is not a Broden folder: {path.name} is missing")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConceptError(f"{path}: unreadable CSV ({exc})") from None


def _primary_category(text: str, known: Sequence[str]) -> str | None:
    """``"object(8812);part(12)"`` -> ``"object"``: the category that labels it most often."""
    best: tuple[int, str] | None = None
    for item in text.split(";"):
        match = _COUNT.match(item)
        name, count = (match.group(1), int(match.group(2))) if match else (item.strip(), 0)
        if name in known and (best is None or count > best[0]):
            best = (count, name)
    return None if best is None else best[1]


def _label_size(index_csv: Path, number: int, row: dict[str, str]) -> tuple[int, int]:
    """``(sh, sw)`` of a row of ``index.csv``: positive integers, at most
    :data:`MAX_CONCEPT_PIXELS` pixels."""
    cells = (row.get("sh"), row.get("sw"))
    try:
        height, width = (int(cell or "") for cell in cells)
    except ValueError:
        raise ConceptError(
            f"{index_csv}: row {number + 1}: sh, sw must be integers, got {cells[0]!r}, "
            f"{cells[1]!r}"
        ) from None
    if height < 1 or width < 1 or height * width > MAX_CONCEPT_PIXELS:
        raise ConceptError(
            f"{index_csv}: row {number + 1}: label size {height}x{width} must be positive and "
            f"at most {MAX_CONCEPT_PIXELS} pixels"
        )
    return height, width


def _broden_labels(folder: Path, categories: tuple[str, ...]) -> tuple[list[int], list[Concept]]:
    """The labels of ``label.csv`` that a category column uses: their numbers and concepts
    (each in its primary category, else the first ``c_<category>.csv`` listing it)."""
    labels = _read_csv(folder / "label.csv")
    members: dict[int, str] = {}
    for category in categories:
        path = folder / f"c_{category}.csv"
        if path.is_file():
            for row in _read_csv(path):
                code = row.get("number") or ""
                if not code.strip().isdigit():
                    raise ConceptError(f"{path}: a row without a label number")
                members.setdefault(int(code), category)
    numbers: list[int] = []
    concepts: list[Concept] = []
    for row in labels:
        try:
            number = int(row["number"])
        except (KeyError, TypeError, ValueError):
            raise ConceptError(f"{folder / 'label.csv'}: a row without a label number") from None
        if number == 0:
            continue  # "-": unlabelled
        primary = _primary_category(row.get("category") or "", categories)
        primary = primary or members.get(number)
        if primary is None:
            continue  # a label no category column uses
        numbers.append(number)
        concepts.append(Concept(row.get("name") or str(number), primary))
    if not concepts:
        raise ConceptError(f"{folder / 'label.csv'} names no label of {', '.join(categories)}")
    return numbers, concepts


def read_broden(root: str | Path) -> ConceptSet:
    """Read a Broden folder (``index.csv``, ``label.csv``, ``c_<category>.csv``, ``images/``).

    ``index.csv`` has the columns ``image, split, ih, iw, sh, sw`` then one per category; a
    category cell lists, separated by ``;``, mask images (relative to ``images/``, decoded by
    :func:`decode_labels`) or, for whole-image categories like ``scene`` and ``texture``, label
    numbers (a whole-image label covers every pixel). ``label.csv`` (``number, name, category,
    ...``) names each label; its category is the one counted most often in its ``category``
    cell (``object(8812);part(12)``), as NetDissect does, or else the first ``c_<category>.csv``
    that lists it.

    Photos larger than :data:`MAX_CONCEPT_PIXELS` are decoded at reduced size
    (:func:`gradcam.images.load_image`); label maps are capped at that many pixels: a larger
    ``sh`` x ``sw`` cell is refused when the folder is read, a larger mask file (or a
    decompression bomb, or a mask that is not RGB) when its image is (:func:`read_mask`).

    Raises:
        ConceptError: a missing folder or file, an index without images, a malformed row,
            a label size that is not a positive integer pair of at most
            :data:`MAX_CONCEPT_PIXELS` pixels; naming the file.

    Examples:
        A one-image folder: a color mask (label 1 on every pixel) and a whole-image texture.

        >>> images = Path("broden", "images")
        >>> images.mkdir(parents=True)
        >>> Image.new("RGB", (8, 8), "red").save(images / "a.jpg")
        >>> Image.new("RGB", (4, 4), (1, 0, 0)).save(images / "a_color.png")
        >>> _ = Path("broden", "index.csv").write_text(
        ...     "image,split,ih,iw,sh,sw,color,texture\\na.jpg,train,8,8,4,4,a_color.png,12\\n")
        >>> _ = Path("broden", "label.csv").write_text(
        ...     "number,name,category\\n1,red-c,color(1)\\n12,striped,texture(1)\\n")
        >>> concepts = read_broden("broden")
        >>> [c.name for c in concepts.concepts], len(concepts)
        (['red-c', 'striped'], 1)
        >>> [(concepts.categories[c], ids.shape, int(ids[0, 0])) for c, ids in concepts[0].layers]
        [('color', (4, 4), 1), ('texture', (4, 4), 2)]

        The masks keep their ``sh x sw`` size; a pixel holds a concept id, ``i + 1`` for
        ``concepts.concepts[i]`` (0: unlabelled).
    """
    folder = Path(root)
    if not folder.is_dir():
        raise ConceptError(f"concept folder {folder}: no such folder")
    rows = _read_csv(folder / "index.csv")
    if not rows:
        raise ConceptError(f"{folder / 'index.csv'} lists no images")
    header = list(rows[0])
    if tuple(header[: len(_FIXED)]) != _FIXED:
        raise ConceptError(
            f"{folder / 'index.csv'}: expected the columns {', '.join(_FIXED)} first, got "
            f"{', '.join(header[: len(_FIXED)])}"
        )
    categories = tuple(header[len(_FIXED) :])
    if not categories:
        raise ConceptError(f"{folder / 'index.csv'} has no category columns")
    # Every row's label-map size, checked before any map of that size is allocated.
    sizes = [_label_size(folder / "index.csv", i, row) for i, row in enumerate(rows)]
    numbers, concepts = _broden_labels(folder, categories)
    # Ids in the smallest integer type that holds them (uint16 for Broden's 1197 labels).
    lookup = np.zeros(max(numbers) + 1, dtype=np.min_scalar_type(len(numbers)))
    lookup[numbers] = np.arange(1, len(numbers) + 1)
    images = folder / "images"

    def to_ids(values: np.ndarray) -> np.ndarray:
        # Labels unknown to label.csv count as unlabelled.
        inside = values < lookup.shape[0]
        ids: np.ndarray = np.where(inside, lookup[np.where(inside, values, 0)], 0)
        return ids

    def read_photo(index: int) -> Image.Image:
        row = rows[index]
        try:
            # Decoded under the pixel cap: the model sees it at its input size anyway.
            return load_image(images / (row.get("image") or ""), max_pixels=MAX_CONCEPT_PIXELS)
        except ImageLoadError as exc:
            raise ConceptError(f"{folder}: image {index}: {exc}") from None

    def load(index: int) -> ConceptImage:
        row = rows[index]
        photo = read_photo(index)
        layers = []
        for c, category in enumerate(categories):
            for item in filter(None, (row.get(category) or "").split(";")):
                if item.strip().isdigit():
                    layers.append((c, to_ids(np.full(sizes[index], int(item), dtype=np.int64))))
                else:
                    try:
                        layers.append((c, to_ids(read_mask(images / item))))
                    except ConceptError as exc:
                        raise ConceptError(f"image {index}: {exc}") from None
        return ConceptImage(photo, tuple(layers))

    return ConceptSet(
        str(folder), tuple(concepts), categories, len(rows), load, read_photo, portable=True
    )


# ---------------------------------------------------------------------------------------------
# The generated stand-in

BRODEN_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "blue": COLORS["blue"],
    "brown": (125, 75, 35),
    "green": COLORS["green"],
    "grey": (128, 128, 128),
    "orange": COLORS["orange"],
    "pink": (250, 150, 190),
    "purple": COLORS["purple"],
    "red": COLORS["red"],
    "white": COLORS["white"],
    "yellow": COLORS["yellow"],
}
"""Broden's eleven colour names (its labels ``black-c`` ... ``yellow-c``), as 8-bit RGB; those
shared with :data:`gradcam.synthetic.COLORS` keep its values."""

_PHOTO_TEXTURES = ("brick", "grass", "gravel")  # scikit-image's data folder
TEXTURES: tuple[str, ...] = ("striped", "chequered", "dotted", *_PHOTO_TEXTURES)
"""The textures of the generated set: three procedural ones (named as in the Describable
Textures Dataset, Broden's texture source) and three photos shipped with scikit-image."""


def _skimage_photos() -> dict[str, np.ndarray]:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return {}
    folder = Path(spec.origin).parent / "data"
    photos = {}
    for name in _PHOTO_TEXTURES:
        path = folder / f"{name}.png"
        if path.is_file():
            photos[name] = np.asarray(Image.open(path).convert("RGB"))
    return photos


def _procedural(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0.0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    period = rng.uniform(6.0, 16.0)
    if kind == "striped":
        on = np.floor(u / period) % 2 == 0
    elif kind == "chequered":
        on = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    else:  # dotted: a grid of disks
        du = (u / period) % 1.0 - 0.5
        dv = (v / period) % 1.0 - 0.5
        on = np.hypot(du, dv) < 0.25
    # Grey levels only, so that a texture never reads as one of the colours.
    dark, light = rng.uniform(20, 100), rng.uniform(160, 240)
    grey = np.where(on, light, dark)
    pixels: np.ndarray = np.repeat(grey[..., None], 3, axis=2)
    return pixels


def _photo_patch(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    side = int(rng.integers(size, min(photo.shape[:2]) + 1))
    y = int(rng.integers(0, photo.shape[0] - side + 1))
    x = int(rng.integers(0, photo.shape[1] - side + 1))
    crop = Image.fromarray(photo[y : y + side, x : x + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)


def generated_concepts(count: int = 400, *, size: int = 128, seed: int = 0) -> ConceptSet:
    """A small offline concept set with exact masks (a stand-in for Broden, not Broden).

    Image ``i`` (drawn from ``numpy.random.default_rng((seed, i))``) is one to three shapes of
    :data:`gradcam.synthetic.SHAPES`, each in one of the :data:`BRODEN_COLORS` and 18% to 40%
    of the image wide (later ones on top), on a background that is either a texture of
    :data:`TEXTURES` or a flat colour that no shape has. Its label maps, at the image's size:
    ``shape`` (each visible shape's pixels), ``color`` (the same pixels by the shape's colour,
    and the background's when it is flat) and ``texture`` (the background's when textured).
    Colour and shape are drawn independently, so a shape detector and a colour detector are
    told apart. The shapes are small, as Broden's objects mostly are: a unit's mask covers
    0.5% of the pixels, so a concept that covers most of an image could never reach a high IoU.
    Without scikit-image installed, the three photo textures are left out (with a warning).

    Args:
        count: the number of images.
        size: their side in pixels, 16 to :data:`MAX_GENERATED_SIZE`.
        seed: the generator seed; a seed always gives the same set.

    Raises:
        ConceptError: ``count`` below 1, or ``size`` outside 16 to :data:`MAX_GENERATED_SIZE`.

    Examples:
        >>> concepts = generated_concepts(8, size=64)
        >>> sample = concepts[0]
        >>> sample.image.size, [concepts.categories[c] for c, _ in sample.layers]
        ((64, 64), ['shape', 'color', 'color'])
    """
    if count < 1:
        raise ConceptError(f"the generated concept set needs at least 1 image, got {count}")
    if not 16 <= size <= MAX_GENERATED_SIZE:
        raise ConceptError(
            f"generated concept images must be 16 px to {MAX_GENERATED_SIZE} px a side, got {size}"
        )
    photos = _skimage_photos()
    textures = tuple(t for t in TEXTURES if t not in _PHOTO_TEXTURES or t in photos)
    if len(textures) < len(TEXTURES):
        warnings.warn(
            "scikit-image's texture photos are not installed: the generated concept set has no "
            "brick, grass or gravel (pip install scikit-image)",
            UserWarning,
            stacklevel=2,
        )
    colors = tuple(BRODEN_COLORS)
    categories = ("color", "texture", "shape")
    concepts = (
        *(Concept(c, "color") for c in colors),
        *(Concept(t, "texture") for t in textures),
        *(Concept(s, "shape") for s in SHAPES),
    )
    color_id = {c: i + 1 for i, c in enumerate(colors)}
    texture_id = {t: len(colors) + i + 1 for i, t in enumerate(textures)}
    shape_id = {s: len(colors) + len(textures) + i + 1 for i, s in enumerate(SHAPES)}

    ids = np.min_scalar_type(len(concepts))  # uint8: the smallest label maps

    def load(index: int) -> ConceptImage:
        rng = np.random.default_rng((seed, index))
        shape_labels = np.zeros((size, size), dtype=ids)
        color_labels = np.zeros((size, size), dtype=ids)
        paint = np.zeros((size, size, 3))
        used: set[str] = set()
        for _ in range(int(rng.integers(1, 4))):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = colors[int(rng.integers(len(colors)))]
            used.add(color)
            diameter = rng.uniform(0.18, 0.4) * size
            margin = diameter / 2 + 1
            center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
            mask = shape_mask(shape, center, diameter, rng.uniform(0.0, 360.0), (size, size))
            shape_labels[mask] = shape_id[shape]
            color_labels[mask] = color_id[color]
            paint[mask] = BRODEN_COLORS[color]
        inside = shape_labels > 0
        if rng.random() < 0.5:
            texture = textures[int(rng.integers(len(textures)))]
            pixels = (
                _photo_patch(photos[texture], rng, size)
                if texture in photos
                else _procedural(texture, rng, size)
            )
            back = (1, np.where(inside, ids.type(0), ids.type(texture_id[texture])))
        else:
            other = [c for c in colors if c not in used]
            backdrop = other[int(rng.integers(len(other)))]
            pixels = np.broadcast_to(np.asarray(BRODEN_COLORS[backdrop], float), (size, size, 3))
            back = (0, np.where(inside, ids.type(0), ids.type(color_id[backdrop])))
        pixels = np.where(inside[..., None], paint, pixels)
        photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        return ConceptImage(photo, ((2, shape_labels), (0, color_labels), back))

    source = f"generated:{count}:{size}:{seed}"
    return ConceptSet(source, concepts, categories, count, load, portable=True)


def _remade(source: str, length: int) -> ConceptSet:
    """A portable :class:`ConceptSet` made again from its ``source`` (a worker's copy), cut to
    its first ``length`` images."""
    if source.startswith("generated:"):
        count, size, seed = (int(v) for v in source.split(":")[1:])
        remade = generated_concepts(count, size=size, seed=seed)
    else:
        remade = read_broden(source)
    return remade if length == remade.length else replace(remade, length=length)


def read_concepts(path: str, *, count: int = 400, size: int = 128, seed: int = 0) -> ConceptSet:
    """A concept set by name: ``"generated"`` (:func:`generated_concepts` with ``count``,
    ``size`` and ``seed``) or a Broden folder (:func:`read_broden`).

    Examples:
        >>> read_concepts("generated", count=10).source
        'generated:10:128:0'
    """
    if path == "generated":
        return generated_concepts(count, size=size, seed=seed)
    return read_broden(path)
