"""Synthetic photos with exact ground truth: shapes pasted on procedurally textured backgrounds.

A scene is made in three steps, all driven by one ``numpy.random.Generator`` (never the global
RNG), so a seed always gives the same bytes:

1. a background: one or two blended textures (smooth noise, stripes, checker, gradient,
   speckle) with random muted colors, thin lines and small dots as clutter, and pixel noise;
2. objects: each shape is rasterized *without antialiasing* into a full-resolution mask with
   Pillow, at a random size, position (never clipped by the image border) and rotation;
3. compositing: each object's pixels are painted in its color (lightly shaded unless
   ``shading=False``) in order, so later objects occlude earlier ones.

Each :class:`SceneObject` keeps the mask of the pixels where it is *visible* in the final
image and the tight inclusive box of that mask. :func:`benchmark_scene` draws image ``i`` of
the localization benchmark, which :func:`gradcam.evaluate.datasets.write_benchmark` writes as
a COCO folder.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = [
    "COLORS",
    "SCENES_VERSION",
    "SHAPES",
    "Scene",
    "SceneObject",
    "benchmark_label",
    "benchmark_scene",
    "make_scene",
    "shape_mask",
]

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "crescent",
)
"""The shape names, in class-index order (the classes of :class:`~gradcam.synthetic.ShapeNet`)."""

COLORS: Mapping[str, tuple[int, int, int]] = types.MappingProxyType(
    {
        "red": (220, 30, 30),
        "green": (30, 170, 50),
        "blue": (30, 70, 225),
        "yellow": (245, 220, 30),
        "purple": (140, 50, 190),
        "orange": (250, 130, 20),
        "white": (250, 250, 250),
        "cyan": (30, 210, 225),
    }
)
"""Object colors by plain name, as 8-bit RGB (read-only)."""

SCENES_VERSION = 1
"""The version of the drawing code: bump it whenever a seed's scenes change, so that folders
written by an older version are regenerated (:func:`gradcam.evaluate.datasets.read_synthetic`)."""

_MIN_VISIBLE = 0.5  # with overlap allowed, each object keeps at least this part of its pixels
_GAP = 2  # without overlap, objects stay at least this many pixels apart
_ATTEMPTS = 300  # placements tried per object before giving up
_MIN_CONTRAST = 90.0  # preferred RGB distance between a random object color and its backdrop


@dataclass(frozen=True)
class SceneObject:
    """One object of a :class:`Scene`, with exact annotations.

    Attributes:
        shape: one of :data:`SHAPES`.
        color: one of the names of :data:`COLORS`.
        box: ``(x0, y0, x1, y1)``, 0-based inclusive pixels, tight around :attr:`mask`.
        mask: boolean (H, W): the pixels where the object is visible in the final image
            (objects drawn later occlude it).
        center: ``(x, y)`` of the shape's center, in pixels (pixel centers at integers).
        size: the shape's diameter in pixels (every vertex is within ``size / 2`` of
            ``center``).
        angle: the shape's rotation in degrees, counter-clockwise on screen.

    Examples:
        >>> obj = make_scene(0, shapes=["star"]).objects[0]
        >>> obj.shape, obj.area == int(obj.mask.sum())
        ('star', True)
    """

    shape: str
    color: str
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(compare=False, repr=False)
    center: tuple[float, float]
    size: int
    angle: float

    @property
    def area(self) -> int:
        """Number of visible pixels."""
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class Scene:
    """A synthetic RGB photo and its objects, in drawing order (later ones on top).

    Examples:
        >>> scene = make_scene(7, shapes=["circle", "cross"])
        >>> scene.image.size, [o.shape for o in scene.objects]
        ((128, 128), ['circle', 'cross'])
    """

    image: Image.Image
    objects: tuple[SceneObject, ...]


# ---------------------------------------------------------------------------------------------
# Shapes


def _polygon(radii: Sequence[float], start: float = 90.0) -> list[tuple[float, float]]:
    """Vertices at evenly spaced angles (degrees, from ``start``), radius ``radii[i]``."""
    step = 360.0 / len(radii)
    return [
        (r * math.cos(math.radians(start + i * step)), r * math.sin(math.radians(start + i * step)))
        for i, r in enumerate(radii)
    ]


_ARM, _HALF = 0.95, 0.3  # the cross: arm length and half-width (corners stay inside radius 1)

# Unit outlines (radius <= 1, y up); circles, rings and crescents are drawn as ellipses.
_OUTLINES: dict[str, list[tuple[float, float]]] = {
    "square": _polygon([1.0] * 4, start=45.0),
    "triangle": _polygon([1.0] * 3),
    "star": _polygon([1.0, 0.42] * 5),
    "diamond": [(0.0, 1.0), (0.55, 0.0), (0.0, -1.0), (-0.55, 0.0)],
    "cross": [
        (_HALF, _HALF), (_ARM, _HALF), (_ARM, -_HALF), (_HALF, -_HALF),
        (_HALF, -_ARM), (-_HALF, -_ARM), (-_HALF, -_HALF), (-_ARM, -_HALF),
        (-_ARM, _HALF), (-_HALF, _HALF), (-_HALF, _ARM), (_HALF, _ARM),
    ],
}  # fmt: skip
_RING_HOLE = 0.55  # inner radius of the ring
_CRESCENT_CUT = (0.45, 0.8)  # offset and radius of the disk cut out of the crescent


def shape_mask(
    shape: str,
    center: tuple[float, float],
    size: float,
    angle: float,
    canvas: tuple[int, int],
) -> np.ndarray:
    """The exact pixels of one shape, rasterized without antialiasing.

    Args:
        shape: one of :data:`SHAPES`.
        center: ``(x, y)`` in pixels.
        size: diameter in pixels; every point of the shape is within ``size / 2`` of
            ``center``.
        angle: rotation in degrees, counter-clockwise on screen.
        canvas: ``(width, height)`` of the mask.

    Returns:
        A boolean (height, width) mask; parts outside the canvas are cut off.

    Examples:
        >>> shape_mask("triangle", (3.5, 3.5), 6, 0.0, (7, 7)).astype(int)  # apex up
        array([[0, 0, 0, 1, 0, 0, 0],
               [0, 0, 1, 1, 1, 0, 0],
               [0, 0, 1, 1, 1, 0, 0],
               [0, 1, 1, 1, 1, 1, 0],
               [0, 1, 1, 1, 1, 1, 0],
               [1, 1, 1, 1, 1, 1, 1],
               [0, 0, 0, 0, 0, 0, 0]])
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    image = Image.new("L", canvas, 0)
    draw = ImageDraw.Draw(image)
    cx, cy = center
    r = size / 2.0
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def to_pixels(u: float, v: float) -> tuple[float, float]:
        # Rotate in the y-up unit frame, then flip y: image rows grow downwards.
        return cx + r * (u * cos - v * sin), cy - r * (u * sin + v * cos)

    def disk(u: float, v: float, radius: float, fill: int) -> None:
        x, y = to_pixels(u, v)
        draw.ellipse((x - r * radius, y - r * radius, x + r * radius, y + r * radius), fill=fill)

    if shape in _OUTLINES:
        draw.polygon([to_pixels(u, v) for u, v in _OUTLINES[shape]], fill=255)
    else:
        disk(0.0, 0.0, 1.0, 255)
        if shape == "ring":
            disk(0.0, 0.0, _RING_HOLE, 0)
        elif shape == "crescent":
            disk(_CRESCENT_CUT[0], 0.0, _CRESCENT_CUT[1], 0)
    return np.asarray(image) > 0


