"""gradcam.compat.pytorch_grad_cam against pytorch-grad-cam 1.5.7 itself: the same call, the
same arrays (1e-4 for the Grad-CAM family, 1e-3 for the others), on small random models."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import gradcam.compat.pytorch_grad_cam as compat
from gradcam.compat.pytorch_grad_cam.utils import image as compat_image
from gradcam.compat.pytorch_grad_cam.utils import model_targets as compat_targets
from gradcam.compat.pytorch_grad_cam.utils import reshape_transforms as compat_reshapes
from gradcam.errors import GradCAMError, TargetError

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils import image as pgc_image  # noqa: E402
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402
from pytorch_grad_cam.utils import reshape_transforms as pgc_reshapes  # noqa: E402

GRAD_FAMILY = [
    "GradCAM",
    "HiResCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "EigenGradCAM",
    "ShapleyCAM",
]
OTHERS = ["EigenCAM", "KPCA_CAM", "FEM", "FullGrad"]


def quiet(fn: Callable[[], Any]) -> Any:
    """pytorch-grad-cam prints warnings and progress bars; keep the test log readable."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn()


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 64)


def both(name: str, model: nn.Module, layers: list[nn.Module], **kwargs: Any) -> tuple[Any, Any]:
    return getattr(compat, name)(model, layers, **kwargs), quiet(
        lambda: getattr(pgc, name)(model, layers, **kwargs)
    )


@pytest.mark.parametrize("name", GRAD_FAMILY + OTHERS)
def test_every_class_agrees_with_pgc(name: str, net: nn.Module, batch: torch.Tensor) -> None:
    ours, theirs = both(name, net, [net.layer4[-1]])
    got = ours(
        input_tensor=batch,
        targets=[
            compat_targets.ClassifierOutputTarget(3),
            compat_targets.ClassifierOutputTarget(5),
        ],
    )
    want = quiet(
        lambda: theirs(
            input_tensor=batch,
            targets=[pgc_targets.ClassifierOutputTarget(3), pgc_targets.ClassifierOutputTarget(5)],
        )
    )
    assert got.shape == want.shape == (2, 64, 64) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4 if name in GRAD_FAMILY else 1e-3)


@pytest.mark.parametrize("name", [n for n in GRAD_FAMILY if n != "ShapleyCAM"])
def test_several_layers_and_smoothing_agree(name: str, net: nn.Module, batch: torch.Tensor) -> None:
    """The classes whose registry method declares ``multi_layer`` take both layers in one
    registry call (one forward pass) and agree with pytorch-grad-cam's aggregation."""
    ours, theirs = both(name, net, [net.layer3, net.layer4[-1]])
    assert len(ours._methods(False)) == 1 and len(ours._methods(False)[0].multi_layers) == 2
    for options in ({}, {"aug_smooth": True}, {"eigen_smooth": True}):
        got = ours(batch, None, **options)
        want = quiet(lambda: theirs(batch, None, **options))  # noqa: B023
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=str(options))


META = [
    ("SegEigenCAM", {}, 1),
    ("RefineCAM", {}, 2),
    ("RefineCAM", {"base_method": "GradCAM"}, 2),
    ("SESS", {"num_scales": 2, "window_size": 48, "step_size": 32}, 1),
    ("SESS", {"num_scales": 2, "window_size": 48, "pool": "max", "smooth": False}, 1),
]


@pytest.mark.parametrize(("name", "kwargs", "depth"), META)
def test_meta_methods_and_seg_eigen_cam_agree(
    name: str, kwargs: dict[str, Any], depth: int, net: nn.Module, batch: torch.Tensor
) -> None:
    """RefineCAM over layer3 and layer4 (or layer4 alone), SESS and Seg-Eigen-CAM, per-image
    targets and the top classes."""
    layers = [net.layer3, net.layer4[-1]][-depth:]
    base = kwargs.get("base_method")
    ours = getattr(compat, name)(
        net, layers, **{**kwargs, **({"base_method": getattr(compat, base)} if base else {})}
    )
    theirs = quiet(
        lambda: getattr(pgc, name)(
            net, layers, **{**kwargs, **({"base_method": getattr(pgc, base)} if base else {})}
        )
    )
    for classes in ([3, 5], None):
        got = ours(batch, classes and [compat_targets.ClassifierOutputTarget(c) for c in classes])
        want = quiet(
            lambda: theirs(
                batch,
                classes and [pgc_targets.ClassifierOutputTarget(c) for c in classes],  # noqa: B023
            )
        )
        assert got.shape == (2, 64, 64) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=str(classes))


