"""The doctests of ``src/gradcam``: every ``Examples:`` block runs in ``make test``.

pytest collects them with ``--doctest-modules`` (``pyproject.toml``). This file is not part
of the package: setuptools ships only ``src/gradcam``.

Besides the module's own globals, an example may use these names without importing them:

- ``gradcam``, ``torch``, ``nn`` (``torch.nn``), ``np`` (numpy);
- ``shapes``: ``gradcam.load_model("shapes")``, the small CNN shipped for the synthetic
  shapes (128 x 128 input, 8 classes, ``shapes.default_layer`` is ``"features"``); loaded
  once per session;
- ``model``: ``shapes.module``, in eval mode;
- ``scene``: ``gradcam.synthetic.make_scene(0, shapes=["star"])``, one orange star, which
  ``model`` classifies as a star (class 3);
- ``x``: ``shapes.preprocess(scene.image)``, a fresh (1, 3, 128, 128) tensor per example;
- ``photo``: the bundled ``gradcam/data/cat_and_coffee.jpg`` as an RGB ``PIL.Image``;
- ``lite0``: ``gradcam.load_model()``, the embedded EfficientNet-Lite0 with its ImageNet
  weights; loaded only for the examples that name it (loading takes seconds);
- ``skimage_gif``: the path of scikit-image's ``no_time_for_that_tiny.gif`` (24 frames of
  14 x 25 pixels), a real animated GIF for the video examples.

Each example runs in its own empty temporary folder (examples that save files write there)
with torch and numpy seeded to 0, so its printed outputs are the same on every run. Nothing
downloads: the Hugging Face libraries are offline, so a pretrained weights file missing from
the caches is a one-line error (:mod:`gradcam.weights`), never a download.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import gradcam
from gradcam.synthetic import Scene, make_scene

PHOTO = Path(__file__).parent / "gradcam" / "data" / "cat_and_coffee.jpg"


@cache
def _shapes() -> gradcam.LoadedModel:
    return gradcam.load_model("shapes")


@cache
def _lite0() -> gradcam.LoadedModel:
    return gradcam.load_model()


@cache
def _photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


@cache
def _scene() -> Scene:
    return make_scene(0, shapes=["star"])


def _source(item: pytest.Item) -> str:
    examples = getattr(getattr(item, "dtest", None), "examples", [])
    return "".join(example.source for example in examples)


@pytest.fixture(autouse=True)
def _doctest_names(
    request: pytest.FixtureRequest,
    doctest_namespace: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    np.random.seed(0)
    shapes = _shapes()
    doctest_namespace.update(
        gradcam=gradcam,
        torch=torch,
        nn=nn,
        np=np,
        shapes=shapes,
        model=shapes.module,
        scene=_scene(),
        x=shapes.preprocess(_scene().image),
        photo=_photo().copy(),
    )
    if "lite0" in _source(request.node):
        doctest_namespace["lite0"] = _lite0()
    if "skimage_gif" in _source(request.node):
        import skimage.data

        doctest_namespace["skimage_gif"] = (
            Path(skimage.data.__file__).parent / "no_time_for_that_tiny.gif"
        )
    yield
