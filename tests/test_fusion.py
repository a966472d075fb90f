"""gradcam.fusion: batch norms folded into a copy's convolutions, checked before use."""

from __future__ import annotations

import gc
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import Tensor, nn

from gradcam import Occlusion, ScoreCAM, TopK, fusion
from gradcam.fusion import FoldedCopy, fold_batch_norms, folded_from, matches, state_key
from gradcam.methods.perturbation import CopyRunner
from tests.helpers.models import SmallCNN


def _conv_bn() -> nn.Sequential:
    model = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(1, 1, 1), bn=nn.BatchNorm2d(1), relu=nn.ReLU())
    ).eval()
    with torch.no_grad():
        model.conv.weight.fill_(2.0)
        model.conv.bias.fill_(1.0)
        model.bn.weight.fill_(3.0)
        model.bn.bias.fill_(0.5)
        model.bn.running_mean.fill_(4.0)
        model.bn.running_var.fill_(0.25 - model.bn.eps)  # sqrt(var + eps) = 0.5
    return model


def test_feature_hand_computed_fold() -> None:
    # W' = W * gamma / sqrt(var + eps) = 2 * 3 / 0.5 = 12
    # b' = (b - mean) * gamma / sqrt(var + eps) + beta = (1 - 4) * 3 / 0.5 + 0.5 = -17.5
    folded = fold_batch_norms(_conv_bn())
    assert folded is not None
    conv = folded.get_submodule("conv")
    assert float(conv.weight.detach()) == pytest.approx(12.0)
    assert float(conv.bias.detach()) == pytest.approx(-17.5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.tensor([[[[1.0]], [[2.0]]]]).reshape(2, 1, 1, 1)  # 12 - 17.5 < 0, 24 - 17.5
    assert folded(x).flatten().tolist() == pytest.approx([0.0, 6.5])


def test_real_model_folded_equals_model_and_model_is_unchanged() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    assert folded is not None
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert matches(folded(x), model(x), rtol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.conv(x))
        return y if float(y.sum()) > 0 else -y


class _Shared(nn.Module):
    """One convolution called twice, and a convolution whose output is used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.BatchNorm2d(3)
        self.other, self.bn3 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv(self.bn1(self.conv(x))))
        z = self.other(y)
        return self.bn3(z) + z


@pytest.mark.parametrize(
    "model",
    [_Branchy(), _Shared(), nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())],
    ids=["untraceable", "shared", "no-batch-norm"],
)
def test_nothing_safe_to_fold_gives_no_copy(model: nn.Module) -> None:
    assert fold_batch_norms(model.eval()) is None


class _SamePadConv(nn.Conv2d):
    """TF-style "same" padding computed from the input's shape (as EfficientNet-Lite's)."""

    def forward(self, x: Tensor) -> Tensor:
        pad = max(self.kernel_size[0] - 1 - (x.shape[-1] - 1) % self.stride[0], 0)
        if pad:  # control flow on the input's shape: a symbolic trace must keep this whole
            x = nn.functional.pad(x, [pad // 2, pad - pad // 2] * 2)
        return super().forward(x)


class _StdConv(nn.Conv2d):
    """Weight standardization: the weights are normalized in the forward pass."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / w.std(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def _randomized(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2)
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


def test_convolution_subclasses_are_kept_whole_and_checked() -> None:
    x = torch.randn(2, 3, 9, 9)
    same = _randomized(nn.Sequential(_SamePadConv(3, 4, 3, stride=2), nn.BatchNorm2d(4)))
    folded = fold_batch_norms(same)
    assert folded is not None
    with torch.no_grad():
        assert matches(folded(x), same(x), rtol=1e-5)
    # Folding into standardized weights is undone by the standardization: matches() says so.
    standardized = _randomized(nn.Sequential(_StdConv(3, 4, 3), nn.BatchNorm2d(4)))
    folded = fold_batch_norms(standardized)
    assert folded is not None
    with torch.no_grad():
        assert not matches(folded(x), standardized(x))


def test_matches() -> None:
    a = torch.tensor([1.0, 100.0])
    assert matches({"x": (a,)}, {"x": (a + 0.005,)})
    assert not matches(a + 0.02, a)  # more than 1e-4 of the largest value
    assert not matches(torch.tensor([float("nan"), 1.0]), a)
    assert not matches([a], (a, a))
    assert not matches({"x": a}, {"y": a})
    assert matches(torch.tensor([1, 2]), torch.tensor([1, 2]))
    assert not matches(torch.tensor([1, 3]), torch.tensor([1, 2]))


def test_score_cam_on_a_model_made_in_inference_mode() -> None:
    with torch.inference_mode():  # its tensors track no version
        model = _randomized(SmallCNN(seed=5))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert len(state_key(model)) == len(list(model.state_dict()))
    method = ScoreCAM(model, "features", progress=False)
    first = method(x, _TARGETS)
    assert method.folded.get() is not None
    again = ScoreCAM(model, "features", progress=False)(x, _TARGETS)
    torch.testing.assert_close(first.weights, again.weights)


