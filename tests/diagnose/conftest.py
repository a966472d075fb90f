"""A hand-weighted two-class model ("red", "green") whose Grad-CAM maps are known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam.images import Preprocess
from gradcam.models import LoadedModel


def red_green_model() -> LoadedModel:
    """conv1x1 (channel 0 = red, channel 1 = green) -> ReLU -> GAP: ``y^red`` is the mean red
    intensity, and Grad-CAM of a class is its colour channel divided by the pixel count."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 1] = 1.0
    module = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    identity = Preprocess(32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), max_ratio=1.0)
    return LoadedModel("red-green", module, identity, ("red", "green"), "1", True)


@pytest.fixture()
def red_green() -> LoadedModel:
    return red_green_model()
