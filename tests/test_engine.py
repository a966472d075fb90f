"""The shared engine (:mod:`gradcam.engine`) on hand-weighted tiny models: exact gradients."""

from __future__ import annotations

import pytest
import torch
from helpers.models import TinyGapNet, TinyGatedNet, tiny_input
from helpers.state import assert_unchanged, snapshot

import gradcam
from gradcam.engine import (
    all_finite,
    check_input,
    compute_gradients,
    fast_layout,
    input_channels,
    input_layouts,
    run_in_fast_layout,
)
from gradcam.errors import GradCAMError, TargetError
from gradcam.synthetic import make_scene


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


class _ViewHead(torch.nn.Module):
    """A CNN whose head views its feature maps: it rejects channels-last input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x))
        return self.fc(a.view(a.shape[0], -1))


def test_fast_layout_is_off_by_default_and_per_block() -> None:
    x = torch.zeros(1, 3, 8, 8)
    net = _ViewHead()
    assert input_layouts(net, x) == (None,)
    with fast_layout():
        assert input_layouts(net, x) == (torch.channels_last, None)
        assert input_layouts(net, torch.zeros(2, 5)) == (None,)  # not an image batch
        with fast_layout(False):
            assert input_layouts(net, x) == (None,)
    assert input_layouts(net, x) == (None,)


def test_fast_layout_gives_the_same_gradients_on_the_shapes_cnn() -> None:
    loaded = gradcam.load_model("shapes")
    model = loaded.module
    x = loaded.preprocess(make_scene(3, shapes=["star", "ring"]).image)
    layer = (model.get_submodule("features"), "features")
    plain = compute_gradients(model, x, [0, 3], layer=layer, input_rules=["guided"])
    with fast_layout():
        fast = compute_gradients(model, x, [0, 3], layer=layer, input_rules=["guided"])
    assert fast.activations is not None and fast.gradients is not None
    assert fast.activations.is_contiguous() and fast.gradients.is_contiguous()
    assert fast.input_gradients["guided"].is_contiguous()
    assert plain.activations is not None and plain.gradients is not None
    torch.testing.assert_close(fast.scores, plain.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.activations, plain.activations, rtol=1e-5, atol=1e-5)
    scale = float(plain.gradients.abs().max())
    torch.testing.assert_close(fast.gradients, plain.gradients, rtol=1e-4, atol=1e-5 * scale)


def test_a_model_that_rejects_channels_last_falls_back_and_is_remembered() -> None:
    net = _ViewHead()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError, match="view"):
        net(x.contiguous(memory_format=torch.channels_last))
    before = snapshot(net)
    plain = compute_gradients(net, x, [1], layer=(net.conv, "conv"))
    with fast_layout():
        fast = compute_gradients(net, x, [1], layer=(net.conv, "conv"))
        assert input_layouts(net, x) == (None,)  # remembered: no second failed attempt
        # by the model itself, not for others (a table keyed by models is gone)
        assert vars(net)["_gradcam_contiguous_only"] is True
        assert input_layouts(_ViewHead(), x) == (torch.channels_last, None)
    assert fast.gradients is not None and plain.gradients is not None
    assert torch.equal(fast.gradients, plain.gradients)
    assert_unchanged(before, net)


def test_an_input_no_layout_fits_is_one_error() -> None:
    net = _ViewHead()
    with fast_layout(), pytest.raises(GradCAMError, match="cannot take an input of shape"):
        run_in_fast_layout(net, torch.zeros(1, 3, 6, 6), net)
