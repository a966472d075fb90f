"""Synthetic scenes with exact ground truth, and a small CNN trained on them.

* :mod:`gradcam.synthetic.scenes`: shapes on textured backgrounds with exact masks and boxes,
  and the scenes of the localization benchmark (:func:`benchmark_scene`), which
  :func:`gradcam.evaluate.datasets.write_benchmark` writes as a COCO folder;
* :mod:`gradcam.synthetic.model`: :class:`ShapeNet`, a GAP CNN that classifies the shapes,
  with shipped weights (:func:`load_shapes_model`).

Examples:
    >>> from gradcam.synthetic import make_scene, load_shapes_model, SHAPES_PREPROCESS
    >>> scene = make_scene(0, shapes=["star"])
    >>> model = load_shapes_model()
    >>> SHAPES[int(model(SHAPES_PREPROCESS(scene.image)).argmax())]
    'star'
"""

from gradcam.synthetic.model import (
    SHAPES_LAYER,
    SHAPES_MEAN,
    SHAPES_PREPROCESS,
    SHAPES_SIZE,
    SHAPES_STD,
    SHAPES_WEIGHTS,
    ShapeNet,
    load_shapes_model,
)
from gradcam.synthetic.scenes import (
    COLORS,
    SCENES_VERSION,
    SHAPES,
    Scene,
    SceneObject,
    benchmark_label,
    benchmark_scene,
    make_scene,
    shape_mask,
)

__all__ = [
    "COLORS",
    "SCENES_VERSION",
    "SHAPES",
    "SHAPES_LAYER",
    "SHAPES_MEAN",
    "SHAPES_PREPROCESS",
    "SHAPES_SIZE",
    "SHAPES_STD",
    "SHAPES_WEIGHTS",
    "Scene",
    "SceneObject",
    "ShapeNet",
    "benchmark_label",
    "benchmark_scene",
    "load_shapes_model",
    "make_scene",
    "shape_mask",
]
