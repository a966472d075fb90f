"""Finer-CAM: exact values by hand, pytorch-grad-cam and torchcam raw maps, top-K, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.models import DEFAULT_LAYERS, SmallCNN, TinyGapNet, tiny_input
from helpers.state import assert_unchanged, snapshot
from torch import nn

import gradcam
from gradcam import FinerCAM, GradCAMError, TargetError, TopK
from gradcam.methods.finer_cam import contrastive_scores, nearest_classes


class FourClassGapNet(TinyGapNet):
    """TinyGapNet with four classes: pooled ``p = (m0, m1) = (16, -4)`` on ``tiny_input()``
    and rows ``W = [[1, 2], [0.5, 0.5], [0, -0.5], [-1, 0]]``, so ``y = (8, 6, 2, -16)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 4, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [0.5, 0.5], [0.0, -0.5], [-1.0, 0.0]]))


def test_exact_with_mean_weighting() -> None:
    # Target 0 (y = 8): distances to the others |6 - 8| = 2, |2 - 8| = 6, |-16 - 8| = 24, so the
    # two references are classes 1 and 2. s = y0 - (y1 + y2) / 2 = 8 - 4 = 4, and
    # ds/dA^k_ij = (W0 - (W1 + W2) / 2)[k] / 4 = ([1, 2] - [0.25, 0]) / 4 = [0.1875, 0.5].
    # L = ReLU(0.1875 A^0 + 0.5 A^1) = ReLU([[1.5, 2.25], [3.75, 4.5]] - 2).
    method = FinerCAM(FourClassGapNet(), "conv", references=2, weighting="mean")
    result = method(tiny_input(), [0])
    torch.testing.assert_close(result.weights, torch.tensor([[[0.1875, 0.5]]]))
    torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 0.25], [1.75, 2.5]]))
    torch.testing.assert_close(result.scores, torch.tensor([[4.0]]))
    assert result.references.tolist() == [[[1, 2]]] and result.classes.tolist() == [[0]]


def test_exact_with_softmax_weighting() -> None:
    # References 1 and 2 weighted by softmax((6, 2)): w2 = q = 1 / (1 + e^4), w1 = 1 - q, so
    # s = 8 - (6 w1 + 2 w2) = 2 + 4q. The weights are differentiated too:
    # d(sum_d w_d y_d)/dy_j = w_j (1 + y_j - ybar) with ybar = 6 - 4q, so the coefficients of
    # y1 and y2 are c1 = (1 - q)(1 + 4q) and c2 = q(4q - 3) (c1 + c2 = 1), and
    # alpha = (W0 - c1 W1 - c2 W2) / 4 = [(1 - c1 / 2) / 4, (2 - c1 / 2 + c2 / 2) / 4].
    q = 1 / (1 + math.exp(4))
    c1, c2 = (1 - q) * (1 + 4 * q), q * (4 * q - 3)
    alpha = torch.tensor([(1 - c1 / 2) / 4, (2 - c1 / 2 + c2 / 2) / 4])
    a0 = torch.tensor([[8.0, 12.0], [20.0, 24.0]])
    expected = torch.relu(alpha[0] * a0 + alpha[1] * -4.0)
    result = FinerCAM(FourClassGapNet(), "conv", references=2)(tiny_input(), [0])
    torch.testing.assert_close(result.weights[0, 0], alpha)
    torch.testing.assert_close(result.raw[0, 0], expected)
    torch.testing.assert_close(result.scores, torch.tensor([[2 + 4 * q]]))


def test_alpha_zero_is_the_base_method() -> None:
    model = FourClassGapNet()
    finer = FinerCAM(model, "conv", alpha=0.0)(tiny_input(), [0, 1])
    plain = gradcam.GradCAM(model, "conv")(tiny_input(), [0, 1])
    torch.testing.assert_close(finer.raw, plain.raw)
    torch.testing.assert_close(finer.scores, plain.scores)


def test_helpers() -> None:
    logits = torch.tensor([[5.0, 1.0, 4.5, 3.0]])
    assert nearest_classes(logits, torch.tensor([[0, 3]]), 2).tolist() == [[[2, 3], [2, 1]]]
    scores = contrastive_scores(logits, torch.tensor([[3]]), torch.tensor([[[2, 1]]]), 0.5, "mean")
    torch.testing.assert_close(scores, torch.tensor([[3.0 - 0.5 * 2.75]]))


