"""Two-object scenes for the captioning and VQA models, from a seed.

Each scene is a :func:`gradcam.synthetic.make_scene` photo, 96 x 96, with two objects of
distinct shapes (of :data:`~gradcam.vl.text.VL_SHAPES`) and distinct colors (of
:data:`~gradcam.vl.text.VL_COLORS`) on a textured background, at least 2 pixels apart, each
with its exact mask. Scene ``index`` of a ``seed`` has its own random stream, so it never
depends on how many scenes are made. Training uses seed 0; tests and evaluations use seed 1.
"""

from __future__ import annotations

import numpy as np

from gradcam.images import Preprocess
from gradcam.synthetic.scenes import Scene, make_scene
from gradcam.vl.text import VL_COLORS, VL_SHAPES

__all__ = ["VL_MEAN", "VL_PREPROCESS", "VL_SIZE", "VL_STD", "make_vl_scene", "vl_scene"]

VL_SIZE = 96
"""Side of the scenes in pixels: the models' input size."""

# ShapeNet's normalization, since the encoder starts from its weights.
VL_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Per-channel mean used to normalize the scenes, on the [0, 1] scale."""

VL_STD: tuple[float, float, float] = (0.19, 0.19, 0.19)
"""Per-channel standard deviation used to normalize the scenes, on the [0, 1] scale."""

VL_PREPROCESS = Preprocess(size=VL_SIZE, mean=VL_MEAN, std=VL_STD)
"""A scene (or any photo, its shorter side scaled to 96) as the models' (1, 3, H, W) input."""


def make_vl_scene(seed_or_rng: int | np.random.Generator, size: int = VL_SIZE) -> Scene:
    """A scene with two random objects: distinct shapes, distinct colors, no overlap.

    Examples:
        >>> scene = make_vl_scene(0)
        >>> len(scene.objects), scene.image.size
        (2, (96, 96))
    """
    rng = np.random.default_rng(seed_or_rng)
    shapes = [VL_SHAPES[i] for i in rng.choice(len(VL_SHAPES), 2, replace=False)]
    colors = [VL_COLORS[i] for i in rng.choice(len(VL_COLORS), 2, replace=False)]
    return make_scene(rng, size=size, shapes=shapes, colors=colors, min_size=0.22, max_size=0.42)


def vl_scene(index: int, seed: int = 1) -> Scene:
    """Scene ``index`` of the scenes of ``seed`` (each from its own random stream).

    Examples:
        >>> vl_scene(3).image.tobytes() == vl_scene(3).image.tobytes()
        True
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    return make_vl_scene(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,))))
