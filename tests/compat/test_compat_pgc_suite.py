"""A port of pytorch-grad-cam 1.5.7's own test (tests/test_run_all_models.py) with the import
prefix changed to ``gradcam.compat.pytorch_grad_cam``: every method, one or two target layers,
batches of 1 and 2, a given class or none, with and without each smoothing. Its example photo
is replaced by a random image (no files, no downloads); its assertions are kept (one map per
image at the input's size), with the maps' range added; its grid of options is thinned to
three combinations so that the port stays fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from gradcam.compat.pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM
from gradcam.compat.pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image
from gradcam.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

FAST = [GradCAM, GradCAMPlusPlus, XGradCAM, EigenCAM, EigenGradCAM, LayerCAM, FullGrad]
SLOW = [ScoreCAM, AblationCAM]  # one pass per channel: run once, without smoothing


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).random((height, width, 3), dtype=np.float32)


def run(
    cam_method: type[BaseCAM],
    model: torch.nn.Module,
    batch_size: int,
    size: tuple[int, int],
    target_category: int | None,
    aug_smooth: bool,
    eigen_smooth: bool,
) -> None:
    width, height = size
    rgb = image(height, width)
    input_tensor = preprocess_image(rgb).repeat(batch_size, 1, 1, 1)
    target_layers = [model.layer4[-1], model.layer4[-2]]
    targets = (
        None
        if target_category is None
        else [ClassifierOutputTarget(target_category) for _ in range(batch_size)]
    )
    with cam_method(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(
            input_tensor=input_tensor,
            targets=targets,
            aug_smooth=aug_smooth,
            eigen_smooth=eigen_smooth,
        )
    assert grayscale_cam.shape[0] == input_tensor.shape[0]
    assert grayscale_cam.shape[1:] == input_tensor.shape[2:]
    assert grayscale_cam.min() >= 0.0 and grayscale_cam.max() <= 1.0
    show_cam_on_image(rgb, grayscale_cam[0], use_rgb=True)


@pytest.mark.parametrize("cam_method", FAST)
@pytest.mark.parametrize("batch_size,size", [(2, (32, 32)), (1, (32, 40))])
@pytest.mark.parametrize(
    "target_category,aug_smooth,eigen_smooth",
    [(None, False, False), (100, True, False), (100, False, True)],  # pgc's grid, thinned
)
def test_all_cam_models_can_run(
    resnet: torch.nn.Module,
    cam_method: type[BaseCAM],
    batch_size: int,
    size: tuple[int, int],
    target_category: int | None,
    aug_smooth: bool,
    eigen_smooth: bool,
) -> None:
    if eigen_smooth and cam_method is FullGrad:
        with pytest.raises(NotImplementedError, match="FullGrad"):
            run(cam_method, resnet, batch_size, size, target_category, aug_smooth, True)
        return
    run(cam_method, resnet, batch_size, size, target_category, aug_smooth, eigen_smooth)


@pytest.mark.parametrize("cam_method", SLOW)
def test_perturbation_cams_can_run(resnet: torch.nn.Module, cam_method: type[BaseCAM]) -> None:
    run(cam_method, resnet, 1, (32, 32), 100, False, False)
