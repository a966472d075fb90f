"""Ablation-CAM: hand-computed values, the tail-only path and its fallback, agreement with
pytorch-grad-cam, top-K in one pass, the model left untouched, bad input, the registry.

Peer agreement on ResNet-50, VGG-16 and EfficientNet-Lite0 at their default layers ablates
the first channels of the layer only (pytorch-grad-cam runs the whole network for every
ablated copy): both sides get the same channels. A small CNN runs the whole pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torchvision
from helpers.models import SmallCNN, TinyGapNet, tiny_input
from helpers.state import assert_unchanged, snapshot
from pytorch_grad_cam import AblationCAM as PgcAblationCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

import gradcam
from gradcam import AblationCAM, GradCAMError, TopK

FIRST = 12  # channels ablated in the peer comparisons on the big networks


def _close(ours: Tensor, theirs: Tensor) -> None:
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


# --- 1. exact values on TinyGapNet (see helpers.models) ---------------------------------------
#
# A^0 = [[8, 12], [20, 24]] (mean 16), A^1 = -4 everywhere; fc W = [[1, 2], [-1, 1]]:
# y^0 = 16 - 8 = 8, y^1 = -16 - 4 = -20.
# A^0 = 0: y^0 = 2 * (-4) = -8, y^1 = -4.   A^1 = 0: y^0 = 16, y^1 = -16.
# w^0 = [(8 + 8) / 8, (8 - 16) / 8] = [2, -1]:   L^0 = ReLU(2 A^0 + 4) = [[20, 28], [44, 52]].
# w^1 = [(-20 + 4) / -20, (-20 + 16) / -20] = [0.8, 0.2]:
#   L^1 = ReLU(0.8 A^0 - 0.8) = [[5.6, 8.8], [15.2, 18.4]].
EXPECTED_WEIGHTS = torch.tensor([[[2.0, -1.0], [0.8, 0.2]]])
EXPECTED_RAW = torch.tensor([[[[20.0, 28.0], [44.0, 52.0]], [[5.6, 8.8], [15.2, 18.4]]]])


def test_ablation_cam_by_hand() -> None:
    result = AblationCAM(TinyGapNet(), "conv")(tiny_input(), [0, 1])
    torch.testing.assert_close(result.weights, EXPECTED_WEIGHTS)
    torch.testing.assert_close(result.raw, EXPECTED_RAW)
    torch.testing.assert_close(result.scores, torch.tensor([[8.0, -20.0]]))


class BatchFromInput(TinyGapNet):
    """TinyGapNet whose head reshapes with the *input's* batch size: the network cannot run
    the layers after ``conv`` on more copies than it got images."""

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.conv(x)).reshape(x.shape[0], -1))


class Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batches.append(x.shape[0])
        out: Tensor = self.inner(x)
        return out


def test_tail_only_and_fallback_give_the_same_values() -> None:
    fast = Counting(TinyGapNet())
    result = AblationCAM(fast, "inner.conv")(tiny_input(), [0, 1])
    torch.testing.assert_close(result.raw, EXPECTED_RAW)
    assert fast.batches == [1, 1]  # the clean pass, then one image feeding 1 + 2 copies
    slow = Counting(BatchFromInput())
    result = AblationCAM(slow, "inner.conv")(tiny_input(), [0, 1])
    torch.testing.assert_close(result.raw, EXPECTED_RAW)
    # The clean pass, the failed tail-only probe (in both layouts), then 2 whole copies.
    assert slow.batches[0] == 1 and slow.batches[-1] == 2


def test_zero_score_is_an_error() -> None:
    with pytest.raises(GradCAMError, match="0"):
        AblationCAM(TinyGapNet(), "conv")(torch.zeros(1, 1, 3, 3), [0])


# --- 2. agreement with pytorch-grad-cam -------------------------------------------------------


class FirstChannels(AblationCAM):
    def ablated(self, activation: Tensor) -> Tensor:
        kept = super().ablated(activation)
        return kept[kept < FIRST]


@pytest.fixture(scope="module", params=["resnet50", "vgg16", "efficientnet_lite0"])
def net(request: pytest.FixtureRequest) -> Iterator[tuple[nn.Module, str]]:
    if request.param == "efficientnet_lite0":
        loaded = gradcam.load_model()
        yield loaded.module.eval(), loaded.default_layer
        return
    torch.manual_seed(0)
    if request.param == "resnet50":
        yield torchvision.models.resnet50(weights=None).eval(), "layer4"
    else:
        yield torchvision.models.vgg16(weights=None).eval(), "features.29"


def _pgc_raw(
    model: nn.Module, layer: nn.Module, x: Tensor, cls: int, channels: int | None
) -> Tensor:
    peer = PgcAblationCAM(model, [layer])
    try:
        peer.activations_and_grads(x)
        acts = peer.activations_and_grads.activations[0]
        acts = acts if channels is None else acts[:, :channels]
        cam = peer.get_cam_image(x, layer, [ClassifierOutputTarget(cls)], acts.numpy(), None)
    finally:
        peer.activations_and_grads.release()
    return torch.relu(torch.from_numpy(cam))


def test_agrees_with_pytorch_grad_cam(net: Any) -> None:
    model, layer = net
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cls = int(model(x).argmax())
    ours = FirstChannels(model, layer)(x, [cls])
    first = ours.weights[:, 0, :FIRST]
    found: dict[str, Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: found.setdefault("a", out.detach().clone())
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    raw = torch.relu(torch.einsum("bc,bchw->bhw", first, found["a"][:, :FIRST]))
    _close(raw, _pgc_raw(model, model.get_submodule(layer), x, cls, FIRST))


def test_whole_pipeline_agrees_with_pytorch_grad_cam() -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    cls = int(model(x).argmax())
    ours = AblationCAM(model, "features")(x, [cls]).raw[:, 0]
    _close(ours, _pgc_raw(model, model.features, x, cls, None))


# --- 3. top-K in one pass, a batch of two images ---------------------------------------------


def test_top_k_is_k_single_calls_from_the_same_passes() -> None:
    model = Counting(SmallCNN(seed=2)).eval()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    method = AblationCAM(model, "inner.features")
    top = method(x, TopK(3))
    passes = len(model.batches)
    for k in range(3):
        model.batches.clear()
        single = method(x, top.classes[:, k : k + 1])
        assert len(model.batches) == passes  # K targets cost what one does
        torch.testing.assert_close(top.raw[:, k], single.raw[:, 0])
        torch.testing.assert_close(top.weights[:, k], single.weights[:, 0])
    assert top.raw.shape == (2, 3, 6, 6) and top.maps.shape == (2, 3, 12, 12)


# --- 4. the model is left untouched; bad input ------------------------------------------------


@pytest.mark.parametrize("model", [SmallCNN(seed=4), BatchFromInput()], ids=["tail", "fallback"])
def test_model_and_input_untouched(model: nn.Module) -> None:
    shape = (1, 3, 12, 12) if isinstance(model, SmallCNN) else (1, 1, 3, 3)
    layer = "features" if isinstance(model, SmallCNN) else "conv"
    model(torch.randn(*shape)).sum().backward()
    model.train()
    before = snapshot(model)
    x = torch.randn(*shape)
    x_before = x.clone()
    AblationCAM(model, layer)(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x, x_before) and torch.is_grad_enabled()


def test_bad_options_and_input() -> None:
    with pytest.raises(GradCAMError, match="batch_size"):
        AblationCAM(SmallCNN(), "features", batch_size=0)
    with pytest.raises(GradCAMError, match="input"):
        AblationCAM(SmallCNN(), "features")(torch.rand(3, 12, 12), [0])


# --- 5. the registry -------------------------------------------------------------------------


def test_registry_and_option_text() -> None:
    spec = gradcam.method_spec("ablation-cam")
    assert spec.kind == "heatmap" and spec.needs.layer and not spec.needs.layer_gradients
    model = SmallCNN(seed=1).eval()
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    made = gradcam.create_method("ablation-cam", model, "features", batch_size=3)
    torch.testing.assert_close(made(x, [1]).raw, AblationCAM(model, "features")(x, [1]).raw)
    assert spec.option("batch_size").parse("32") == 32
    assert spec.option("progress").parse("false") is False
    with pytest.raises(GradCAMError, match="batch_size"):
        spec.option("batch_size").parse("lots")
