"""gradcam.evaluate.confidence: ROAD, confidence change, drop/increase, ARCC; exact values by
hand, agreement with pytorch-grad-cam's metrics on the same maps, and the two protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM as PGCGradCAM
from pytorch_grad_cam.metrics import road as pgc_road
from pytorch_grad_cam.metrics.arcc import ARCC
from pytorch_grad_cam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
)
from pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)

import gradcam
from gradcam.errors import GradCAMError
from gradcam.evaluate import read_synthetic
from gradcam.evaluate.confidence import (
    arcc,
    coherency,
    complexity,
    confidence_change,
    drop_in_confidence,
    increase_in_confidence,
    noisy_linear_imputation,
    removal_mask,
    road,
)
from gradcam.evaluate.inprocess import run_protocol


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=generator)
    maps = torch.rand(2, 32, 32, generator=generator)
    return x, maps


def test_imputation_by_hand() -> None:
    # 3 x 3, the centre removed: the mean of its 8 neighbours, edges 1/6 and corners 1/12.
    image = torch.arange(9.0).view(1, 3, 3)
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[1, 1] = True
    filled = noisy_linear_imputation(image, removed, noise=0.0)
    expected = (1 + 3 + 5 + 7) / 6 + (0 + 2 + 6 + 8) / 12
    assert filled[0, 1, 1].item() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(filled[~removed.expand(1, 3, 3)], image[~removed.expand(1, 3, 3)])
    # A corner: its 3 in-image neighbours, weights renormalized (1/6, 1/6, 1/12).
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[0, 0] = True
    corner = noisy_linear_imputation(image, removed, noise=0.0)[0, 0, 0].item()
    assert corner == pytest.approx((1 / 6 + 3 / 6 + 4 / 12) / (5 / 12), abs=1e-6)


def test_imputation_of_two_unknowns_solves_them_together() -> None:
    # A 1 x 4 row with the middle two removed: x1 = (v0 + x2) / 2, x2 = (x1 + v3) / 2.
    image = torch.tensor([[[0.0, 9.0, 9.0, 3.0]]])
    removed = torch.tensor([[False, True, True, False]])
    filled = noisy_linear_imputation(image, removed, noise=0.0)
    assert filled[0, 0].tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-6)


def test_imputation_with_nothing_kept_is_zero_and_never_nan() -> None:
    filled = noisy_linear_imputation(torch.rand(3, 4, 4), torch.ones(4, 4, dtype=torch.bool))
    assert bool(torch.isfinite(filled).all())
    assert filled.abs().max() < 0.1  # noise only


def test_imputation_matches_pytorch_grad_cam() -> None:
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(3, 12, 10, generator=generator)
    removed = torch.rand(12, 10, generator=generator) > 0.6
    ours = noisy_linear_imputation(image, removed, noise=0.0)
    theirs = pgc_road.NoisyLinearImputer(noise=0.0)(image, (~removed).float())
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("most", [True, False])
def test_removal_mask_is_pytorch_grad_cams(most: bool) -> None:
    cam = torch.rand(9, 7, generator=torch.Generator().manual_seed(4))
    seen: list[torch.Tensor] = []
    remove = RemoveMostRelevantFirst if most else RemoveLeastRelevantFirst
    remove(30, lambda image, keep: seen.append(keep))(torch.zeros(3, 9, 7), cam)
    assert torch.equal(removal_mask(cam, 30, most_relevant_first=most), seen[0] == 0)


def test_confidence_change_by_hand() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 0.0, 0.0]]))
    x = torch.ones(1, 1, 2, 2)
    maps = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    # s(x) = 10, s(x * M) = 1 + 1.5 = 2.5.
    assert confidence_change(net, x, maps, [0]).item() == pytest.approx(-7.5)
    assert drop_in_confidence(net, x, maps, [0]).item() == pytest.approx(7.5)
    assert increase_in_confidence(net, x, maps, [0]).item() == 0.0


@pytest.mark.parametrize("softmax", [False, True])
def test_cam_mult_metrics_agree_with_pytorch_grad_cam(
    net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], softmax: bool
) -> None:
    x, maps = batch
    classes = [3, 7]
    target = ClassifierOutputSoftmaxTarget if softmax else ClassifierOutputTarget
    targets = [target(c) for c in classes]
    cams = maps.numpy()
    for ours, theirs in (
        (confidence_change, CamMultImageConfidenceChange()),
        (drop_in_confidence, DropInConfidence()),
        (increase_in_confidence, IncreaseInConfidence()),
    ):
        got = ours(net, x, maps, classes, softmax=softmax).numpy()
        np.testing.assert_allclose(got, theirs(x, cams, targets, net).ravel(), atol=1e-5)


def _pgc_road_average(most: bool, percentiles: list[int]) -> pgc_road.AveragerAcrossThresholds:
    remove = RemoveMostRelevantFirst if most else RemoveLeastRelevantFirst

    def metric(p: int) -> PerturbationConfidenceMetric:
        return PerturbationConfidenceMetric(remove(p, pgc_road.NoisyLinearImputer(noise=0.0)))

    return pgc_road.AveragerAcrossThresholds(metric, percentiles)


def test_road_agrees_with_pytorch_grad_cam_without_noise(
    net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, maps = batch
    classes, percentiles = [3, 7], [20, 50, 80]
    ours = road(net, x, maps, classes, percentiles=percentiles, noise=0.0)
    targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    morf = _pgc_road_average(True, percentiles)(x, maps.numpy(), targets, net).ravel()
    lerf = _pgc_road_average(False, percentiles)(x, maps.numpy(), targets, net).ravel()
    np.testing.assert_allclose(ours["morf"].numpy(), morf, atol=1e-5)
    np.testing.assert_allclose(ours["lerf"].numpy(), lerf, atol=1e-5)
    np.testing.assert_allclose(ours["combined"].numpy(), (lerf - morf) / 2, atol=1e-5)


def test_road_is_repeatable_with_its_seed(
    net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, maps = batch
    first = road(net, x, maps, [1, 2], percentiles=(50,), seed=5)
    again = road(net, x, maps, [1, 2], percentiles=(50,), seed=5)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_arcc_agrees_with_pytorch_grad_cam(
    net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _ = batch
    classes = [3, 7]
    targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    with PGCGradCAM(model=net, target_layers=[net.layer4[-1]]) as cam:
        maps = cam(input_tensor=x, targets=targets)
        monkeypatch.setattr(
            pgc_road.NoisyLinearImputer,
            "__init__",
            lambda self, noise=0.0, weighting=None: setattr(self, "noise", 0.0),
        )
        theirs = ARCC(cam)(x, maps, targets, net)

        def again(edited: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(cam(input_tensor=edited, targets=targets))

        ours = arcc(net, x, torch.from_numpy(maps), classes, again, noise=0.0)
    np.testing.assert_allclose(ours.arcc.numpy(), theirs, atol=1e-4)


def test_complexity_and_coherency_by_hand() -> None:
    m = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    assert complexity(m).item() == 0.5
    assert coherency(m, m).item() == pytest.approx(1.0)
    assert coherency(m, 1 - m).item() == pytest.approx(0.0, abs=1e-6)


def test_bad_maps_are_refused(net: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(GradCAMError, match="NaN"):
        confidence_change(net, x, torch.full((1, 8, 8), float("nan")), [0])
    with pytest.raises(GradCAMError, match=r"maps must be \(B, H, W\)"):
        confidence_change(net, x, torch.rand(1, 4, 4), [0])
    with pytest.raises(GradCAMError, match="one class per image"):
        confidence_change(net, x, torch.rand(1, 8, 8), [0, 1])
    with pytest.raises(GradCAMError, match="percentile"):
        removal_mask(torch.rand(4, 4), 120, most_relevant_first=True)


@pytest.mark.parametrize("name", ["road", "confidence"])
def test_protocols_run_on_the_shapes_benchmark(name: str) -> None:
    shapes = gradcam.load_model("shapes")
    settings = {"percentiles": (50,)} if name == "road" else {}
    result = run_protocol(name, shapes, read_synthetic("bench", 2), methods=["gradcam"], **settings)
    [row] = result.summary
    assert row["method"] == "gradcam" and row["images"] == 2
    assert all(np.isfinite(v) for k, v in row.items() if k not in ("method", "images"))


def test_protocol_settings_are_checked() -> None:
    with pytest.raises(GradCAMError, match="percentiles"):
        run_protocol("road", None, None, percentiles=(0, 50))  # type: ignore[arg-type]
    with pytest.raises(GradCAMError, match="noise"):
        run_protocol("confidence", None, None, noise=float("nan"))  # type: ignore[arg-type]
