"""Grad-CAM's gradient variants and the eigen/aug smoothing options.

Exact values on hand-weighted models, agreement with pytorch-grad-cam and torchcam on ResNet-50,
VGG-16 and the embedded EfficientNet-Lite0 (raw maps at layer resolution), top-K in one pass,
the model left untouched, bad options, the registry and the planner.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from helpers.models import SmallCNN
from helpers.state import assert_unchanged, snapshot
from torch import Tensor, nn

import gradcam
from gradcam import GradCAMError, TopK
from gradcam.engine import compute_gradients
from gradcam.maps import normalize
from gradcam.methods import explain_methods
from gradcam.methods.registry import parse_options
from gradcam.methods.smoothing import principal_projection
from gradcam.methods.variants import plusplus_weights

pgc = pytest.importorskip("pytorch_grad_cam")
torchcam_methods = pytest.importorskip("torchcam.methods")

NAMES = ["hirescam", "gradcam-elementwise", "gradcam++", "smooth-gradcam++", "xgradcam", "layercam"]


def assert_agrees(ours: Tensor, theirs: Tensor) -> None:
    """Largest difference 1e-4 relative to the reference's largest value."""
    theirs = theirs.to(ours.dtype)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


# ---------------------------------------------------------------------------------------------
# 1. Exact values on hand-weighted models
# ---------------------------------------------------------------------------------------------


class LinearHead(nn.Module):
    """The input *is* the layer ``A`` (an identity module), then flatten and a linear layer.

    So ``dy^c/dA`` is the linear layer's row ``c`` whatever the input. On :data:`A_TINY`:

    * ``A^0 = [[1, 2], [3, 4]]`` (``S_0 = 10``), ``A^1 = [[-1, 2], [0, 2]]`` (``S_1 = 3``);
    * class 0: ``g^0 = [[1, -1], [0.5, 0]]``, ``g^1 = [[1, -1], [-0.5, 0.5]]``, so
      ``g^0 A^0 = [[1, -2], [1.5, 0]]`` and ``g^1 A^1 = [[-1, -2], [0, 1]]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(
                torch.tensor(
                    [
                        [1.0, -1.0, 0.5, 0.0, 1.0, -1.0, -0.5, 0.5],
                        [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0],
                    ]
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1))


A_TINY = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 2.0], [0.0, 2.0]]]])


class SquareHead(nn.Module):
    """``y = sum_j A_j^2 / 2`` over a one-channel 1 x 2 layer, so ``g_j = A_j``: the gradient
    depends on the input, which makes Smooth Grad-CAM++'s averages visible."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return (self.features(x) ** 2).flatten(1).sum(dim=1, keepdim=True) / 2


