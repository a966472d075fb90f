"""gradcam.compat.pytorch_grad_cam.metrics against pytorch-grad-cam 1.5.7's metrics on the same
maps and targets (ROAD without noise on both sides)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gradcam.compat.pytorch_grad_cam import GradCAM
from gradcam.compat.pytorch_grad_cam.metrics import arcc, cam_mult_image, road
from gradcam.compat.pytorch_grad_cam.metrics import perturbation_confidence as confidence
from gradcam.compat.pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from gradcam.errors import TargetError

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.metrics import arcc as pgc_arcc  # noqa: E402
from pytorch_grad_cam.metrics import cam_mult_image as pgc_cam_mult  # noqa: E402
from pytorch_grad_cam.metrics import perturbation_confidence as pgc_confidence  # noqa: E402
from pytorch_grad_cam.metrics import road as pgc_road  # noqa: E402
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 5),
    ).eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, np.ndarray]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 12, 12, generator=generator)
    cams = torch.rand(2, 12, 12, generator=generator).numpy()
    return x, cams


def targets(module: Any, softmax: bool = False) -> list[Any]:
    """Classes 1 and 3, one per image, from ``module`` (``pgc_targets`` or ``None``: ours)."""
    if module is None:
        kind: Any = ClassifierOutputSoftmaxTarget if softmax else ClassifierOutputTarget
    else:
        kind = module.ClassifierOutputSoftmaxTarget if softmax else module.ClassifierOutputTarget
    return [kind(1), kind(3)]


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-grad-cam's ROAD classes fix the noise at 0.01; set it to 0."""
    original = pgc_road.NoisyLinearImputer.__init__

    def silent(self: Any, noise: float = 0.0, weighting: Any = None) -> None:
        original(self, 0.0)

    monkeypatch.setattr(pgc_road.NoisyLinearImputer, "__init__", silent)


@pytest.mark.parametrize(
    "name", ["CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence"]
)
@pytest.mark.parametrize("softmax", [False, True])
def test_cam_mult_metrics_agree(
    name: str, softmax: bool, net: nn.Module, data: tuple[torch.Tensor, np.ndarray]
) -> None:
    x, cams = data
    got = getattr(cam_mult_image, name)()(x, cams, targets(None, softmax), net)
    want = getattr(pgc_cam_mult, name)()(x, cams, targets(pgc_targets, softmax), net)
    assert got.shape == (2,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_scores_and_edited_batch_agree(
    net: nn.Module, data: tuple[torch.Tensor, np.ndarray]
) -> None:
    x, cams = data
    ours = confidence.PerturbationConfidenceMetric(cam_mult_image.multiply_tensor_with_cam)
    theirs = pgc_confidence.PerturbationConfidenceMetric(pgc_cam_mult.multiply_tensor_with_cam)
    got, edited = ours(x, cams, targets(None), net, True, False)
    want, their_edited = theirs(x, cams, targets(pgc_targets), net, True, False)
    np.testing.assert_allclose(got, want, atol=1e-5)
    torch.testing.assert_close(edited, their_edited)


@pytest.mark.usefixtures("no_noise")
def test_road_metrics_agree(net: nn.Module, data: tuple[torch.Tensor, np.ndarray]) -> None:
    x, cams = data
    pairs = [
        (road.ROADMostRelevantFirst(70, noise=0.0), pgc_road.ROADMostRelevantFirst(70)),
        (road.ROADLeastRelevantFirst(30, noise=0.0), pgc_road.ROADLeastRelevantFirst(30)),
        (
            road.ROADMostRelevantFirstAverage([30, 70], noise=0.0),
            pgc_road.ROADMostRelevantFirstAverage([30, 70]),
        ),
        (
            road.ROADLeastRelevantFirstAverage([30, 70], noise=0.0),
            pgc_road.ROADLeastRelevantFirstAverage([30, 70]),
        ),
        (road.ROADCombined([30, 70], noise=0.0), pgc_road.ROADCombined([30, 70])),
    ]
    for ours, theirs in pairs:
        got = ours(x, cams, targets(None, True), net)
        want = theirs(x, cams, targets(pgc_targets, True), net)
        assert got.shape == (2,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=type(ours).__name__)


@pytest.mark.usefixtures("no_noise")
def test_arcc_complexity_coherency_agree(
    net: nn.Module, data: tuple[torch.Tensor, np.ndarray]
) -> None:
    x, _ = data
    layers = [net[1]]
    ours_cam = GradCAM(net, layers)
    with contextlib.redirect_stderr(io.StringIO()):
        their_cam = pgc.GradCAM(net, layers)
    cams = ours_cam(x, targets(None))
    np.testing.assert_allclose(arcc.Complexity()(cams), pgc_arcc.Complexity()(cams), atol=1e-6)
    np.testing.assert_allclose(
        arcc.Coherency()(x, cams, targets(None), net, ours_cam),
        pgc_arcc.Coherency()(x, cams, targets(pgc_targets), net, their_cam),
        atol=1e-4,
    )
    got = arcc.ARCC(ours_cam, [20, 60], noise=0.0)(x, cams, targets(None, True), net)
    want = pgc_arcc.ARCC(their_cam, [20, 60])(x, cams, targets(pgc_targets, True), net)
    assert got.shape == (2,)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_refusals(net: nn.Module, data: tuple[torch.Tensor, np.ndarray]) -> None:
    x, cams = data
    with pytest.raises(TargetError, match="2 images, 1 targets"):
        cam_mult_image.DropInConfidence()(x, cams, [ClassifierOutputTarget(1)], net)
    with pytest.raises(NotImplementedError, match="Otsu"):
        confidence.RemoveMostRelevantFirst("auto", road.NoisyLinearImputer())