MODELS = ["resnet50", "vgg16", "lite0_module"]


def _image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", MODELS)
def test_matches_pytorch_grad_cam(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytorch_grad_cam.base_cam as peer_base
    from pytorch_grad_cam import FinerCAM as PeerFinerCAM

    model, layer_name = request.getfixturevalue(name), DEFAULT_LAYERS[name]
    monkeypatch.setattr(peer_base, "scale_cam_image", lambda cam, target_size=None: np.float32(cam))
    x = _image()
    # The defaults: top-1, alpha 1, 3 references, softmax. The peer's score is ours times
    # P / (P + 1e-9) (P: the references' softmax mass), 4e-5 relative on ResNet-50 here.
    ours = FinerCAM(model, layer_name)(x)
    with PeerFinerCAM(model, [model.get_submodule(layer_name)]) as cam:
        # Its backward needs a graph: the input requires grad (the parameters do not here).
        theirs = torch.from_numpy(cam(x.clone().requires_grad_(True)))
    assert theirs.abs().max() > 0
    torch.testing.assert_close(
        ours.raw[:, 0], theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max())
    )


@pytest.mark.parametrize("name", MODELS)
def test_matches_torchcam(name: str, request: pytest.FixtureRequest) -> None:
    from torchcam.methods import FinerCAM as TorchcamFinerCAM

    model, layer_name = request.getfixturevalue(name), DEFAULT_LAYERS[name]
    x = _image()
    ours = FinerCAM(model, layer_name, alpha=0.6, weighting="mean")(x)
    with TorchcamFinerCAM(model, layer_name, input_shape=(3, 64, 64)) as extractor:
        scores = model(x.clone().requires_grad_(True))
        (theirs,) = extractor(int(scores.argmax()), scores, normalized=False)
    assert theirs.abs().max() > 0
    torch.testing.assert_close(
        ours.raw[:, 0], theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max())
    )


def test_top_k_in_one_pass_and_batch() -> None:
    model = SmallCNN(classes=8, seed=3).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    method = FinerCAM(model, "features")
    together = method(x, TopK(3))
    assert together.raw.shape == (2, 3, 8, 8) and together.references.shape == (2, 3, 3)
    for b in range(2):
        for k in range(3):
            alone = method(x[b : b + 1], [int(together.classes[b, k])])
            torch.testing.assert_close(alone.raw[0, 0], together.raw[b, k])
            torch.testing.assert_close(alone.scores[0, 0], together.scores[b, k])
            assert torch.equal(alone.references[0, 0], together.references[b, k])


def test_model_and_input_untouched_and_bad_input() -> None:
    model = SmallCNN(seed=4).train()
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # the user's own gradients
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    x_before = x.detach().clone()
    FinerCAM(model, "features")(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None
    for options, message in [
        ({"alpha": -1.0}, "alpha must be"),
        ({"references": 0}, "references must be"),
        ({"weighting": "median"}, "weighting must be one of"),
        ({"base": "occlusion"}, "base must be a Grad-CAM variant"),
        ({"base": "no-such-cam"}, "unknown method"),
    ]:
        with pytest.raises(GradCAMError, match=message):
            FinerCAM(model, "features", **options)
    with pytest.raises(TargetError, match="not score functions"):
        FinerCAM(model, "features")(x, lambda out: out[:, 0])
    with pytest.raises(TargetError, match="more classes than the model has"):
        FinerCAM(model, "features")(x, TopK(9))
    assert_unchanged(before, model)


def test_registry() -> None:
    model = SmallCNN(seed=5).eval()
    method = gradcam.create_method("finer-cam", model, "features", alpha=0.6, weighting="mean")
    assert isinstance(method, FinerCAM) and method.alpha == 0.6 and method.weighting == "mean"
    spec = gradcam.method_spec("finer-cam")
    assert spec.kind == "heatmap" and spec.needs.layer
    assert spec.option("alpha").parse("0.6") == 0.6
    assert spec.option("references").parse("2") == 2
    assert spec.option("weighting").parse("mean") == "mean"
    assert spec.option("base").parse("gradcam") == "gradcam"
    counterfactual = gradcam.create_method("finer-cam", model, "features", base="counterfactual")
    assert counterfactual.base.counterfactual
