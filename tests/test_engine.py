"""The shared engine (:mod:`gradcam.engine`) on hand-weighted tiny models: exact gradients."""

from __future__ import annotations

import pytest
import torch
from helpers.models import TinyGapNet, TinyGatedNet, tiny_input
from helpers.state import assert_unchanged, snapshot

from gradcam.engine import all_finite, check_input, compute_gradients, input_channels
from gradcam.errors import GradCAMError, TargetError


def test_layer_gradients_are_the_head_weights_over_z() -> None:
    # TinyGapNet: y^c = sum_k W[c, k] * mean(A^k), so dy^c/dA^k_ij = W[c, k] / Z with Z = 4.
    net = TinyGapNet()
    g = compute_gradients(net, tiny_input(), [0, 1], layer=(net.conv, "conv"))
    assert torch.equal(g.scores, torch.tensor([[8.0, -20.0]]))
    assert torch.equal(g.classes, torch.tensor([[0, 1]]))
    assert g.logits is not None and torch.equal(g.logits, torch.tensor([[8.0, -20.0]]))
    assert g.activations is not None and g.gradients is not None
    expected_a = torch.tensor([[[8.0, 12.0], [20.0, 24.0]], [[-4.0, -4.0], [-4.0, -4.0]]])
    assert torch.equal(g.activations[0], expected_a)
    per_channel = torch.tensor([[0.25, 0.5], [-0.25, 0.25]])  # W / 4, (K, C)
    assert g.gradients.shape == (1, 2, 2, 2, 2)
    assert torch.equal(g.gradients[0], per_channel[:, :, None, None].expand(2, 2, 2, 2))
    assert g.input_gradients == {}


def test_input_gradient_is_the_transposed_convolution() -> None:
    # dy^0/dx = 0.25 * (window count of each pixel) + 0.5 * ([in top-left 2x2] - [in bottom-right])
    net = TinyGapNet()
    g = compute_gradients(net, tiny_input(), 0, input_rules=["plain"])
    expected = torch.tensor([[0.75, 1.0, 0.25], [1.0, 1.0, 0.0], [0.25, 0.0, -0.25]])
    assert g.gradients is None and g.activations is None
    assert torch.allclose(g.input_gradients["plain"][0, 0, 0], expected)


def test_relu_gates_the_layer_gradient() -> None:
    # TinyGatedNet: A = [[-7, -3], [5, 9]], y = 5*3 + 9*4, the ReLU after A passes [[0,0],[3,4]].
    net = TinyGatedNet()
    g = compute_gradients(net, tiny_input(), 0, layer=(net.conv, "conv"))
    assert torch.equal(g.scores, torch.tensor([[51.0]]))
    assert g.gradients is not None
    assert torch.equal(g.gradients[0, 0, 0], torch.tensor([[0.0, 0.0], [3.0, 4.0]]))


def test_top1_by_default_and_model_left_as_it_was() -> None:
    net = TinyGapNet().train()
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    before = snapshot(net)
    x = tiny_input()
    x_before = x.clone()
    g = compute_gradients(net, x, None, layer=(net.conv, "conv"), input_rules=["guided"])
    assert torch.equal(g.classes, torch.tensor([[0]]))  # y^0 = 8 > y^1 = -20
    assert set(g.input_gradients) == {"guided"}
    assert_unchanged(before, net)
    assert torch.equal(x, x_before) and not x.requires_grad


def test_bad_calls() -> None:
    net = TinyGapNet()
    with pytest.raises(ValueError, match="needs a layer, input rules"):
        compute_gradients(net, tiny_input(), 0)
    with pytest.raises(GradCAMError, match="batch dimension"):
        compute_gradients(net, tiny_input()[0], 0, layer=(net.conv, "conv"))
    with pytest.raises(TargetError):
        compute_gradients(net, tiny_input(), 5, layer=(net.conv, "conv"))


def test_input_checks() -> None:
    net = TinyGapNet()
    assert input_channels(net) == ("conv", 1)
    assert input_channels(torch.nn.Linear(2, 2)) is None
    assert check_input(torch.zeros(1, 1, 3, 3, dtype=torch.float64), net).dtype == torch.float32
    with pytest.raises(GradCAMError, match="input has 3 channels, but the model takes 1"):
        check_input(torch.zeros(1, 3, 3, 3), net)
    with pytest.raises(GradCAMError, match="NaN or infinite"):
        check_input(torch.full((1, 1, 3, 3), float("nan")), net)
    with pytest.raises(GradCAMError, match="floating"):
        check_input(torch.zeros(1, 1, 3, 3, dtype=torch.int64), net)
    assert all_finite(torch.tensor([1.0, 2.0]))
    assert all_finite(torch.tensor([3e38, 3e38]))  # the sum overflows; every element is finite
    assert not all_finite(torch.tensor([1.0, float("inf")]))