class TestExactValues:
    def test_hirescam(self) -> None:
        # sum_k g^k A^k = [[1 - 1, -2 - 2], [1.5 + 0, 0 + 1]] = [[0, -4], [1.5, 1]]
        result = gradcam.HiResCAM(LinearHead(), "features", relu=False)(A_TINY, 0)
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, -4.0], [1.5, 1.0]]))
        rectified = gradcam.HiResCAM(LinearHead(), "features")(A_TINY, 0)
        torch.testing.assert_close(rectified.raw[0, 0], torch.tensor([[0.0, 0.0], [1.5, 1.0]]))
        assert rectified.weights is None  # element-wise weights
        # the score is the sum of the unrectified map: 0 - 4 + 1.5 + 1
        torch.testing.assert_close(rectified.scores, torch.tensor([[-1.5]]))

    def test_gradcam_elementwise(self) -> None:
        # ReLU(g^0 A^0) + ReLU(g^1 A^1) = [[1, 0], [1.5, 0]] + [[0, 0], [0, 1]]
        result = gradcam.GradCAMElementWise(LinearHead(), "features", relu=False)(A_TINY, 0)
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[1.0, 0.0], [1.5, 1.0]]))

    def test_layercam(self) -> None:
        # ReLU(g^0) A^0 + ReLU(g^1) A^1 = [[1, 0], [1.5, 0]] + [[1, 0], [0, .5]] * A^1
        #                               = [[1, 0], [1.5, 0]] + [[-1, 0], [0, 1]]
        result = gradcam.LayerCAM(LinearHead(), "features", relu=False)(A_TINY, 0)
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 0.0], [1.5, 1.0]]))

    def test_xgradcam(self) -> None:
        # w_0 = (1 - 2 + 1.5 + 0) / 10 = 0.05; w_1 = (-1 - 2 + 0 + 1) / 3 = -2/3
        # 0.05 A^0 - 2/3 A^1 = [[0.05 + 2/3, 0.1 - 4/3], [0.15, 0.2 - 4/3]]
        result = gradcam.XGradCAM(LinearHead(), "features")(A_TINY, 0)
        torch.testing.assert_close(result.weights[0, 0], torch.tensor([0.05, -2 / 3]))
        expected = torch.tensor([[0.05 + 2 / 3, 0.0], [0.15, 0.0]])
        torch.testing.assert_close(result.raw[0, 0], expected)

    def test_xgradcam_channel_with_zero_sum_has_zero_weight(self) -> None:
        # class 1: g^0 = [[0, 1], [0, 1]], g^1 = [[1, 0], [1, 0]]; with A^0 = 0, S_0 = 0 and
        # w_0 = 0 (not 0/0); w_1 = (-1 * 1 + 2 * 0 + 0 * 1 + 2 * 0) / 3 = -1/3
        x = A_TINY.clone()
        x[0, 0] = 0.0
        result = gradcam.XGradCAM(LinearHead(), "features")(x, 1)
        torch.testing.assert_close(result.weights[0, 0], torch.tensor([0.0, -1 / 3]))

    def test_gradcam_plusplus(self) -> None:
        # alpha = 1 / (2 + S_k g) where g > 0:
        # w_0 = 1 * 1/(2 + 10) + 0.5 * 1/(2 + 5) = 1/12 + 1/14 = 13/84
        # w_1 = 1 * 1/(2 + 3) + 0.5 * 1/(2 + 1.5) = 1/5 + 1/7 = 12/35
        result = gradcam.GradCAMPlusPlus(LinearHead(), "features")(A_TINY, 0)
        w0, w1 = 13 / 84, 12 / 35
        torch.testing.assert_close(result.weights[0, 0], torch.tensor([w0, w1]))
        # ReLU(w0 A^0 + w1 A^1): (0, 0) is w0 - w1 < 0
        expected = torch.tensor([[0.0, 2 * w0 + 2 * w1], [3 * w0, 4 * w0 + 2 * w1]])
        torch.testing.assert_close(result.raw[0, 0], expected)

    def test_gradcam_plusplus_eps(self) -> None:
        # alpha = g^2 / (2 g^2 + S g^3 + 1):
        # w_0 = 1 * 1/(2 + 10 + 1) + 0.5 * 0.25/(0.5 + 10 * 0.125 + 1) = 1/13 + 0.125/2.75
        # w_1 = 1 * 1/(2 + 3 + 1) + 0.5 * 0.25/(0.5 + 3 * 0.125 + 1) = 1/6 + 0.125/1.875
        result = gradcam.GradCAMPlusPlus(LinearHead(), "features", eps=1.0)(A_TINY, 0)
        expected = torch.tensor([1 / 13 + 0.125 / 2.75, 1 / 6 + 0.125 / 1.875])
        torch.testing.assert_close(result.weights[0, 0], expected)

    def test_plusplus_weights_ignore_non_positive_gradients(self) -> None:
        activations = torch.ones(1, 1, 1, 3)  # S = 3
        g = torch.tensor([0.0, -2.0, 1.0]).view(1, 1, 1, 1, 3)
        # only g = 1 counts: 1 / (2 + 3) * 1
        torch.testing.assert_close(
            plusplus_weights(activations, g, g**2, g**3), torch.tensor([[[0.2]]])
        )

    def test_smooth_gradcam_plusplus_is_plusplus_when_gradients_ignore_the_input(self) -> None:
        plain = gradcam.GradCAMPlusPlus(LinearHead(), "features")(A_TINY, 0)
        smooth = gradcam.SmoothGradCAMPlusPlus(LinearHead(), "features", num_samples=3, std=0.5)
        result = smooth(A_TINY, 0)
        torch.testing.assert_close(result.weights, plain.weights)
        torch.testing.assert_close(result.raw, plain.raw)  # the map is on the clean input

    def test_smooth_gradcam_plusplus_averages(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # A = [[1, 2]] (S = 3), g = A. Noise [[1, 0]] and [[-1, 2]]: noisy A = [[2, 2]], [[0, 4]].
        # D1 = [1, 3], D2 = [(4 + 0)/2, (4 + 16)/2] = [2, 10],
        # D3 = [(8 + 0)/2, (8 + 64)/2] = [4, 36]
        # alpha = D2 / (2 D2 + 3 D3) = [2/16, 10/128]; w = 1/8 * 1 + 10/128 * 3 = 23/64
        x = torch.tensor([[[[1.0, 2.0]]]])
        smooth = gradcam.SmoothGradCAMPlusPlus(SquareHead(), "features", num_samples=2)
        noise = [torch.tensor([[[[1.0, 0.0]]]]), torch.tensor([[[[-1.0, 2.0]]]])]
        monkeypatch.setattr(smooth, "_noise", lambda _x: noise)
        result = smooth(x, 0)
        torch.testing.assert_close(result.weights, torch.tensor([[[23 / 64]]]))
        torch.testing.assert_close(result.raw, torch.tensor([[[[23 / 64, 46 / 64]]]]))
        # one noisy copy per pass gives the same averages
        smooth.batch_size = 1
        torch.testing.assert_close(smooth(x, 0).weights, result.weights)
        # Grad-CAM++ on the clean input: alpha = 1/(2 + 3 g) = [1/5, 1/8], w = 1/5 + 2/8
        plain = gradcam.GradCAMPlusPlus(SquareHead(), "features")(x, 0)
        torch.testing.assert_close(plain.weights, torch.tensor([[[0.45]]]))

    def test_principal_projection(self) -> None:
        # positions (1, 3) and (0, 2) of two channels: X = [[1, 0], [3, 2]], mean [2, 1],
        # centered [[-1, -1], [1, 1]]: v1 = (1, 1)/sqrt(2), projection [-sqrt 2, sqrt 2]; the
        # unsmoothed map [1, 5] increases, so the sign keeps the projection increasing.
        weighted = torch.tensor([[[[1.0, 3.0]], [[0.0, 2.0]]]])
        root2 = 2**0.5
        torch.testing.assert_close(
            principal_projection(weighted), torch.tensor([[[-root2, root2]]])
        )
        torch.testing.assert_close(
            principal_projection(-weighted), torch.tensor([[[root2, -root2]]])
        )

    def test_aug_smooth(self) -> None:
        # Brightness factors scale A and cancel in the normalization, so the six maps are two:
        # HiResCAM on x: [[0, 0], [1.5, 1]] -> normalized [[0, 0], [1, 2/3]].
        # On flip(x), flipped back: ReLU(sum_k flip(g^k) A^k), flip(g^0) = [[-1, 1], [0, 0.5]],
        # flip(g^1) = [[-1, 1], [0.5, -0.5]]: [[-1, 2], [0, 2]] + [[1, 2], [0, -1]]
        # = [[0, 4], [0, 1]] -> [[0, 1], [0, 0.25]]. Mean: [[0, 0.5], [0.5, 11/24]].
        result = gradcam.HiResCAM(LinearHead(), "features", aug_smooth=True)(A_TINY, 0)
        expected_raw = torch.tensor([[0.0, 0.5], [0.5, 11 / 24]])
        torch.testing.assert_close(result.raw[0, 0], expected_raw)
        torch.testing.assert_close(result.maps[0, 0], expected_raw / 0.5)  # input = layer size
        assert result.weights is None

    def test_counterfactual_negates_the_gradients(self) -> None:
        # -g: sum_k -g^k A^k = [[0, 4], [-1.5, -1]]
        result = gradcam.HiResCAM(LinearHead(), "features", counterfactual=True)(A_TINY, 0)
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 4.0], [0.0, 0.0]]))


