"""Eigen-CAM, Eigen-Grad-CAM and KPCA-CAM: hand-worked values, pytorch-grad-cam agreement,
targets, model state, options."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.activation_peers import (
    CASES,
    FeatureNet,
    assert_close_relative,
    features,
    peer_model,
    peer_pass,
    peer_raw,
)
from helpers.models import SmallCNN
from helpers.state import assert_unchanged, snapshot
from pytorch_grad_cam import KPCA_CAM as PeerKPCA
from pytorch_grad_cam import EigenCAM as PeerEigenCAM
from pytorch_grad_cam import EigenGradCAM as PeerEigenGradCAM

import gradcam
from gradcam import KPCACAM, EigenCAM, EigenGradCAM, GradCAMError, TopK
from gradcam.methods.eigen_cam import kernel_projection, principal_projection

ROOT5 = math.sqrt(5)


class TestHandWorked:
    def test_eigen_cam_rank_one_features(self) -> None:
        # A^0 = [1, 2, 6], A^1 = [2, 4, 12] at three positions. Centred per channel (means 3
        # and 6) the rows are (-2, -4), (-1, -2), (3, 6) = a_i (1, 2) with a = (-2, -1, 3), so
        # v_1 = (1, 2) / sqrt 5 and M v_1 = sqrt(5) a = [-2 sqrt5, -sqrt5, 3 sqrt5]; its largest
        # entry is positive, so "peak" keeps that sign; the ReLU keeps [0, 0, 3 sqrt5].
        x = features([1, 2, 6], [2, 4, 12])
        net = FeatureNet([[1.0, 0.0], [0.0, 1.0]])
        signed = EigenCAM(net, "features", relu=False)(x, TopK(2))
        expected = torch.tensor([[-2 * ROOT5, -ROOT5, 3 * ROOT5]])
        torch.testing.assert_close(signed.raw[0, 0], expected)
        torch.testing.assert_close(signed.raw[0, 1], expected)  # class-agnostic
        result = EigenCAM(net, "features")(x, TopK(2))
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 0.0, 3 * ROOT5]]))
        torch.testing.assert_close(result.maps[0, 0], torch.tensor([[0.0, 0.0, 1.0]]))
        assert result.weights is None and result.layer == "features"
        # y = W mean(A): y^0 = 3, y^1 = 6, so TopK(2) is class 1 then class 0.
        assert result.classes.tolist() == [[1, 0]]
        torch.testing.assert_close(result.scores, torch.tensor([[6.0, 3.0]]))

    def test_sign_rules(self) -> None:
        # A^0 = [4, 4, 4, 0], A^1 = 0: centred A^0 is [1, 1, 1, -3], v_1 = (1, 0) up to sign.
        # "peak": the entry of largest magnitude (-3) must be positive, so [-1, -1, -1, 3];
        # "activation": positively correlated with the centred channel sum [1, 1, 1, -3].
        x = features([4, 4, 4, 0], [0, 0, 0, 0])
        net = FeatureNet([[1.0, 0.0]])
        peak = EigenCAM(net, "features", relu=False)(x).raw[0, 0]
        torch.testing.assert_close(peak, torch.tensor([[-1.0, -1.0, -1.0, 3.0]]))
        act = EigenCAM(net, "features", sign="activation", relu=False)(x).raw[0, 0]
        torch.testing.assert_close(act, torch.tensor([[1.0, 1.0, 1.0, -3.0]]))
        relu = EigenCAM(net, "features", sign="activation")(x).raw[0, 0]
        torch.testing.assert_close(relu, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))

    def test_eigen_gradcam_is_class_specific(self) -> None:
        # A^0 = [1, 2, 6], A^1 = [5, 1, 6], W = [[3, 0], [0, 6]], Z = 3, so dy^0/dA = (1, 0) and
        # dy^1/dA = (0, 2) everywhere. Class 0: the features are (A^0, 0), centred
        # [-2, -1, 3], already peak-positive: ReLU gives [0, 0, 3]. Class 1: (0, 2 A^1) =
        # (0, [10, 2, 12]), centred [2, -6, 4]; -6 is the peak, so [-2, 6, -4]: ReLU [0, 6, 0].
        # y^0 = 3 * 3 = 9 and y^1 = 6 * 4 = 24.
        x = features([1, 2, 6], [5, 1, 6])
        result = EigenGradCAM(FeatureNet([[3.0, 0.0], [0.0, 6.0]]), "features")(x, [0, 1])
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 0.0, 3.0]]))
        torch.testing.assert_close(result.raw[0, 1], torch.tensor([[0.0, 6.0, 0.0]]))
        torch.testing.assert_close(result.scores, torch.tensor([[9.0, 24.0]]))
        assert result.weights is None

    def test_kpca_linear_kernel_is_pca(self) -> None:
        # The linear kernel of the rows of the first test is K = 5 a a^T, a = (-2, -1, 3):
        # lambda_1 = 5 |a|^2 = 70, a_1 = a / sqrt 14, so sqrt(70) a / sqrt(14) = sqrt(5) a.
        x = features([1, 2, 6], [2, 4, 12])
        net = FeatureNet([[1.0, 0.0]])
        result = KPCACAM(net, "features", kernel="linear", relu=False)(x)
        torch.testing.assert_close(
            result.raw[0, 0], torch.tensor([[-2 * ROOT5, -ROOT5, 3 * ROOT5]])
        )
        f = torch.randn(2, 8, 3, 4, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(kernel_projection(f, "linear"), principal_projection(f))

    def test_kpca_sigmoid_kernel(self) -> None:
        # Two positions, (2, 2) and (0, 0): centred +-u, u = (1, 1), gamma = 1 / C = 1/2.
        # k(u, u) = tanh(|u|^2 / 2 + 1) = tanh 2, k(u, -u) = tanh(0) = 0. For two points the
        # centred kernel is (d / 4) [[1, -1], [-1, 1]], d = k11 + k22 - 2 k12 = 2 tanh 2, with
        # lambda_1 = d / 2 and a_1 = (1, -1) / sqrt 2: the projection is +-sqrt(d) / 2. The
        # "activation" rule makes the first position (channel sum 4) positive.
        x = features([2, 0], [2, 0])
        value = math.sqrt(2 * math.tanh(2.0)) / 2  # 0.69427
        net = FeatureNet([[1.0, 0.0]])
        result = KPCACAM(net, "features", sign="activation", relu=False)(x)
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[value, -value]]))
        rbf = KPCACAM(net, "features", kernel="rbf", sign="activation")(x)
        # rbf: k11 = 1, k12 = exp(-|2u|^2 / 2) = exp(-4), d = 2 - 2 exp(-4).
        torch.testing.assert_close(
            rbf.raw[0, 0], torch.tensor([[math.sqrt(2 - 2 * math.exp(-4)) / 2, 0.0]])
        )


@pytest.mark.parametrize(("name", "layer", "side"), CASES)
def test_agrees_with_pytorch_grad_cam(name: str, layer: str, side: int) -> None:
    model = peer_model(name)
    x, _, _, class_id = peer_pass(name)
    # Eigen-CAM: the peer keeps the sign LAPACK returns; ours is that map or its negative,
    # and is peak-positive.
    theirs = peer_raw(PeerEigenCAM, name)
    ours = EigenCAM(model, layer, relu=False)(x, [class_id]).raw[:, 0]
    sign = 1.0 if float((ours * theirs).sum()) >= 0 else -1.0
    assert_close_relative(ours, sign * theirs)
    assert float(ours.flatten()[ours.abs().argmax()]) > 0
    # Eigen-Grad-CAM, on the gradient of the top-1 class.
    theirs = peer_raw(PeerEigenGradCAM, name)
    ours = EigenGradCAM(model, layer, relu=False)(x, [class_id]).raw[:, 0]
    sign = 1.0 if float((ours * theirs).sum()) >= 0 else -1.0
    assert_close_relative(ours, sign * theirs)
    # KPCA-CAM: scikit-learn fixes the sign as "peak" does, so the maps are equal.
    theirs = peer_raw(PeerKPCA, name)
    result = KPCACAM(model, layer, relu=False)(x, [class_id])
    assert_close_relative(result.raw[:, 0], theirs)
    assert_close_relative(KPCACAM(model, layer)(x, [class_id]).raw[:, 0], theirs.clamp(min=0))


@pytest.fixture(scope="module")
def small() -> SmallCNN:
    return SmallCNN(seed=3).eval()


@pytest.mark.parametrize("name", ["eigen-cam", "eigen-gradcam", "kpca-cam"])
def test_top_k_in_one_call_equals_single_calls(name: str, small: SmallCNN) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    method = gradcam.create_method(name, small, "features")
    together = method(x, TopK(3))
    assert together.raw.shape == (2, 3, 8, 8) and together.maps.shape == (2, 3, 16, 16)
    for k in range(3):
        alone = method(x, together.classes[:, k : k + 1])
        torch.testing.assert_close(alone.raw[:, 0], together.raw[:, k])
        torch.testing.assert_close(alone.scores[:, 0], together.scores[:, k])
    # Each image is projected on its own principal component.
    first = method(x[:1], together.classes[:1])
    torch.testing.assert_close(first.raw[0], together.raw[0], rtol=1e-4, atol=1e-5)


def test_eigen_gradcam_shares_the_gradcam_pass(small: SmallCNN) -> None:
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    found = gradcam.explain_methods(["gradcam", "eigen-gradcam"], small, x, TopK(2))
    alone = EigenGradCAM(small)(x, TopK(2))
    torch.testing.assert_close(found["eigen-gradcam"].raw, alone.raw)


@pytest.mark.parametrize("name", ["eigen-cam", "eigen-gradcam", "kpca-cam"])
def test_model_and_input_untouched(name: str) -> None:
    model = SmallCNN(seed=4)
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # the user's own gradients
    model.train()
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    x_before = x.detach().clone()
    gradcam.create_method(name, model)(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None and torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("eigen-cam", {"sign": "up"}, "sign must be one of"),
        ("eigen-gradcam", {"sign": "max"}, "sign must be one of"),
        ("eigen-gradcam", {"gradient_rule": "nope"}, "gradient_rule"),
        ("kpca-cam", {"kernel": "laplace"}, "kernel must be one of"),
        ("kpca-cam", {"gamma": -1.0}, "gamma must be positive"),
        ("eigen-cam", {"n_concepts": 3}, "has no option"),
    ],
)
def test_bad_options(name: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        gradcam.create_method(name, SmallCNN(), "features", **options)


def test_registry_entries_and_option_text() -> None:
    spec = gradcam.method_spec("eigen-cam")
    assert (spec.kind, spec.cls, spec.needs.layer_gradients) == ("heatmap", EigenCAM, False)
    assert spec.option("sign").parse("activation") == "activation"
    assert spec.option("relu").parse("false") is False
    assert "largest-magnitude" in spec.option("sign").help
    assert gradcam.method_spec("eigen-gradcam").needs.layer_gradients
    kpca = gradcam.method_spec("kpca-cam")
    assert kpca.option("kernel").parse("rbf") == "rbf"
    assert kpca.option("gamma").parse("0.5") == 0.5 and kpca.option("gamma").parse("none") is None
    with pytest.raises(GradCAMError, match="kernel"):
        kpca.option("kernel").parse("laplace")
    method = gradcam.create_method("kpca-cam", SmallCNN(), "features", kernel="poly", gamma=0.1)
    assert (method.kernel, method.gamma) == ("poly", 0.1)