def test_random_cam_agrees_given_the_same_weights(
    net: nn.Module, batch: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytorch-grad-cam draws RandomCAM's weights from numpy's global generator, which gradcam
    cannot replay: given gradcam's draw for ``seed=7``, the maps agree; unseeded, a draw
    follows torch's global generator."""
    from pytorch_grad_cam import random_cam as pgc_random_cam

    from gradcam.methods.random_cam import random_weights

    def uniform(low: float, high: float, size: tuple[int, int]) -> np.ndarray:
        assert (low, high) == (-1, 1)
        return random_weights((size[0], 1, size[1]), 7)[:, 0].double().numpy()

    monkeypatch.setattr(pgc_random_cam.np.random, "uniform", uniform)
    layers = [net.layer4[-1]]
    targets = [compat_targets.ClassifierOutputTarget(3), compat_targets.ClassifierOutputTarget(5)]
    got = compat.RandomCAM(net, layers, seed=7)(batch, targets)
    want = quiet(
        lambda: pgc.RandomCAM(net, layers)(
            batch, [pgc_targets.ClassifierOutputTarget(3), pgc_targets.ClassifierOutputTarget(5)]
        )
    )
    np.testing.assert_allclose(got, want, atol=1e-4)
    unseeded = compat.RandomCAM(net, layers)
    torch.manual_seed(3)
    first = unseeded(batch, targets)
    torch.manual_seed(3)
    assert np.array_equal(first, unseeded(batch, targets))
    assert np.isfinite(first).all() and first.min() >= 0 and first.max() <= 1
    assert not np.array_equal(first, unseeded(batch, targets))  # a new draw


def test_meta_method_limits(net: nn.Module, batch: torch.Tensor) -> None:
    with pytest.raises(NotImplementedError, match="aug_smooth"):
        compat.RefineCAM(net, [net.layer3, net.layer4])(batch, None, eigen_smooth=True)
    with pytest.raises(NotImplementedError, match="2 target layers"):
        compat.SESS(net, [net.layer3, net.layer4])
    with pytest.raises(ValueError, match="pool"):  # pytorch-grad-cam raises ValueError too
        compat.SESS(net, [net.layer4], pool="median")
    with pytest.raises(NotImplementedError, match="eigen_smooth"):
        compat.SESS(net, [net.layer4], base_method=compat.ShapleyCAM)(batch, None, True)


def tiny_net() -> nn.Module:
    """8 channels at the layer, one of them constant (Score-CAM's blank mask)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()
    with torch.no_grad():
        net[0].weight[7] = 0.0
        net[0].bias[7] = 0.5
    return net


@pytest.mark.parametrize("name", ["ScoreCAM", "AblationCAM"])
def test_perturbation_classes_agree(name: str) -> None:
    net = tiny_net()
    x = torch.randn(2, 3, 32, 32)
    ours, theirs = both(name, net, [net[1]])
    targets = [1, 2]
    got = ours(x, [compat_targets.ClassifierOutputTarget(c) for c in targets])
    want = quiet(lambda: theirs(x, [pgc_targets.ClassifierOutputTarget(c) for c in targets]))
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_vit_reshape_transform_agrees() -> None:
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    layer = [vit.encoder.layers[-1].ln_1]

    def ours_reshape(t: torch.Tensor) -> torch.Tensor:
        return compat_reshapes.vit_reshape_transform(t, 4, 4)

    def pgc_reshape(t: torch.Tensor) -> torch.Tensor:
        return pgc_reshapes.vit_reshape_transform(t, 4, 4)

    got = compat.GradCAM(vit, layer, reshape_transform=ours_reshape)(x, None)
    want = quiet(lambda: pgc.GradCAM(vit, layer, reshape_transform=pgc_reshape)(x, None))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_guided_backprop_agrees(net: nn.Module, batch: torch.Tensor) -> None:
    got = compat.GuidedBackpropReLUModel(net)(batch[:1], target_category=4)
    want = quiet(lambda: pgc.GuidedBackpropReLUModel(net, device="cpu")(batch[:1], 4))
    assert got.shape == want.shape == (64, 64, 3)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-4)


def test_targets_agree() -> None:
    torch.manual_seed(0)
    logits = torch.randn(10)
    mask = (np.arange(16).reshape(4, 4) % 3 == 0).astype(np.float32)
    seg = torch.randn(3, 4, 4)
    cases = [
        ("ClassifierOutputTarget", (2,), logits),
        ("ClassifierOutputSoftmaxTarget", (2,), logits),
        ("ClassifierOutputReST", (2,), logits),
        ("BinaryClassifierOutputTarget", (0,), logits[:1]),
        ("FinerWeightedTarget", (2, [3, 4], 0.7), logits),
        ("SemanticSegmentationTarget", (1, mask), seg),
    ]
    for name, args, output in cases:
        got = getattr(compat_targets, name)(*args)(output)
        want = getattr(pgc_targets, name)(*args)(output)
        torch.testing.assert_close(got, want.reshape(got.shape), msg=name)
    detections = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.8]),
    }
    boxes = [np.array([0.0, 0, 9, 10]), np.array([5.0, 5, 20, 19])]
    got = compat_targets.FasterRCNNBoxScoreTarget([1, 2], boxes)(detections)
    want = pgc_targets.FasterRCNNBoxScoreTarget([1, 2], boxes)(detections)
    torch.testing.assert_close(got, want)


def test_image_utils_agree() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((12, 10, 3), dtype=np.float32)
    mask = rng.random((12, 10), dtype=np.float32)
    for use_rgb in (False, True):
        np.testing.assert_array_equal(
            compat_image.show_cam_on_image(rgb, mask, use_rgb=use_rgb, image_weight=0.3),
            pgc_image.show_cam_on_image(rgb, mask, use_rgb=use_rgb, image_weight=0.3),
        )
    torch.testing.assert_close(
        compat_image.preprocess_image(rgb, mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.4]),
        pgc_image.preprocess_image(rgb, mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.4]),
    )
    cams = rng.random((2, 3, 5), dtype=np.float32)
    np.testing.assert_allclose(
        compat_image.scale_cam_image(cams, (20, 9)),
        pgc_image.scale_cam_image(cams, (20, 9)),
        atol=1e-6,
    )
    np.testing.assert_allclose(compat_image.scale_cam_image(cams), pgc_image.scale_cam_image(cams))
    gradient = rng.normal(size=(6, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        compat_image.deprocess_image(gradient), pgc_image.deprocess_image(gradient)
    )
    with pytest.raises(GradCAMError):
        compat_image.show_cam_on_image(rgb * 255, mask)


def test_reshape_transforms_agree() -> None:
    tokens = torch.randn(2, 1 + 16, 8)
    torch.testing.assert_close(
        compat_reshapes.vit_reshape_transform(tokens, 4, 4),
        pgc_reshapes.vit_reshape_transform(tokens, 4, 4),
    )
    swin = torch.randn(2, 9, 8)
    torch.testing.assert_close(
        compat_reshapes.swinT_reshape_transform(swin, 3, 3),
        pgc_reshapes.swinT_reshape_transform(swin, 3, 3),
    )
    levels = {"0": torch.randn(1, 2, 8, 8), "pool": torch.randn(1, 2, 2, 2)}
    torch.testing.assert_close(
        compat_reshapes.fasterrcnn_reshape_transform(levels),
        pgc_reshapes.fasterrcnn_reshape_transform(levels),
    )


def test_context_manager_and_target_errors(net: nn.Module, batch: torch.Tensor) -> None:
    with compat.GradCAM(model=net, target_layers=[net.layer4]) as cam:
        one = cam(input_tensor=batch[:1], targets=[compat_targets.ClassifierOutputTarget(1)])
        assert one.shape == (1, 64, 64)
        with pytest.raises(TargetError, match="1 per-image targets for a batch of 2"):
            cam(batch, [compat_targets.ClassifierOutputTarget(1)])
        with pytest.raises(TargetError, match="not callable"):
            cam(batch, [1, 2])
    assert not any(m._forward_hooks for m in net.modules())
    with pytest.raises(NotImplementedError, match="eigen_smooth"):
        compat.ShapleyCAM(net, [net.layer4])(batch, None, eigen_smooth=True)


def test_methods_page_names_the_settings_the_compat_classes_use() -> None:
    """docs/methods.md's "agrees with" column names the options that give pytorch-grad-cam's
    arrays; the classes tested above against pytorch-grad-cam use exactly those."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "methods.md").read_text()
    rows = {
        line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `")
    }
    settings = {
        "`gradcam++`": (compat.GradCAMPlusPlus, "eps", 1e-6, "`eps=1e-6`"),
        "`score-cam`": (compat.ScoreCAM, "align_corners", True, "`align_corners=True`"),
        "`eigen-cam`, `eigen-gradcam`": (compat.EigenCAM, "sign", "lapack", '`sign="lapack"`'),
    }
    for method, (cls, option, value, spelled) in settings.items():
        assert spelled in rows[method], method
        assert cls.options[option] == value
    assert compat.EigenGradCAM.options["sign"] == "lapack"
    assert 'smooth_sign="lapack"' in page
    for cls in (compat.GradCAM, compat.HiResCAM, compat.LayerCAM, compat.XGradCAM):
        assert cls.options["smooth_sign"] == "lapack"
