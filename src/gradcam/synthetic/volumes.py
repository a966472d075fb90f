"""Synthetic volumes with exact ground truth: one solid in a noisy, textured 3-D scan.

The volumetric counterpart of :mod:`gradcam.synthetic.scenes`. A volume is a (1, D, H, W)
float32 array (one channel, like a CT or MRI scan) with values about 0 to 1, made in three
steps, all driven by one ``numpy.random.Generator`` (never the global RNG), so a seed always
gives the same array:

1. a background: smooth low-frequency texture (random values on a coarse grid, upsampled
   trilinearly) and voxel noise;
2. distractors: a few small bright blobs (balls of radius 1 to 1.5 voxels) that are none of
   the solids, kept away from the object;
3. the object: a solid of :data:`SOLIDS` at a random size, position (never cut by the
   border) and orientation, painted over everything at a random brightness.

A voxel belongs to the object when its center lies inside the solid: :attr:`Volume.mask` is
exactly the voxels painted with the object's brightness, and :attr:`Volume.box` is the tight
inclusive box of the mask, ``(x0, y0, z0, x1, y1, z1)``: coordinates fastest axis first, as
2-D boxes are ``(x0, y0, x1, y1)`` (x along W, y along H, z along D).

Examples:
    >>> volume = make_volume(0, solid="torus")
    >>> volume.array.shape, volume.solid, volume.array.dtype
    ((1, 32, 32, 32), 'torus', dtype('float32'))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SOLIDS",
    "VOLUMES_VERSION",
    "VOLUME_SIZE",
    "Volume",
    "benchmark_volume",
    "make_volume",
    "solid_mask",
]

SOLIDS: tuple[str, ...] = ("sphere", "cube", "cylinder", "torus")
"""The solid names, in class-index order (the classes of the ``shapes3d`` model)."""

VOLUME_SIZE = 32
"""Side of the volumes, in voxels (D = H = W)."""

VOLUMES_VERSION = 1
"""The version of the drawing code: bump it whenever a seed's volumes change."""

_DISTRACTORS = (2, 6)  # small blobs per volume, at least, at most
_GAP = 2.0  # voxels between a blob and the object's bounding sphere


@dataclass(frozen=True)
class Volume:
    """A synthetic (1, D, H, W) volume holding one solid, with exact annotations.

    Attributes:
        array: float32 (1, D, H, W), values about 0 to 1.
        solid: one of :data:`SOLIDS`.
        mask: boolean (D, H, W): the object's voxels.
        box: ``(x0, y0, z0, x1, y1, z1)``, 0-based inclusive voxels, tight around :attr:`mask`.

    Examples:
        >>> v = make_volume(1, solid="cube")
        >>> x0, y0, z0, x1, y1, z1 = v.box
        >>> bool(v.mask[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1].sum() == v.mask.sum())
        True
    """

    array: np.ndarray = field(repr=False)
    solid: str
    mask: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int, int, int]


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3-D rotation matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    rotation: np.ndarray = q
    return rotation


