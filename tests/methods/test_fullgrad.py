"""FullGrad: exact values by hand, pytorch-grad-cam's raw map, top-K, state, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.models import SmallCNN
from helpers.state import assert_unchanged, snapshot
from torch import nn

import gradcam
from gradcam import FullGrad, GradCAMError, TopK
from gradcam.methods.fullgrad import bias_layers, rescale


class LinearBiasNet(nn.Module):
    """1x1 conv (weights [1, -1], bias [0.5, 2]) -> flatten -> linear, one output.

    On ``x = [[1, 2], [3, 4]]``: ``z0 = x + 0.5``, ``z1 = 2 - x``; the linear weights are
    ``v0 = [[1, 2], [0, -1]]`` on channel 0 and ``v1 = [[1, 0], [3, 1]]`` on channel 1, so
    ``dy/dz = v`` and ``dy/dx = v0 - v1``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.fc = nn.Linear(8, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.5, 2.0]))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0, 0.0, -1.0, 1.0, 0.0, 3.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def _x() -> torch.Tensor:
    return torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])


def test_exact_on_a_hand_weighted_net() -> None:
    # Input term: dy/dx = v0 - v1 = [[0, 2], [-3, -2]]; times x: [[0, 4], [-9, -8]];
    #   abs then rescale (min 0, max 9): [[0, 4/9], [1, 8/9]].
    # Bias terms: dy/dz0 * 0.5 = [[0.5, 1], [0, -0.5]] -> abs -> / 1 = [[0.5, 1], [0, 0.5]];
    #   dy/dz1 * 2 = [[2, 0], [6, 2]] -> / 6 = [[1/3, 0], [1, 1/3]]; channel sum
    #   [[5/6, 1], [1, 5/6]]. S = [[5/6, 4/9 + 1], [2, 8/9 + 5/6]].
    # y = (1.5 + 5 + 0 - 4.5) + (1 + 0 - 3 - 2) = -2.
    result = FullGrad(LinearBiasNet())(_x(), [0])
    expected = torch.tensor([[5 / 6, 4 / 9 + 1], [2.0, 8 / 9 + 5 / 6]])
    torch.testing.assert_close(result.raw[0, 0], expected)
    torch.testing.assert_close(result.scores, torch.tensor([[-2.0]]))
    assert result.layers == ("conv",)
    low, high = expected.min(), expected.max()
    torch.testing.assert_close(result.maps[0, 0], (expected - low) / (high - low))


def test_relu_post_processing_by_hand() -> None:
    # relu instead of abs: input [[0, 4], [0, 0]] / 4 = [[0, 1], [0, 0]];
    # bias channel 0 [[0.5, 1], [0, 0]] / 1; channel 1 [[2, 0], [6, 2]] / 6 as before.
    result = FullGrad(LinearBiasNet(), post="relu")(_x(), [0])
    expected = torch.tensor([[0.5 + 1 / 3, 2.0], [1.0, 1 / 3]])
    torch.testing.assert_close(result.raw[0, 0], expected)


def test_batch_norm_bias_is_its_eval_bias() -> None:
    # beta - mu gamma / sqrt(var + eps) = 0.5 - 1 * 4 / sqrt(3 + 1) = -1.5.
    bn = nn.BatchNorm2d(1, eps=1.0)
    with torch.no_grad():
        bn.weight.fill_(4.0)
        bn.bias.fill_(0.5)
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(3.0)
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), bn, nn.BatchNorm2d(1, affine=False))
    found = {name: bias for name, _, bias in bias_layers(net)}
    assert set(found) == {"1", "2"}  # the bias-free conv is left out
    torch.testing.assert_close(found["1"], torch.tensor([-1.5]))
    torch.testing.assert_close(found["2"], torch.tensor([0.0]))  # mean 0, var 1: no shift
    torch.testing.assert_close(rescale(torch.tensor([[[1.0, 3.0]]])), torch.tensor([[[0.0, 1.0]]]))


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "lite0_module"])
def test_matches_pytorch_grad_cam(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytorch_grad_cam.fullgrad_cam as peer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = request.getfixturevalue(name)
    # The final normalization only: the per-channel rescaling inside stays as it is.
    monkeypatch.setattr(peer, "scale_cam_image", lambda cam, target_size=None: np.float32(cam))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours = FullGrad(model)(x, [7])
    with peer.FullGrad(model, []) as cam:
        theirs = torch.from_numpy(cam(x.clone(), [ClassifierOutputTarget(7)]))
    assert len(ours.layers) == len(cam.bias_data) and theirs.abs().max() > 0
    torch.testing.assert_close(
        ours.raw[:, 0], theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max())
    )


def test_top_k_in_one_pass_and_batch() -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    method = FullGrad(model)
    together = method(x, TopK(3))
    assert together.raw.shape == (2, 3, 16, 16)
    for b in range(2):
        for k in range(3):
            alone = method(x[b : b + 1], [int(together.classes[b, k])])
            torch.testing.assert_close(alone.raw[0, 0], together.raw[b, k])
            torch.testing.assert_close(alone.scores[0, 0], together.scores[b, k])


def test_model_and_input_untouched_and_bad_input() -> None:
    model = SmallCNN(seed=4).train()
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # the user's own gradients
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    x_before = x.detach().clone()
    FullGrad(model)(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None
    with pytest.raises(GradCAMError, match="post must be one of"):
        FullGrad(model, post="square")  # type: ignore[arg-type]
    with pytest.raises(GradCAMError, match="out of range"):
        FullGrad(model)(x, 99)
    assert_unchanged(before, model)


def test_registry() -> None:
    model = SmallCNN(seed=5).eval()
    method = gradcam.create_method("fullgrad", model, "features", post="relu")
    assert isinstance(method, FullGrad) and method.post == "relu"
    spec = gradcam.method_spec("fullgrad")
    assert spec.kind == "heatmap" and not spec.needs.layer
    assert spec.option("post").parse("abs") == "abs"
    with pytest.raises(GradCAMError, match="expected one of abs, relu"):
        spec.option("post").parse("max")
