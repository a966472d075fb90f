"""pytorch-grad-cam's FinerCAM, DeepFeatureFactorization, run_dff_on_image and
show_factorization_on_image through the compat package: agreement with pytorch-grad-cam 1.5.7."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import gradcam.compat.pytorch_grad_cam as compat
from gradcam.compat.pytorch_grad_cam.utils import image as compat_image
from gradcam.compat.pytorch_grad_cam.utils import model_targets as compat_targets
from gradcam.errors import TargetError

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.feature_factorization import deep_feature_factorization as pgc_dff  # noqa: E402
from pytorch_grad_cam.utils import image as pgc_image  # noqa: E402
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402


def quiet(fn: Callable[[], Any]) -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn()


def small_net(classes: int = 7) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, classes),
    ).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 16, 16)


CALLS = [
    {},
    {"alpha": 0.6},
    {"comparison_categories": [1, 3]},
    {"comparison_categories": [0, 2]},
    {"target_idx": 2},
    {"eigen_smooth": True},
]


@pytest.mark.parametrize("base", ["GradCAM", "GradCAMPlusPlus", "LayerCAM"])
@pytest.mark.parametrize("kwargs", CALLS)
def test_finer_cam_agrees(base: str, kwargs: dict[str, Any], batch: torch.Tensor) -> None:
    net = small_net()
    layers = [net[3]]
    ours = compat.FinerCAM(net, layers, base_method=getattr(compat, base))
    theirs = quiet(lambda: pgc.FinerCAM(net, layers, base_method=getattr(pgc, base)))
    got = ours(batch, **kwargs)
    want = quiet(lambda: theirs(batch, **kwargs))
    assert got.shape == want.shape == (2, 16, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_finer_cam_with_targets_and_several_layers(batch: torch.Tensor) -> None:
    net = small_net()
    layers = [net[1], net[3]]
    with compat.FinerCAM(net, layers) as ours:
        got = ours(batch, [compat_targets.FinerWeightedTarget(1, [2, 4], 0.5)] * 2)
        none = ours(batch)
    theirs = quiet(lambda: pgc.FinerCAM(net, layers))
    want = quiet(lambda: theirs(batch, [pgc_targets.FinerWeightedTarget(1, [2, 4], 0.5)] * 2))
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(none, quiet(lambda: theirs(batch)), atol=1e-4)


def test_finer_cam_bad_categories(batch: torch.Tensor) -> None:
    net = small_net(2)
    with pytest.raises(TargetError, match="comparison_categories"):
        compat.FinerCAM(net, [net[3]])(batch, comparison_categories=[5])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("head", [False, True])
def test_dff_agrees(head: bool, batch: torch.Tensor) -> None:
    net = small_net()
    classifier = net[6] if head else None
    ours = compat.DeepFeatureFactorization(net, net[3], computation_on_concepts=classifier)
    theirs = pgc.DeepFeatureFactorization(net, net[3], computation_on_concepts=classifier)
    got = ours(batch, 3)
    want = theirs(batch, 3)
    assert len(got) == len(want) == (3 if head else 2)
    assert got[0].shape == want[0].shape == (12, 3)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=1e-3)
    for mine, peer in zip(got[1], want[1], strict=True):
        assert mine.shape == peer.shape == (3, 16, 16)
        np.testing.assert_allclose(mine, peer, atol=2e-3)
    if head:
        np.testing.assert_allclose(got[2], want[2], rtol=1e-3, atol=1e-3)


@pytest.fixture
def peer_colormaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-grad-cam 1.5.7 asks ``matplotlib.cm.get_cmap``, which matplotlib 3.9 removed (its
    default colors fail there; ours do not): give it back for the comparison."""
    import matplotlib

    monkeypatch.setattr(matplotlib.cm, "get_cmap", matplotlib.colormaps.get_cmap, raising=False)


@pytest.mark.usefixtures("peer_colormaps")
def test_show_factorization_agrees() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((12, 10, 3))
    maps = rng.random((3, 12, 10)).astype(np.float32)
    got = compat_image.show_factorization_on_image(img, maps.copy(), image_weight=0.3)
    want = pgc_image.show_factorization_on_image(img, maps.copy(), image_weight=0.3)
    assert got.dtype == want.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    labelled = compat_image.show_factorization_on_image(img, maps, concept_labels=["a", "b", "c"])
    assert labelled.shape == (12, 20, 3)


@pytest.mark.usefixtures("peer_colormaps")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_run_dff_on_image_agrees() -> None:
    net = small_net()
    net.config = SimpleNamespace(id2label={i: f"class {i}" for i in range(7)})  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    x = torch.from_numpy(np.asarray(picture, dtype=np.float32).transpose(2, 0, 1) / 255)
    got = compat.run_dff_on_image(net, net[3], net[6], picture, x, n_components=3)
    want = quiet(lambda: pgc_dff.run_dff_on_image(net, net[3], net[6], picture, x, None, 3))
    assert got.shape == want.shape == (64, 192, 3)
    # The picture and the overlay agree; the legends are drawn by matplotlib each its own way.
    assert np.abs(got[:, :128].astype(int) - want[:, :128].astype(int)).max() <= 1
    assert compat_image.create_labels_legend(np.eye(2), {0: "x", 1: "y"}, 1) == [
        "x:1.00",
        "y:1.00",
    ]