def solid_mask(
    solid: str,
    center: tuple[float, float, float],
    size: float,
    rotation: np.ndarray | None = None,
    shape: tuple[int, int, int] = (VOLUME_SIZE,) * 3,
) -> np.ndarray:
    """The exact voxels of one solid: those whose center lies inside it.

    Args:
        solid: one of :data:`SOLIDS`.
        center: ``(z, y, x)`` of the solid's center, in voxels (voxel centers at integers).
        size: the solid's radius: every point of it is within ``size`` of ``center``.
        rotation: a (3, 3) rotation applied to the solid (``None``: axis-aligned).
        shape: ``(D, H, W)`` of the mask.

    The solids, in the frame of ``u, v, w`` (the solid's own axes, ``r = size``): a ball of
    radius ``r``; a cube of half-side ``r / sqrt(3)``; a cylinder of radius ``0.55 r`` and
    half-length ``0.8 r`` along ``w``; a torus of tube radius ``0.3 r`` around a circle of
    radius ``0.7 r`` in the ``u, v`` plane.

    Examples:
        >>> solid_mask("sphere", (2.0, 2.0, 2.0), 1.0, shape=(5, 5, 5)).sum()  # center + 6
        np.int64(7)
        >>> solid_mask("cube", (2.0, 2.0, 2.0), 1.8, shape=(5, 5, 5)).sum()  # 3 x 3 x 3
        np.int64(27)
    """
    if solid not in SOLIDS:
        raise ValueError(f"unknown solid {solid!r}; choose from {', '.join(SOLIDS)}")
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij"))
    offsets = grid - np.asarray(center, dtype=np.float64).reshape(3, 1, 1, 1)
    if rotation is not None:
        # The solid's own coordinates: its axes are the columns of the rotation.
        offsets = np.einsum("ji,j...->i...", rotation, offsets)
    w, v, u = offsets
    r = float(size)
    if solid == "sphere":
        inside = u * u + v * v + w * w <= r * r
    elif solid == "cube":
        half = r / np.sqrt(3.0)
        inside = (np.abs(u) <= half) & (np.abs(v) <= half) & (np.abs(w) <= half)
    elif solid == "cylinder":
        inside = (u * u + v * v <= (0.55 * r) ** 2) & (np.abs(w) <= 0.8 * r)
    else:  # torus
        ring = np.sqrt(u * u + v * v) - 0.7 * r
        inside = ring * ring + w * w <= (0.3 * r) ** 2
    mask: np.ndarray = inside
    return mask


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int, int, int]:
    zs, ys, xs = np.nonzero(mask)
    return (
        int(xs.min()), int(ys.min()), int(zs.min()),
        int(xs.max()), int(ys.max()), int(zs.max()),
    )  # fmt: skip


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth background: a coarse random grid upsampled trilinearly to ``size``."""
    from scipy import ndimage

    cells = int(rng.integers(2, 6))
    coarse = rng.uniform(0.0, 1.0, (cells, cells, cells))
    smooth: np.ndarray = ndimage.zoom(coarse, size / cells, order=1, mode="nearest")
    return smooth[:size, :size, :size]


def make_volume(
    seed_or_rng: int | np.random.Generator,
    *,
    solid: str | None = None,
    size: int = VOLUME_SIZE,
    min_radius: float = 5.0,
    max_radius: float = 9.0,
) -> Volume:
    """Draw a (1, size, size, size) volume holding one solid.

    Args:
        seed_or_rng: a seed, or a generator that is advanced.
        solid: one of :data:`SOLIDS`; ``None`` draws one at random.
        size: the volume's side in voxels.
        min_radius: the smallest solid radius, in voxels.
        max_radius: the largest solid radius, in voxels.

    Raises:
        ValueError: an unknown solid, or radii that do not fit the volume.

    Examples:
        >>> v = make_volume(3, solid="cylinder")
        >>> v.array.shape, int(v.mask.sum()) > 0, bool(v.array.min() >= 0.0)
        ((1, 32, 32, 32), True, True)
    """
    rng = np.random.default_rng(seed_or_rng)
    if solid is None:
        solid = SOLIDS[int(rng.integers(len(SOLIDS)))]
    if solid not in SOLIDS:
        raise ValueError(f"unknown solid {solid!r}; choose from {', '.join(SOLIDS)}")
    if not 1.0 <= min_radius <= max_radius < size / 2 - 1:
        raise ValueError(
            f"need 1 <= min_radius <= max_radius < {size / 2 - 1} voxels, got "
            f"{min_radius}, {max_radius}"
        )
    level = rng.uniform(0.1, 0.3)
    pixels = level + rng.uniform(0.05, 0.2) * (_texture(rng, size) - 0.5)
    radius = float(rng.uniform(min_radius, max_radius))
    center = tuple(float(c) for c in rng.uniform(radius, size - 1 - radius, 3))
    mask = solid_mask(solid, center, radius, _rotation(rng), (size, size, size))  # type: ignore[arg-type]
    grid = np.stack(np.meshgrid(*(np.arange(size),) * 3, indexing="ij")).astype(np.float64)
    for _ in range(int(rng.integers(_DISTRACTORS[0], _DISTRACTORS[1] + 1))):
        blob_radius = float(rng.uniform(1.0, 1.5))
        for _attempt in range(50):
            at = rng.uniform(2.0, size - 3.0, 3)
            if np.linalg.norm(at - np.asarray(center)) > radius + blob_radius + _GAP:
                break
        else:
            continue
        blob = ((grid - at.reshape(3, 1, 1, 1)) ** 2).sum(axis=0) <= blob_radius**2
        pixels[blob] = rng.uniform(0.5, 1.0)
    pixels[mask] = rng.uniform(0.6, 1.0)
    pixels = pixels + rng.normal(0.0, rng.uniform(0.01, 0.06), pixels.shape)
    array = np.clip(pixels, 0.0, None).astype(np.float32)[None]
    return Volume(array, solid, mask, _tight_box(mask))


def _benchmark_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def benchmark_volume(index: int, seed: int = 0) -> Volume:
    """Volume ``index`` of the volumetric benchmark of ``seed``: every block of
    ``len(SOLIDS)`` volumes holds each solid once, in a seeded random order; volume ``index``
    does not depend on how many are drawn.

    Examples:
        >>> sorted(benchmark_volume(i, seed=1).solid for i in range(4)) == sorted(SOLIDS)
        True
    """
    block, position = divmod(index, len(SOLIDS))
    solid = SOLIDS[int(_benchmark_rng(seed, 0, block).permutation(len(SOLIDS))[position])]
    return make_volume(_benchmark_rng(seed, 1, index), solid=solid)
