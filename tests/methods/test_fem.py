"""FEM: hand-worked values, pytorch-grad-cam agreement, targets, model state, options."""

from __future__ import annotations

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
from pytorch_grad_cam import FEM as PeerFEM

import gradcam
from gradcam import FEM, GradCAMError, TopK
from gradcam.methods.fem import fem_weights

# Three 2x2 feature maps (row-major): A^0 = [0, 0, 0, 4], A^1 = [1, 1, 1, 1], A^2 = [0, 3, 0, 3].
HAND = features([0, 0, 0, 4], [1, 1, 1, 1], [0, 3, 0, 3], width=2)
NET = FeatureNet([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_hand_worked_weights_and_map() -> None:
    # k = 0.5. A^0: mean 1, std sqrt(3) = 1.732, threshold 1.866: only the 4 passes, w = 1/4.
    # A^1: std 0, threshold 1, nothing is above it (strictly): w = 0. A^2: mean 1.5, std 1.5,
    # threshold 2.25: the two 3s pass, w = 1/2. L = A^0 / 4 + A^2 / 2 = [[0, 1.5], [0, 2.5]].
    result = FEM(NET, "features", k=0.5)(HAND, TopK(2))
    torch.testing.assert_close(result.weights, torch.tensor([[[0.25, 0.0, 0.5]] * 2]))
    expected = torch.tensor([[0.0, 1.5], [0.0, 2.5]])
    torch.testing.assert_close(result.raw[0, 0], expected)
    torch.testing.assert_close(result.raw[0, 1], expected)  # class-agnostic
    torch.testing.assert_close(result.maps[0, 0], expected / 2.5)
    # y = W mean(A): y^0 = 1, y^1 = 1.5.
    assert result.classes.tolist() == [[1, 0]]
    torch.testing.assert_close(result.scores, torch.tensor([[1.5, 1.0]]))
    assert result.layer == "features"


def test_default_k_two_sigma() -> None:
    # k = 2: thresholds 1 + 2 sqrt 3 = 4.46 and 1.5 + 3 = 4.5: no position passes, L = 0, and
    # an all-zero map stays all zero after normalization.
    result = FEM(NET, "features")(HAND)
    assert torch.equal(result.weights, torch.zeros(1, 1, 3))
    assert torch.equal(result.raw, torch.zeros(1, 1, 2, 2))
    assert torch.equal(result.maps, torch.zeros(1, 1, 2, 2))
    torch.testing.assert_close(
        fem_weights(HAND[0], k=0.5), torch.tensor([0.25, 0.0, 0.5])
    )  # any leading shape


@pytest.mark.parametrize(("name", "layer", "side"), CASES)
def test_agrees_with_pytorch_grad_cam(name: str, layer: str, side: int) -> None:
    model = peer_model(name)
    x, _, _, class_id = peer_pass(name)
    for k in (2.0, 1.0):
        ours = FEM(model, layer, k=k)(x, [class_id]).raw[:, 0]
        # The peer rectifies after get_cam_image; its map is a sum of non-negative weights
        # times activations, negative only where activations are.
        assert_close_relative(ours, peer_raw(PeerFEM, name, k=k).clamp(min=0))


def test_top_k_in_one_call_equals_single_calls() -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    method = FEM(model, "features", k=1.0)
    together = method(x, TopK(3))
    assert together.raw.shape == (2, 3, 8, 8) and together.weights is not None
    assert together.weights.shape == (2, 3, 16)
    for k in range(3):
        alone = method(x, together.classes[:, k : k + 1])
        torch.testing.assert_close(alone.raw[:, 0], together.raw[:, k])
        torch.testing.assert_close(alone.scores[:, 0], together.scores[:, k])
    second = method(x[1:], together.classes[1:])
    torch.testing.assert_close(second.raw[0], together.raw[1])


def test_model_and_input_untouched() -> None:
    model = SmallCNN(seed=4)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    model.train()
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    x_before = x.detach().clone()
    gradcam.create_method("fem", model)(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None and torch.is_grad_enabled()


@pytest.mark.parametrize("k", ["2", float("nan"), float("inf"), None, True])
def test_bad_k(k: object) -> None:
    with pytest.raises(GradCAMError, match="k must be a finite number"):
        gradcam.create_method("fem", SmallCNN(), "features", k=k)


def test_registry_entry_and_option_text() -> None:
    spec = gradcam.method_spec("fem")
    assert (spec.kind, spec.cls, spec.needs.layer_gradients) == ("heatmap", FEM, False)
    assert [o.name for o in spec.options] == ["k"]
    assert spec.option("k").parse("1.5") == 1.5
    assert "standard deviations" in spec.option("k").help
    with pytest.raises(GradCAMError, match="option k"):
        spec.option("k").parse("two")
    assert gradcam.create_method("fem", SmallCNN(), k=3).k == 3.0