# ---------------------------------------------------------------------------------------------
# Backgrounds

Rng = np.random.Generator
Texture = Callable[[Rng, np.ndarray, np.ndarray], np.ndarray]


def _muted(rng: Rng) -> np.ndarray:
    """A random color pulled towards gray, so that objects usually stand out."""
    base = rng.uniform(0.0, 255.0, 3)
    gray = float(base.mean())
    muted: np.ndarray = gray + (base - gray) * rng.uniform(0.15, 0.8)
    return muted


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    mixed: np.ndarray = a * (1.0 - t[..., None]) + b * t[..., None]
    return mixed


def _rotated(rng: Rng, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    theta = rng.uniform(0.0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    return xx * c + yy * s, -xx * s + yy * c


def _noise(rng: Rng, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    cells = int(rng.integers(2, 10))
    grid = np.stack([_muted(rng) for _ in range(cells * cells)]).reshape(cells, cells, 3)
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8))
    return np.asarray(small.resize(xx.shape[::-1], Image.Resampling.BICUBIC), dtype=np.float64)


def _stripes(rng: Rng, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    u, _ = _rotated(rng, xx, yy)
    wave = np.sin(u * 2.0 * math.pi / rng.uniform(5.0, 28.0) + rng.uniform(0.0, 2.0 * math.pi))
    t = (wave > 0).astype(np.float64) if rng.random() < 0.5 else 0.5 + 0.5 * wave
    return _blend(_muted(rng), _muted(rng), t)


def _checker(rng: Rng, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    u, v = _rotated(rng, xx, yy)
    cell = rng.uniform(5.0, 24.0)
    t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float64)
    return _blend(_muted(rng), _muted(rng), t)


def _gradient(rng: Rng, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    if rng.random() < 0.5:
        u, _ = _rotated(rng, xx, yy)
        t = (u - u.min()) / max(float(np.ptp(u)), 1e-9)
    else:
        height, width = xx.shape
        px, py = rng.uniform(0, width), rng.uniform(0, height)
        d = np.hypot(xx - px, yy - py)
        t = d / max(float(d.max()), 1e-9)
    return _blend(_muted(rng), _muted(rng), t)


def _speckle(rng: Rng, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    out = np.broadcast_to(_muted(rng), (*xx.shape, 3)).copy()
    dots = rng.random(xx.shape) < rng.uniform(0.03, 0.2)
    out[dots] = _muted(rng)
    return out


_TEXTURES: tuple[Texture, ...] = (_noise, _stripes, _checker, _gradient, _speckle)


def _clutter(rng: Rng, pixels: np.ndarray) -> np.ndarray:
    """Thin lines and small dots: edges and blobs that are not any of the shapes."""
    height, width = pixels.shape[:2]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 6))):
        ends = rng.uniform(0, [width, height, width, height])
        color = tuple(int(c) for c in _muted(rng))
        draw.line([float(v) for v in ends], fill=color, width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 9))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(1.0, 4.0, 2)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=tuple(int(c) for c in _muted(rng)))
    return np.asarray(image, dtype=np.float64)


