"""Default layer detection follows the paper: the last convolutional feature maps."""

from __future__ import annotations

import torch
import torchvision
from helpers.models import ReusedLayerNet, SmallCNN

from gradcam import find_default_layer, spatial_layers
from gradcam.methods import GradCAM

X = torch.zeros(1, 3, 224, 224)


def test_resnet(resnet18: torch.nn.Module) -> None:
    assert find_default_layer(resnet18, X) == "layer4"


def test_vgg16_is_relu5_3_at_14x14() -> None:
    vgg = torchvision.models.vgg16(weights=None)
    assert find_default_layer(vgg, X) == "features.29"


def test_alexnet_and_googlenet() -> None:
    assert find_default_layer(torchvision.models.alexnet(weights=None), X) == "features.11"
    googlenet = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    assert find_default_layer(googlenet.eval(), X) == "inception5b"


def test_reused_modules_are_skipped() -> None:
    assert find_default_layer(ReusedLayerNet(), torch.zeros(1, 3, 8, 8)) == "stem"


def test_default_layer_is_found_on_first_call() -> None:
    model = SmallCNN().eval()
    cam = GradCAM(model)
    assert cam(torch.randn(1, 3, 16, 16), 0).layer == "features"


def test_spatial_layers_in_forward_order(resnet18: torch.nn.Module) -> None:
    names = [name for name, _ in spatial_layers(resnet18, torch.zeros(1, 3, 64, 64))]
    assert names.index("layer1") < names.index("layer4")
    assert "avgpool" not in names and "layer4.0.relu" not in names  # 1x1, and reused
