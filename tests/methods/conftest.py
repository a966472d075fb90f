"""The peer-agreement models of the method tests: random seeded ResNet-50 and VGG-16 and the
embedded EfficientNet-Lite0, frozen, one copy per test module (a test may change a flag);
their default layers are ``helpers.models.DEFAULT_LAYERS``."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import gradcam


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def lite0_module() -> nn.Module:
    return gradcam.load_model().module.requires_grad_(False)