def test_state_key_changes_with_weights() -> None:
    model = SmallCNN()
    key = state_key(model)
    assert state_key(model) == key
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    assert state_key(model) != key


# --- in Score-CAM -----------------------------------------------------------------------------


_TARGETS = torch.tensor([[1, 3]])  # two classes of one image


def _spying(call: Callable[..., Any], used: list[bool]) -> Callable[..., Any]:
    def spy(self: CopyRunner, inputs: Tensor, **kwargs: Any) -> Any:
        used.append(self.inference is not None)
        return call(self, inputs, **kwargs)

    return spy


def _score(model: nn.Module, x: Tensor, monkeypatch: pytest.MonkeyPatch, fold: bool) -> Tensor:
    if not fold:
        monkeypatch.setattr(fusion, "fold_batch_norms", lambda _m: None)
    try:
        return ScoreCAM(model, "features", progress=False)(x, _TARGETS).weights
    finally:
        monkeypatch.undo()


def test_score_cam_with_folded_copy_equals_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SmallCNN(seed=3).eval()
    with torch.no_grad():  # batch norms that do something
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    used = []
    monkeypatch.setattr(CopyRunner, "__call__", _spying(CopyRunner.__call__, used))
    folded = ScoreCAM(model, "features", progress=False)(x, _TARGETS).weights
    monkeypatch.undo()
    assert used and all(used)  # every pass ran the copy
    torch.testing.assert_close(folded, _score(model, x, monkeypatch, fold=False))


def test_score_cam_refuses_a_copy_that_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    expected = _score(model, x, monkeypatch, fold=False)

    def wrong(m: nn.Module) -> nn.Module:
        folded = fold_batch_norms(m)
        assert folded is not None
        with torch.no_grad():
            folded.get_submodule("fc").bias.add_(1.0)
        return folded

    monkeypatch.setattr(fusion, "fold_batch_norms", wrong)
    method = ScoreCAM(model, "features", progress=False)
    torch.testing.assert_close(method(x, _TARGETS).weights, expected)
    assert method.folded.get() is None  # remembered until the weights change


def test_score_cam_copy_follows_changed_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    method = ScoreCAM(model, "features", progress=False)
    method(x, _TARGETS)
    first = method.folded.get()
    assert first is not None and folded_from(first) is model
    with torch.no_grad():
        model.features[1].running_var.mul_(4.0)
        model.fc.weight.mul_(-1.0)
    weights = method(x, _TARGETS).weights
    assert method.folded.get() is not first
    torch.testing.assert_close(weights, _score(model, x, monkeypatch, fold=False))
    assert not math.isnan(float(weights.sum()))


def test_occlusion_with_folded_copy_equals_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _randomized(SmallCNN(seed=4))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    used: list[bool] = []
    monkeypatch.setattr(CopyRunner, "__call__", _spying(CopyRunner.__call__, used))
    folded = Occlusion(model, window=6, stride=4)(x, TopK(2))
    assert used and all(used)  # every occluded copy ran through the copy
    monkeypatch.setattr(fusion, "fold_batch_norms", lambda _m: None)
    first = len(used)
    plain = Occlusion(model, window=6, stride=4)(x, TopK(2))
    assert not any(used[first:])  # and now through the model itself
    torch.testing.assert_close(folded.classes, plain.classes)
    scale = float(plain.raw.abs().max())
    torch.testing.assert_close(folded.raw, plain.raw, rtol=1e-4, atol=1e-5 * scale)


def test_each_method_keeps_its_own_copy_and_drops_it_with_itself() -> None:
    model = _randomized(SmallCNN(seed=6))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    one, two = (ScoreCAM(model, "features", progress=False) for _ in range(2))
    occlusion = Occlusion(model, window=8, stride=8)
    first = one(x, _TARGETS)
    torch.testing.assert_close(two(x, _TARGETS).weights, first.weights)
    occlusion(x, [1])
    copies = [one.folded.get(), two.folded.get(), occlusion.folded.get()]
    assert all(c is not None and folded_from(c) is model for c in copies)
    assert len({id(c) for c in copies}) == 3  # no copy shared between methods
    assert not any("folded" in name for name in vars(model))  # none kept on the model
    gone = weakref.ref(copies[0])
    del one, copies
    gc.collect()
    assert gone() is None  # the copy went with its method


def test_a_copy_is_made_again_after_weights_change_between_calls() -> None:
    model = _randomized(SmallCNN(seed=7))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    copies = FoldedCopy(model)
    kept = copies.get()
    assert kept is not None and copies.get() is kept
    with torch.no_grad():
        model.features[0].weight.mul_(-1.0)
    again = copies.get()
    assert again is not None and again is not kept
    with torch.no_grad():
        assert matches(again(x), model(x), rtol=1e-5)
        assert not matches(kept(x), model(x))
