"""Synthetic clips with exact ground truth: a moving square whose direction is the class.

The video counterpart of :mod:`gradcam.synthetic.scenes`. A clip is a (1, T, H, W) float32
array (one channel; channels, then time, then height and width, as torchvision's video
models read clips) with values about 0 to 1. Each clip holds two squares of the same size and
brightness: one *moves* in a straight line at a constant speed in one of the
:data:`DIRECTIONS`, the other stays where it is. No single frame tells the class, nor which
square is the object: only motion does. Everything is driven by one
``numpy.random.Generator``, so a seed always gives the same array.

Frame ``t`` shows the moving square with its top-left corner at ``start + t * velocity``
(rounded to whole pixels), drawn over the static one where they cross. :attr:`Clip.mask` is
exactly the (T, H, W) pixels of the moving square in each frame, and :attr:`Clip.box` its
tight inclusive box ``(x0, y0, t0, x1, y1, t1)``: coordinates fastest axis first, as 2-D
boxes are ``(x0, y0, x1, y1)``.

Examples:
    >>> clip = make_clip(0, direction="left")
    >>> clip.array.shape, clip.direction, clip.box[2], clip.box[5]
    ((1, 8, 32, 32), 'left', 0, 7)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CLIPS_VERSION",
    "CLIP_FRAMES",
    "CLIP_SIZE",
    "DIRECTIONS",
    "Clip",
    "benchmark_clip",
    "make_clip",
]

DIRECTIONS: tuple[str, ...] = ("right", "left", "down", "up")
"""The directions of motion, in class-index order (the classes of the ``motion`` model)."""

#: Unit steps ``(dy, dx)`` of each direction, in image rows and columns.
_STEPS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}

CLIP_FRAMES = 8
"""Frames per clip (T)."""

CLIP_SIZE = 32
"""Height and width of the frames, in pixels."""

CLIPS_VERSION = 1
"""The version of the drawing code: bump it whenever a seed's clips change."""


@dataclass(frozen=True)
class Clip:
    """A synthetic (1, T, H, W) clip, its direction, and the moving square's exact pixels.

    Attributes:
        array: float32 (1, T, H, W), values about 0 to 1.
        direction: one of :data:`DIRECTIONS`.
        mask: boolean (T, H, W): the moving square's pixels in each frame.
        box: ``(x0, y0, t0, x1, y1, t1)``, 0-based inclusive, tight around :attr:`mask`.
        distractor: boolean (H, W): the static square's pixels (in every frame, where the
            moving square does not cover it).

    Examples:
        >>> c = make_clip(2, direction="up")
        >>> [int(np.nonzero(c.mask[t].any(axis=1))[0][0]) for t in (0, 7)][0] > 0
        True
    """

    array: np.ndarray = field(repr=False)
    direction: str
    mask: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int, int, int]
    distractor: np.ndarray = field(repr=False)


def _square(top: int, left: int, side: int, size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def make_clip(
    seed_or_rng: int | np.random.Generator,
    *,
    direction: str | None = None,
    frames: int = CLIP_FRAMES,
    size: int = CLIP_SIZE,
) -> Clip:
    """Draw a (1, frames, size, size) clip of a square moving in ``direction`` beside a
    static square of the same size and brightness.

    The moving square's side is 5 to 8 pixels and its speed 1 to 2 pixels per frame; it
    never leaves the frame. The static square lies at least 2 pixels from the moving
    square's path at every frame, so the two never touch. The background is a flat level
    with a smooth horizontal or vertical gradient and per-pixel, per-frame noise.

    Args:
        seed_or_rng: a seed, or a generator that is advanced.
        direction: one of :data:`DIRECTIONS`; ``None`` draws one at random.
        frames: frames per clip, at least 2.
        size: height and width of the frames, at least 24 pixels.

    Raises:
        ValueError: an unknown direction, or too few frames or pixels.

    Examples:
        >>> c = make_clip(5, direction="right")
        >>> left = [int(np.nonzero(c.mask[t].any(axis=0))[0][0]) for t in range(8)]
        >>> all(b >= a for a, b in zip(left, left[1:])) and left[-1] > left[0]
        True
    """
    rng = np.random.default_rng(seed_or_rng)
    if direction is None:
        direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose from {', '.join(DIRECTIONS)}")
    if frames < 2 or size < 24:
        raise ValueError(f"need at least 2 frames of 24 x 24 pixels, got {frames} of {size}")
    side = int(rng.integers(5, 9))
    speed = float(rng.uniform(1.0, 2.0))
    dy, dx = _STEPS[direction]
    travel = round(speed * (frames - 1))
    # The start along the motion leaves room for the whole path; across it, anywhere.
    along = int(rng.integers(0, size - side - travel + 1))
    across = int(rng.integers(0, size - side + 1))
    forward = dy + dx > 0
    start = along if forward else size - side - along
    tops, lefts = [], []
    for t in range(frames):
        moved = start + (1 if forward else -1) * round(speed * t)
        top, left = (moved, across) if dy else (across, moved)
        tops.append(top)
        lefts.append(left)
    path = np.zeros((size, size), dtype=bool)
    for top, left in zip(tops, lefts, strict=True):
        path |= _square(top, left, side, size)
    from scipy import ndimage

    keep_out = ndimage.binary_dilation(path, iterations=2)
    distractor = np.zeros((size, size), dtype=bool)
    for _attempt in range(200):
        top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
        candidate = _square(top, left, side, size)
        if not (candidate & keep_out).any():
            distractor = candidate
            break
    level = rng.uniform(0.1, 0.3)
    ramp = np.linspace(-0.5, 0.5, size) * rng.uniform(0.0, 0.2)
    background = level + (ramp[:, None] if rng.random() < 0.5 else ramp[None, :])
    brightness = rng.uniform(0.6, 1.0)
    mask = np.stack([_square(t, lf, side, size) for t, lf in zip(tops, lefts, strict=True)])
    pixels = np.broadcast_to(background, (frames, size, size)).copy()
    pixels[:, distractor] = brightness
    pixels[mask] = brightness
    pixels = pixels + rng.normal(0.0, rng.uniform(0.01, 0.05), pixels.shape)
    array = np.clip(pixels, 0.0, None).astype(np.float32)[None]
    ts, ys, xs = np.nonzero(mask)
    box = (
        int(xs.min()), int(ys.min()), int(ts.min()),
        int(xs.max()), int(ys.max()), int(ts.max()),
    )  # fmt: skip
    return Clip(array, direction, mask, box, distractor)


def _benchmark_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def benchmark_clip(index: int, seed: int = 0) -> Clip:
    """Clip ``index`` of the video benchmark of ``seed``: every block of
    ``len(DIRECTIONS)`` clips holds each direction once, in a seeded random order; clip
    ``index`` does not depend on how many are drawn.

    Examples:
        >>> sorted(benchmark_clip(i, seed=1).direction for i in range(4)) == sorted(DIRECTIONS)
        True
    """
    block, position = divmod(index, len(DIRECTIONS))
    direction = DIRECTIONS[
        int(_benchmark_rng(seed, 0, block).permutation(len(DIRECTIONS))[position])
    ]
    return make_clip(_benchmark_rng(seed, 1, index), direction=direction)
