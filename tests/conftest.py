"""Shared fixtures: expensive models are built once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))

import gradcam


@pytest.fixture(scope="session")
def lite0() -> gradcam.LoadedModel:
    """The embedded EfficientNet-Lite0 with its real ImageNet weights."""
    return gradcam.load_model()


@pytest.fixture(scope="session")
def resnet18() -> torch.nn.Module:
    """A torchvision ResNet-18 with seeded random weights (in-place ReLUs, BatchNorm)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()
