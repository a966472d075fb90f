"""Shared fixtures: expensive models are built once per test session.

Nothing downloads in tests: the Hugging Face libraries are offline (set before they are
imported), and torch's and Hugging Face's caches are empty folders of the session, so a test
that loads pretrained weights by name fills them itself (``helpers/caches.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))

import gradcam


@pytest.fixture(autouse=True, scope="session")
def _empty_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """torch's and Hugging Face's caches: empty folders, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        patch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
        for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def lite0() -> gradcam.LoadedModel:
    """The embedded EfficientNet-Lite0 with its real ImageNet weights."""
    return gradcam.load_model()


@pytest.fixture(scope="session")
def resnet18() -> torch.nn.Module:
    """A torchvision ResNet-18 with seeded random weights (in-place ReLUs, BatchNorm)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()
