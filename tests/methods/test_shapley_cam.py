"""ShapleyCAM: exact values by hand, pytorch-grad-cam's raw map, top-K, state, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.models import DEFAULT_LAYERS, SmallCNN, TinyGapNet, tiny_input
from helpers.state import assert_unchanged, snapshot
from torch import nn

import gradcam
from gradcam import GradCAM, GradCAMError, ShapleyCAM, TopK


class QuadraticHead(nn.Module):
    """TinyGapNet's conv, then ``y = m0 m1 / 8 + m0`` with ``m_k`` the spatial mean of ``A^k``.

    On ``tiny_input()``: ``A^0 = [[8, 12], [20, 24]]`` (m0 = 16), ``A^1 = -4`` (m1 = -4), so
    ``y = -8 + 16 = 8``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = TinyGapNet().conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.conv(x).mean(dim=(2, 3))
        return (m[:, 0] * m[:, 1] / 8 + m[:, 0]).unsqueeze(1)


def test_exact_with_a_curved_score() -> None:
    # g^0 = (m1 / 8 + 1) / 4 = 0.125 and g^1 = (m0 / 8) / 4 = 0.5 at every position.
    # The only second derivatives are d2y / dA^0_ij dA^1_i'j' = 1 / (8 * 4 * 4) = 1/128, so
    # (H A)^0 = sum(A^1) / 128 = -0.125 and (H A)^1 = sum(A^0) / 128 = 0.5.
    # w = g - H A / 2 = (0.125 + 0.0625, 0.5 - 0.25) = (0.1875, 0.25) (Grad-CAM: (0.125, 0.5)).
    # L = 0.1875 A^0 + 0.25 A^1 = [[1.5, 2.25], [3.75, 4.5]] - 1.
    result = ShapleyCAM(QuadraticHead(), "conv")(tiny_input(), [0])
    torch.testing.assert_close(result.weights, torch.tensor([[[0.1875, 0.25]]]))
    torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.5, 1.25], [2.75, 3.5]]))
    torch.testing.assert_close(result.scores, torch.tensor([[8.0]]))
    grad_cam = GradCAM(QuadraticHead(), "conv")(tiny_input(), [0])
    torch.testing.assert_close(grad_cam.weights, torch.tensor([[[0.125, 0.5]]]))


def test_equals_gradcam_for_a_linear_head() -> None:
    # TinyGapNet is linear after the conv: H = 0, so ShapleyCAM is Grad-CAM, [[0, 1], [3, 4]].
    result = ShapleyCAM(TinyGapNet(), "conv")(tiny_input(), [0, 1])
    torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 1.0], [3.0, 4.0]]))
    torch.testing.assert_close(result.raw[0, 1], torch.zeros(2, 2))
    torch.testing.assert_close(result.weights, torch.tensor([[[0.25, 0.5], [-0.25, 0.25]]]))


@pytest.mark.parametrize("score", ["logit", "softmax"])
@pytest.mark.parametrize("name", ["resnet50", "vgg16", "lite0_module"])
def test_matches_pytorch_grad_cam(
    name: str, score: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytorch_grad_cam.base_cam as peer_base
    from pytorch_grad_cam import ShapleyCAM as PeerShapleyCAM
    from pytorch_grad_cam.utils.model_targets import (
        ClassifierOutputSoftmaxTarget,
        ClassifierOutputTarget,
    )

    model, layer_name = request.getfixturevalue(name), DEFAULT_LAYERS[name]
    layer = model.get_submodule(layer_name)
    # Raw maps: the peer's normalizations and resizing become the identity.
    monkeypatch.setattr(peer_base, "scale_cam_image", lambda cam, target_size=None: np.float32(cam))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        c = int(model(x).argmax())  # the top class: its map has positive evidence
    if score == "logit":
        ours = ShapleyCAM(model, layer_name)(x, [c])
        peer_target = ClassifierOutputTarget(c)
    else:
        ours = ShapleyCAM(model, layer_name)(x, lambda out: out.softmax(dim=1)[:, c])
        peer_target = ClassifierOutputSoftmaxTarget(c)
    # The peer fails when the gradient does not depend on A (a linear head) unless the
    # parameters require grad; it takes gradients to the input only, so they stay None.
    model.requires_grad_(True)
    try:
        with PeerShapleyCAM(model, [layer]) as cam:
            theirs = torch.from_numpy(cam(x.clone(), [peer_target]))
    finally:
        model.requires_grad_(False)
    assert theirs.abs().max() > 0
    torch.testing.assert_close(
        ours.raw[:, 0], theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max())
    )


def test_softmax_target_differs_from_gradcam() -> None:
    # A softmax probability is curved in A: the Hessian term is not zero.
    model = SmallCNN(seed=1).eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    prob = [lambda out: out.softmax(dim=1)[:, 2]]
    shapley = ShapleyCAM(model, "features")(x, prob)
    grad_cam = GradCAM(model, "features")(x, prob)
    assert not torch.allclose(shapley.weights, grad_cam.weights)


def test_top_k_in_one_pass_and_batch() -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    method = ShapleyCAM(model, "features")
    together = method(x, TopK(3))
    assert together.raw.shape == (2, 3, 8, 8)
    for b in range(2):
        for k in range(3):
            alone = method(x[b : b + 1], [int(together.classes[b, k])])
            torch.testing.assert_close(alone.raw[0, 0], together.raw[b, k])
            torch.testing.assert_close(alone.weights[0, 0], together.weights[b, k])


def test_model_and_input_untouched_and_bad_input() -> None:
    model = SmallCNN(seed=4).train()
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # the user's own gradients
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    x_before = x.detach().clone()
    ShapleyCAM(model, "features")(x, [lambda out: out.softmax(dim=1)[:, 0], 1])
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None
    with pytest.raises(GradCAMError, match="relu must be true or false"):
        ShapleyCAM(model, relu="yes")  # type: ignore[arg-type]
    with pytest.raises(GradCAMError, match="has no layer named"):
        ShapleyCAM(model, "nonexistent")
    assert_unchanged(before, model)


def test_registry() -> None:
    model = SmallCNN(seed=5).eval()
    method = gradcam.create_method("shapley-cam", model, "features", relu=False)
    assert isinstance(method, ShapleyCAM) and method.relu is False
    spec = gradcam.method_spec("shapley-cam")
    assert spec.kind == "heatmap" and spec.needs.layer
    assert spec.option("relu").parse("false") is False
