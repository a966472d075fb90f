"""Study files built once per session (rendering maps costs seconds); tests copy them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gradcam.models import LoadedModel
from gradcam.study import (
    create_class_discrimination,
    create_trust,
    load_study_model,
    study_images,
)

CD_METHODS = ["gradcam", "guided-backprop"]


@pytest.fixture(scope="session")
def cd_methods() -> list[str]:
    """The methods of the session's class-discrimination study, in item order."""
    return list(CD_METHODS)


@pytest.fixture(scope="session")
def shapes() -> LoadedModel:
    """The shipped shapes CNN (trained weights)."""
    return load_study_model("shapes")


@pytest.fixture(scope="session")
def noisy_weights(tmp_path_factory: pytest.TempPathFactory, shapes: LoadedModel) -> Path:
    """The shapes CNN's weights with seeded noise on its weight tensors: a worse model of the
    same classes that still gets most single-shape scenes right (model B of a trust study)."""
    params = dict(shapes.module.named_parameters())
    generator = torch.Generator().manual_seed(0)
    noisy = {
        name: value + 0.6 * value.std() * torch.randn(value.shape, generator=generator)
        if name in params and value.dim() > 1
        else value.clone()
        for name, value in shapes.module.state_dict().items()
    }
    path = tmp_path_factory.mktemp("models") / "noisy_shapes.pt"
    torch.save(noisy, path)
    return path


@pytest.fixture(scope="session")
def cd_study_file(tmp_path_factory: pytest.TempPathFactory, shapes: LoadedModel) -> Path:
    """A class-discrimination study: 3 two-shape scenes x 2 methods = 6 items."""
    path = tmp_path_factory.mktemp("cd") / "cd.db"
    create_class_discrimination(
        path, study_images("synthetic", shapes, count=3), shapes, CD_METHODS, seed=0
    )
    return path


@pytest.fixture(scope="session")
def trust_study_file(
    tmp_path_factory: pytest.TempPathFactory, shapes: LoadedModel, noisy_weights: Path
) -> Path:
    """A trust study: shapes (A) against its noisy copy (B), Grad-CAM, 4 scenes."""
    path = tmp_path_factory.mktemp("trust") / "trust.db"
    scenes = study_images("synthetic", shapes, count=5, objects=1)
    noisy = load_study_model(f"shapes@{noisy_weights}")
    create_trust(path, scenes, shapes, noisy, ["gradcam"], seed=0, limit=4)
    return path


@pytest.fixture
def copy_study(tmp_path: Path) -> Callable[[Path], Path]:
    """A fresh copy of a session study file, for a test that writes to it."""

    def copy(source: Path) -> Path:
        target = tmp_path / source.name
        shutil.copy(source, target)
        return target

    return copy