# ---------------------------------------------------------------------------------------------
# 2. Agreement with pytorch-grad-cam and torchcam
# ---------------------------------------------------------------------------------------------

MODELS = ["resnet50", "vgg16", "lite0"]


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[nn.Module, str]]:
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None).eval()
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    lite0 = gradcam.load_model()
    return {
        "resnet50": (resnet, "layer4"),
        "vgg16": (vgg, "features.29"),
        "lite0": (lite0.module, lite0.default_layer),
    }


X64 = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def top_class(models: dict[str, tuple[nn.Module, str]]) -> dict[str, int]:
    return {
        n: int(gradcam.GradCAM(m, layer)(X64).classes[0, 0]) for n, (m, layer) in models.items()
    }


@pytest.fixture(scope="module")
def pgc_tensors(
    models: dict[str, tuple[nn.Module, str]], top_class: dict[str, int]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """pytorch-grad-cam's own activations and gradients at the layer (its hooks, its backward)."""
    found = {}
    for name, (model, layer) in models.items():
        module = dict(model.named_modules())[layer]
        with pgc.GradCAM(model, [module]) as cam:
            outputs = cam.activations_and_grads(X64)
            outputs[0, top_class[name]].backward()
            found[name] = (
                cam.activations_and_grads.activations[0].numpy(),
                cam.activations_and_grads.gradients[0].numpy(),
            )
        model.zero_grad(set_to_none=True)
    return found


def pgc_raw(
    cls: Any, model: nn.Module, layer: str, tensors: tuple[np.ndarray, np.ndarray], eigen: bool
) -> Tensor:
    """The peer's map before its ReLU and normalization: ``get_cam_image`` on its tensors."""
    module = dict(model.named_modules())[layer]
    cam = cls(model, [module])
    cam.activations_and_grads.release()
    return torch.from_numpy(np.asarray(cam.get_cam_image(X64, module, None, *tensors, eigen)))


PGC_PAIRS = [
    ("hirescam", "HiResCAM", {}),
    ("gradcam-elementwise", "GradCAMElementWise", {}),
    ("gradcam++", "GradCAMPlusPlus", {"eps": 1e-6}),
    ("xgradcam", "XGradCAM", {}),
    ("layercam", "LayerCAM", {}),
]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize(("name", "peer", "options"), PGC_PAIRS, ids=[p[0] for p in PGC_PAIRS])
def test_agrees_with_pytorch_grad_cam(
    models: dict[str, tuple[nn.Module, str]],
    top_class: dict[str, int],
    pgc_tensors: dict[str, tuple[np.ndarray, np.ndarray]],
    model_name: str,
    name: str,
    peer: str,
    options: dict[str, Any],
) -> None:
    model, layer = models[model_name]
    ours = gradcam.create_method(name, model, layer, relu=False, **options)(
        X64, [top_class[model_name]]
    )
    theirs = pgc_raw(getattr(pgc, peer), model, layer, pgc_tensors[model_name], eigen=False)
    assert_agrees(ours.raw[:, 0], theirs)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", ["xgradcam", "layercam"])
def test_agrees_with_torchcam(
    models: dict[str, tuple[nn.Module, str]],
    top_class: dict[str, int],
    model_name: str,
    name: str,
) -> None:
    model, layer = models[model_name]
    c = top_class[model_name]
    extractor = {"xgradcam": torchcam_methods.XGradCAM, "layercam": torchcam_methods.LayerCAM}
    with extractor[name](model, layer) as cam:
        theirs = cam(c, model(X64), normalized=False)[0]  # ReLU, no normalization
    ours = gradcam.create_method(name, model, layer)(X64, [c])
    assert_agrees(ours.raw[:, 0], theirs)


def _layer_tensors(model: nn.Module, layer: str, x: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """``A`` (B, C, h, w) and ``g`` (B, C, h, w) from our engine, for the relation tests."""
    module = dict(model.named_modules())[layer]
    found = compute_gradients(model, x, [c], layer=(module, layer))
    assert found.activations is not None and found.gradients is not None
    return found.activations, found.gradients[:, 0]


def test_torchcam_gradcampp_relation(
    models: dict[str, tuple[nn.Module, str]], top_class: dict[str, int]
) -> None:
    """torchcam 0.5.0's GradCAMpp divides a masked copy in place, so its alpha stays ``g^2``:
    its map is ``ReLU(sum_k (sum_ij g^2 ReLU(g)) A^k)``, not Grad-CAM++ (see the docstring).
    On VGG-16, whose gradient varies over positions."""
    model, layer = models["vgg16"]
    c = top_class["vgg16"]
    with torchcam_methods.GradCAMpp(model, layer) as cam:
        theirs = cam(c, model(X64), normalized=False)[0]
    activations, g = _layer_tensors(model, layer, X64, c)
    weights = (g * g * torch.relu(g)).sum(dim=(-2, -1))
    assert_agrees(torch.relu(torch.einsum("bc,bchw->bhw", weights, activations)), theirs)


def _torchcam_smooth(
    model: nn.Module, layer: str, c: int, num_samples: int
) -> tuple[Tensor, Tensor]:
    """torchcam's SmoothGradCAMpp weights (seed 0) and the clean activations."""
    with torchcam_methods.SmoothGradCAMpp(model, layer, num_samples=num_samples) as cam:
        model(X64)
        clean = cam.hook_a[0].clone()
        torch.manual_seed(0)
        weights = cam._get_weights(c, None)[0]
    return weights, clean


def test_smooth_gradcam_plusplus_agrees_with_torchcam(
    models: dict[str, tuple[nn.Module, str]], top_class: dict[str, int]
) -> None:
    """At layers followed by global average pooling and a linear head (here EfficientNet-Lite0's
    ``_head_act``; ResNet-50's ``layer4`` too) the gradient is the same at every position and
    for every input, so torchcam's differences (last noisy gradient, ``sum_ab A_ab D^3_ab``)
    vanish: the weights agree, with torchcam's ``eps=1e-8``."""
    model, layer = models["lite0"]
    c = top_class["lite0"]
    theirs, clean = _torchcam_smooth(model, layer, c, num_samples=4)
    ours = gradcam.SmoothGradCAMPlusPlus(model, layer, eps=1e-8, seed=0)(X64, [c])
    assert_agrees(ours.weights[:, 0], theirs)
    # the map is built on the clean activations (torchcam: on the last noisy copy's)
    assert_agrees(ours.raw[:, 0], torch.relu(torch.einsum("bc,bchw->bhw", theirs, clean)))


def test_smooth_gradcam_plusplus_relation_to_torchcam_on_vgg16(
    models: dict[str, tuple[nn.Module, str]], top_class: dict[str, int]
) -> None:
    """On VGG-16 the gradient varies: from the derivatives of the same noisy copies, ours is
    ``sum alpha ReLU(D1)`` with ``alpha = D2 / (2 D2 + S_k D3 + eps)`` (the paper) and
    torchcam's is ``sum alpha' ReLU(g_last)`` with ``alpha' = D2 / (2 D2 + sum_ab A D3 + eps)``."""
    model, layer = models["vgg16"]
    c = top_class["vgg16"]
    theirs, clean = _torchcam_smooth(model, layer, c, num_samples=4)
    ours = gradcam.SmoothGradCAMPlusPlus(model, layer, eps=1e-8, seed=0)(X64, [c])
    generator = torch.Generator().manual_seed(0)
    grads = [
        _layer_tensors(
            model, layer, X64 + torch.normal(0.0, 0.3, X64.shape, generator=generator), c
        )[1]
        for _ in range(4)
    ]
    d1, d2, d3 = (torch.stack([g**p for g in grads]).mean(dim=0) for p in (1, 2, 3))
    total = clean.sum(dim=(-2, -1))[..., None, None]
    alpha = d2 / (2 * d2 + total * d3 + 1e-8)
    assert_agrees(ours.weights[:, 0], (alpha * torch.relu(d1)).sum(dim=(-2, -1)))
    alpha_torchcam = d2 / (2 * d2 + (clean * d3).sum(dim=(-2, -1))[..., None, None] + 1e-8)
    assert_agrees((alpha_torchcam * torch.relu(grads[-1])).sum(dim=(-2, -1)), theirs)
    assert not torch.allclose(ours.weights[:, 0], theirs, rtol=1e-3)


EIGEN_PAIRS = [*PGC_PAIRS, ("gradcam", "GradCAM", {})]


@pytest.mark.parametrize(("name", "peer", "options"), EIGEN_PAIRS, ids=[p[0] for p in EIGEN_PAIRS])
def test_eigen_smooth_agrees_with_pytorch_grad_cam_up_to_sign(
    models: dict[str, tuple[nn.Module, str]],
    top_class: dict[str, int],
    pgc_tensors: dict[str, tuple[np.ndarray, np.ndarray]],
    name: str,
    peer: str,
    options: dict[str, Any],
) -> None:
    """The same projection; LAPACK's sign is arbitrary, ours correlates with the plain map
    (the peer's plain map, which equals ours: see test_agrees_with_pytorch_grad_cam)."""
    model, layer = models["resnet50"]
    method = gradcam.create_method(name, model, layer, relu=False, eigen_smooth=True, **options)
    ours = method(X64, [top_class["resnet50"]]).raw[:, 0]
    peer_cls = getattr(pgc, peer)
    theirs = pgc_raw(peer_cls, model, layer, pgc_tensors["resnet50"], eigen=True)
    sign = 1.0 if float((ours * theirs).sum()) >= 0 else -1.0
    assert_agrees(ours, sign * theirs)
    plain = pgc_raw(peer_cls, model, layer, pgc_tensors["resnet50"], eigen=False)
    assert float((ours * plain).sum()) >= 0


@pytest.mark.parametrize("name", ["layercam"])
def test_aug_smooth_agrees_with_pytorch_grad_cam(
    models: dict[str, tuple[nn.Module, str]], name: str
) -> None:
    """pytorch-grad-cam averages the six de-augmented maps, each normalized at input size;
    we normalize that mean again, so ours is ``normalize(theirs)``. On EfficientNet-Lite0 at
    96 px (3 x 3 maps, so that the flip moves them)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer = models["lite0"]
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    ours = gradcam.create_method(name, model, layer, aug_smooth=True)(x, TopK(1))
    peer = {"gradcam": pgc.GradCAM, "layercam": pgc.LayerCAM}[name]
    with peer(model, [dict(model.named_modules())[layer]]) as cam:
        target = [ClassifierOutputTarget(int(ours.classes[0, 0]))]
        theirs = torch.from_numpy(cam(x, target, aug_smooth=True))
    model.zero_grad(set_to_none=True)
    assert_agrees(ours.maps[:, 0], normalize(theirs))


# ---------------------------------------------------------------------------------------------
# 3. Top-K in one pass, on a batch of two images
# ---------------------------------------------------------------------------------------------


@contextmanager
def forward_count(model: nn.Module) -> Iterator[list[int]]:
    calls = [0]

    def count(*_: object) -> None:
        calls[0] += 1

    handle = model.register_forward_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


SMOOTHING = [{}, {"eigen_smooth": True}, {"aug_smooth": True}]


@pytest.mark.parametrize("options", SMOOTHING, ids=["plain", "eigen", "aug"])
@pytest.mark.parametrize("name", NAMES)
def test_top_k_in_one_pass(name: str, options: dict[str, Any]) -> None:
    model = SmallCNN(classes=6, seed=11).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    method = gradcam.create_method(name, model, "features", **options)
    with forward_count(model) as calls:
        result = method(x, TopK(3))
    passes = 2 if name == "smooth-gradcam++" else 1  # the clean pass, the 4 noisy copies
    assert calls[0] == passes * (2 if options.get("aug_smooth") else 1)
    assert result.raw.shape == (2, 3, 8, 8) and result.maps.shape == (2, 3, 16, 16)
    for k in range(3):
        single = method(x, result.classes[:, k : k + 1])
        torch.testing.assert_close(single.raw[:, 0], result.raw[:, k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(single.maps[:, 0], result.maps[:, k], rtol=1e-5, atol=1e-6)


def test_planner_runs_own_pass_methods_on_their_own() -> None:
    model = SmallCNN(classes=6, seed=13).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(14))
    names = ["gradcam", "hirescam", "layercam", "smooth-gradcam++", "gradcam++"]
    options = {"gradcam++": {"aug_smooth": True}}
    with forward_count(model) as calls:
        found = explain_methods(names, model, x, TopK(2), layer="features", options=options)
    assert calls[0] == 1 + 2 + 2  # shared pass; smooth: clean + noisy; aug: x + 5 copies
    classes = found["gradcam"].classes
    for name in names:
        alone = gradcam.create_method(name, model, "features", **options.get(name, {}))
        expected = alone(x, classes)
        torch.testing.assert_close(found[name].raw, expected.raw, rtol=1e-5, atol=1e-6)
        assert torch.equal(found[name].classes, classes)


# ---------------------------------------------------------------------------------------------
# 4. The model is left untouched; bad options and inputs are refused
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", SMOOTHING, ids=["plain", "eigen", "aug"])
@pytest.mark.parametrize("name", NAMES)
def test_model_and_input_untouched(name: str, options: dict[str, Any]) -> None:
    model = SmallCNN(seed=4)
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # the user's own gradients
    model.train()
    before = snapshot(model)
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    x_before = x.detach().clone()
    gradcam.create_method(name, model, "features", **options)(x, TopK(2))
    with pytest.raises(GradCAMError, match="out of range"):
        gradcam.create_method(name, model, "features", **options)(x, 99)
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("hirescam", {"gradient_rule": "sideways"}, "gradient_rule must be one of"),
        ("gradcam-elementwise", {"eigen_smooth": "yes"}, "eigen_smooth must be true or false"),
        ("layercam", {"aug_smooth": 1}, "aug_smooth must be true or false"),
        ("xgradcam", {"pooling": "max"}, "has no option 'pooling'"),
        ("gradcam++", {"eps": -1e-6}, "eps must be a non-negative number"),
        ("smooth-gradcam++", {"num_samples": 0}, "num_samples must be a positive integer"),
        ("smooth-gradcam++", {"std": -0.1}, "std must be a non-negative number"),
        ("smooth-gradcam++", {"seed": 1.5}, "seed must be an integer or None"),
        ("smooth-gradcam++", {"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_options(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        gradcam.create_method(name, SmallCNN(), "features", **options)


@pytest.mark.parametrize("options", SMOOTHING, ids=["plain", "eigen", "aug"])
@pytest.mark.parametrize("name", NAMES)
def test_bad_input(name: str, options: dict[str, Any]) -> None:
    method = gradcam.create_method(name, SmallCNN(), "features", **options)
    with pytest.raises(GradCAMError, match="add a batch dimension"):
        method(torch.randn(3, 12, 12), 0)


def test_smooth_cannot_use_a_shared_pass() -> None:
    model = SmallCNN()
    smooth = gradcam.SmoothGradCAMPlusPlus(model, "features")
    assert not smooth.shares_pass
    assert (
        gradcam.GradCAM(model).shares_pass
        and not gradcam.GradCAM(model, aug_smooth=True).shares_pass
    )
    grads = compute_gradients(model, torch.randn(1, 3, 8, 8), 0, layer=(model.features, "features"))
    with pytest.raises(ValueError, match="noisy passes of its own"):
        smooth.from_gradients(grads, smooth.plan(torch.randn(1, 3, 8, 8)), (8, 8))


def test_smooth_seed() -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    # at features.3 the ReLUs after the layer make the gradient depend on the noise
    first = gradcam.SmoothGradCAMPlusPlus(model, "features.3", seed=7)(x, 1)
    again = gradcam.SmoothGradCAMPlusPlus(model, "features.3", seed=7)(x, 1)
    other = gradcam.SmoothGradCAMPlusPlus(model, "features.3", seed=8)(x, 1)
    assert torch.equal(first.raw, again.raw) and not torch.equal(first.raw, other.raw)
    torch.manual_seed(7)  # seed=None draws from the global generator
    unseeded = gradcam.SmoothGradCAMPlusPlus(model, "features.3", seed=None)(x, 1)
    torch.testing.assert_close(unseeded.raw, first.raw)


# ---------------------------------------------------------------------------------------------
# 5. The registry: create_method and --option text
# ---------------------------------------------------------------------------------------------

CLASSES = {
    "hirescam": gradcam.HiResCAM,
    "gradcam-elementwise": gradcam.GradCAMElementWise,
    "gradcam++": gradcam.GradCAMPlusPlus,
    "smooth-gradcam++": gradcam.SmoothGradCAMPlusPlus,
    "xgradcam": gradcam.XGradCAM,
    "layercam": gradcam.LayerCAM,
}


@pytest.mark.parametrize("name", NAMES)
def test_registry(name: str) -> None:
    spec = gradcam.method_spec(name)
    assert spec.cls is CLASSES[name] and spec.kind == "heatmap" and spec.needs.layer_gradients
    assert all(option.help for option in spec.options)
    assert spec.option("eigen_smooth").parse("true") is True
    assert spec.option("aug_smooth").parse("off") is False
    assert spec.option("gradient_rule").parse("guided") == "guided"
    method = gradcam.create_method(name, SmallCNN(), "features", eigen_smooth=True)
    assert isinstance(method, CLASSES[name]) and method.eigen_smooth
    assert gradcam.GradCAM.__init__ is not CLASSES[name].__init__  # no pooling option


def test_registry_options_of_the_plusplus_family() -> None:
    spec = gradcam.method_spec("smooth-gradcam++")
    assert spec.option("eps").parse("1e-6") == 1e-6
    assert spec.option("num_samples").parse("8") == 8
    assert spec.option("std").parse("0.15") == 0.15
    assert spec.option("seed").parse("none") is None
    assert spec.option("batch_size").parse("2") == 2
    with pytest.raises(GradCAMError, match="expected int"):
        spec.option("num_samples").parse("many")
    parsed = parse_options(["gradcam", "gradcam++"], ["eps=1e-6", "eigen_smooth=yes"])
    assert parsed == {
        "gradcam": {"eigen_smooth": True},
        "gradcam++": {"eps": 1e-6, "eigen_smooth": True},
    }