def _background(rng: Rng, size: int) -> np.ndarray:
    """A (size, size, 3) float64 textured background in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    pixels = _TEXTURES[int(rng.integers(len(_TEXTURES)))](rng, xx, yy)
    if rng.random() < 0.5:
        other = _TEXTURES[int(rng.integers(len(_TEXTURES)))](rng, xx, yy)
        pixels = _blend(pixels, other, np.full(xx.shape, rng.uniform(0.25, 0.6)))
    pixels = _clutter(rng, pixels)
    return pixels + rng.normal(0.0, rng.uniform(0.0, 10.0), pixels.shape)


# ---------------------------------------------------------------------------------------------
# Scenes


def _fill(rng: Rng, rgb: tuple[int, int, int], size: int, shading: bool) -> np.ndarray:
    """The object's paint over the whole canvas: its color with a soft light gradient and
    grain, so that no single pixel value identifies it (the mask stays exact)."""
    color = np.asarray(rgb, dtype=np.float64)
    if not shading:
        return np.broadcast_to(color, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    u, _ = _rotated(rng, xx - size / 2.0, yy - size / 2.0)
    light = 1.0 + rng.uniform(0.0, 0.25) * u / size
    return color * light[..., None] + rng.normal(0.0, 4.0, (size, size, 3))


def _pick_color(rng: Rng, used: set[str], backdrop: np.ndarray, mask: np.ndarray) -> str:
    """A random unused color that stands out from the background under the object."""
    names = [n for n in COLORS if n not in used]
    local = backdrop[mask].mean(axis=0)
    distance = {n: float(np.linalg.norm(np.asarray(COLORS[n]) - local)) for n in names}
    contrasting = [n for n in names if distance[n] >= _MIN_CONTRAST]
    if contrasting:
        return contrasting[int(rng.integers(len(contrasting)))]
    return max(names, key=lambda n: distance[n])


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _check_arguments(
    shapes: Sequence[str],
    colors: Sequence[str] | None,
    size: int,
    min_size: float,
    max_size: float,
) -> None:
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    if len(set(shapes)) != len(shapes):
        raise ValueError(f"shapes must be distinct, got {list(shapes)}")
    if colors is not None:
        if len(colors) != len(shapes):
            raise ValueError(f"got {len(colors)} colors for {len(shapes)} shapes")
        bad = [c for c in colors if c not in COLORS]
        if bad:
            raise ValueError(f"unknown color {bad[0]!r}; choose from {', '.join(COLORS)}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if not 0.0 < min_size <= max_size <= 1.0:
        raise ValueError(f"need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")


def make_scene(
    seed_or_rng: int | np.random.Generator,
    *,
    size: int = 128,
    shapes: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    min_size: float = 0.2,
    max_size: float = 0.55,
    allow_overlap: bool = False,
    shading: bool = True,
) -> Scene:
    """Draw a square synthetic photo with the given shapes on a random textured background.

    The background is drawn first, so for one seed the background does not depend on the
    shapes asked for (``shapes=()`` gives the bare background).

    Args:
        seed_or_rng: a seed, or a generator that is advanced.
        size: width and height of the image in pixels.
        shapes: the shapes to draw, one object each, distinct, in drawing order; ``None``
            draws one random shape.
        colors: the color name of each shape; ``None`` picks distinct random colors that
            contrast with the background under each object.
        min_size: smallest object diameter, as a fraction of ``size``.
        max_size: largest object diameter, as a fraction of ``size``.
        allow_overlap: let objects overlap (each keeps at least half of its pixels visible);
            otherwise objects are at least 2 pixels apart.
        shading: paint objects with a light gradient and grain; ``False`` paints them flat,
            exactly in their :data:`COLORS`.

    Raises:
        ValueError: for unknown or repeated shapes, unknown colors, bad sizes, or objects that
            cannot be placed (too many or too large for the image).

    Examples:
        >>> scene = make_scene(3, shapes=["ring", "star"], colors=["red", "blue"])
        >>> [(o.shape, o.color) for o in scene.objects]
        [('ring', 'red'), ('star', 'blue')]
        >>> x0, y0, x1, y1 = scene.objects[0].box
    """
    rng = np.random.default_rng(seed_or_rng)
    backdrop = _background(rng, size)
    if shapes is None:
        shapes = [SHAPES[int(rng.integers(len(SHAPES)))]]
    _check_arguments(shapes, colors, size, min_size, max_size)
    smallest = max(4, round(min_size * size))
    largest = max(smallest, round(max_size * size))

    full_masks: list[np.ndarray] = []
    visible: list[np.ndarray] = []  # what each object keeps once the later ones are drawn
    placed: list[tuple[tuple[float, float], int, float]] = []
    taken = np.zeros((size, size), dtype=bool)  # pixels of earlier objects (grown by the gap)
    for shape in shapes:
        for attempt in range(_ATTEMPTS):
            # Shrink the largest size on repeated failures, so crowded scenes still fit.
            top = max(smallest, round(largest - (largest - smallest) * attempt / _ATTEMPTS))
            diameter = int(rng.integers(smallest, top + 1))
            radius = diameter / 2.0
            center = (
                float(rng.uniform(radius, size - 1 - radius)),
                float(rng.uniform(radius, size - 1 - radius)),
            )
            angle = float(rng.uniform(0.0, 360.0))
            mask = shape_mask(shape, center, diameter, angle, (size, size))
            if not mask.any():
                continue
            if allow_overlap:
                keeps_enough = all(
                    np.count_nonzero(v & ~mask) >= _MIN_VISIBLE * np.count_nonzero(m)
                    for v, m in zip(visible, full_masks, strict=True)
                )
                if keeps_enough:
                    break
            elif not (mask & taken).any():
                break
        else:
            raise ValueError(
                f"could not place {len(shapes)} objects in a {size}x{size} image; "
                "ask for fewer or smaller shapes, or allow overlap"
            )
        visible = [v & ~mask for v in visible] + [mask]
        full_masks.append(mask)
        placed.append((center, diameter, angle))
        taken |= ndimage.binary_dilation(mask, iterations=_GAP)

    pixels = backdrop.copy()
    names: list[str] = []
    for index, mask in enumerate(full_masks):
        name = colors[index] if colors is not None else _pick_color(rng, set(names), backdrop, mask)
        names.append(name)
        pixels[mask] = _fill(rng, COLORS[name], size, shading)[mask]
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")

    objects = tuple(
        SceneObject(shape, name, _tight_box(mask), mask, center, diameter, angle)
        for shape, name, mask, (center, diameter, angle) in zip(
            shapes, names, visible, placed, strict=True
        )
    )
    return Scene(image, objects)


# ---------------------------------------------------------------------------------------------
# The benchmark's scenes


def _benchmark_rng(seed: int, *key: int) -> np.random.Generator:
    # Independent streams per image, so image i does not depend on how many are written.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def benchmark_label(index: int, seed: int = 0) -> int:
    """The shape index of benchmark image ``index``: every block of ``len(SHAPES)`` images
    holds each shape once, in a seeded random order.

    Examples:
        >>> sorted(benchmark_label(i, seed=1) for i in range(8)) == list(range(8))
        True
    """
    block, position = divmod(index, len(SHAPES))
    return int(_benchmark_rng(seed, 0, block).permutation(len(SHAPES))[position])


def benchmark_scene(index: int, seed: int = 0, size: int = 128) -> Scene:
    """Image ``index`` of the benchmark that
    :func:`gradcam.evaluate.datasets.write_benchmark` writes with ``seed``.

    Examples:
        >>> benchmark_scene(0).objects[0].shape == SHAPES[benchmark_label(0)]
        True
    """
    shape = SHAPES[benchmark_label(index, seed)]
    return make_scene(_benchmark_rng(seed, 1, index), size=size, shapes=[shape])
