"""Score-CAM, SS-CAM and IS-CAM: hand-computed values, agreement with pytorch-grad-cam and
torchcam, top-K in one pass, the model left untouched, bad options, the registry.

Peer agreement on ResNet-50, VGG-16 and EfficientNet-Lite0 at their default layers runs on a
subset of the layer's channels (each channel costs a forward pass of the whole network in
every library): our :meth:`ScoreCAM.channel_weights` and the peers' weight functions get the
same channels, so the softmax is over the same set. A small CNN runs the whole pipeline
against each peer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers.models import SmallCNN, TinyGapNet, tiny_input
from helpers.state import assert_unchanged, snapshot
from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn
from tqdm import tqdm

import gradcam
from gradcam import ISCAM, SSCAM, GradCAMError, ScoreCAM, TopK
from gradcam.maps import normalize, upsample
from gradcam.methods.perturbation import CopyRunner
from gradcam.targets import ResolvedTargets

torchcam_methods = pytest.importorskip("torchcam.methods")


# pytorch-grad-cam upsamples the masks with align_corners=True; torchcam normalizes A^k at
# layer resolution and then upsamples. Ours follows the paper, s(Up(A^k)), with the library's
# upsampling (align_corners=False). These subclasses make the one difference the peer's.
def _pgc_masks(activations: Tensor, size: tuple[int, int]) -> Tensor:
    up = F.interpolate(activations.float()[None], size=size, mode="bilinear", align_corners=True)
    return normalize(up[0])


def _torchcam_masks(activations: Tensor, size: tuple[int, int]) -> Tensor:
    return upsample(normalize(activations.float()), size)


class PgcScore(ScoreCAM):
    def masks(self, activations: Tensor, size: tuple[int, int]) -> Tensor:
        return _pgc_masks(activations, size)


class TcScore(ScoreCAM):
    def masks(self, activations: Tensor, size: tuple[int, int]) -> Tensor:
        return _torchcam_masks(activations, size)


class TcSS(SSCAM):
    def masks(self, activations: Tensor, size: tuple[int, int]) -> Tensor:
        return _torchcam_masks(activations, size)


class TcIS(ISCAM):
    def masks(self, activations: Tensor, size: tuple[int, int]) -> Tensor:
        return _torchcam_masks(activations, size)


def _close(ours: Tensor, theirs: Tensor) -> None:
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


# --- 1. exact values on TinyGapNet (see helpers.models) ---------------------------------------
#
# A^0 = [[8, 12], [20, 24]], A^1 = -4 everywhere, on x = arange(9) (3x3).
# Up(A^0) to 3x3 (bilinear, half-pixel centres: rows/cols sample at 0, 0.5, 1) is
# [[8, 10, 12], [14, 16, 18], [20, 22, 24]]; s() maps it to (v - 8) / 16:
# H^0 = [[0, 1/8, 1/4], [3/8, 1/2, 5/8], [3/4, 7/8, 1]], and
# X * H^0 = [[0, 1/8, 1/2], [9/8, 2, 25/8], [9/2, 49/8, 8]].
# conv channel 0 (2x2 window sums): 3.25, 5.75, 13.75, 19.25 -> mean 10.5;
# conv channel 1 (x[i,j] - x[i+1,j+1]): -2, -3, -5, -6 -> mean -4.
# y^0 = 10.5 + 2 * (-4) = 2.5, y^1 = -10.5 - 4 = -14.5.
# A^1 is constant: its mask is zero, the zero image scores 0 for both classes (no biases).
# Class 0: S = [2.5, 0], alpha_0 = sigmoid(2.5), alpha_1 = 1 - alpha_0,
#   L^0 = ReLU(alpha_0 A^0 - 4 alpha_1).
# Class 1: S = [-14.5, 0]: alpha_0 ~ 5e-7, L^1 = ReLU(alpha_0 A^0 - 4 alpha_1) = 0.
A0 = torch.tensor([[8.0, 12.0], [20.0, 24.0]])


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_score_cam_by_hand() -> None:
    result = ScoreCAM(TinyGapNet(), "conv")(tiny_input(), [0, 1])
    a0 = _sigmoid(2.5)
    torch.testing.assert_close(
        result.weights, torch.tensor([[[a0, 1 - a0], [0.0, 1.0]]]), atol=1e-6, rtol=0
    )
    expected0 = torch.relu(a0 * A0 - 4 * (1 - a0))
    torch.testing.assert_close(result.raw[0, 0], expected0)
    assert torch.equal(result.raw[0, 1], torch.zeros(2, 2))
    torch.testing.assert_close(result.scores, torch.tensor([[8.0, -20.0]]))
    assert result.layer == "conv" and result.maps.shape == (1, 2, 3, 3)


def test_is_cam_by_hand() -> None:
    # N = 3: the masks are scaled by i(i+1)/(2N) = 1/3, 1, 2. The network is linear (conv,
    # mean, linear, no biases), so f(c X H^0) = c * 2.5 and S_0 = (1/3 + 1 + 2)/3 * 2.5 = 25/9;
    # the constant channel scores 0 at every step.
    result = ISCAM(TinyGapNet(), "conv", num_samples=3)(tiny_input(), [0])
    a0 = _sigmoid(25 / 9)
    torch.testing.assert_close(result.weights, torch.tensor([[[a0, 1 - a0]]]))
    torch.testing.assert_close(result.raw[0, 0], torch.relu(a0 * A0 - 4 * (1 - a0)))


def test_ss_cam_without_noise_is_score_cam_and_noise_is_seeded() -> None:
    model, x = TinyGapNet(), tiny_input()
    exact = ScoreCAM(model, "conv")(x, [0])
    torch.testing.assert_close(SSCAM(model, "conv", std=0.0, num_samples=2)(x, [0]).raw, exact.raw)
    # The network is linear: f(X (H + d)) = f(X H) + f(X d); the noise term shifts the scores.
    one = SSCAM(model, "conv", num_samples=3, std=0.5, seed=1)(x, [0])
    again = SSCAM(model, "conv", num_samples=3, std=0.5, seed=1)(x, [0])
    other = SSCAM(model, "conv", num_samples=3, std=0.5, seed=2)(x, [0])
    assert torch.equal(one.raw, again.raw)
    assert not torch.equal(one.weights, other.weights)


# --- 2. agreement with the peers ------------------------------------------------------------


def _resnet50() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def _vgg16() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope="module", params=["resnet50", "vgg16", "efficientnet_lite0"])
def net(request: pytest.FixtureRequest) -> Iterator[tuple[nn.Module, str, Tensor, Tensor, int]]:
    """(model, default layer, 64 px image, a subset of the layer's activations, class)."""
    if request.param == "efficientnet_lite0":
        loaded = gradcam.load_model()
        model, layer = loaded.module.eval(), loaded.default_layer
    else:
        model = _resnet50() if request.param == "resnet50" else _vgg16()
        layer = "layer4" if request.param == "resnet50" else "features.29"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    found: dict[str, Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: found.setdefault("a", out.detach().clone())
    )
    with torch.no_grad():
        cls = int(model(x).argmax())
    handle.remove()
    a = found["a"]
    flat = a[0].flatten(1)
    constant = (flat.amax(1) == flat.amin(1)).nonzero()[:, 0]
    varied = (flat.amax(1) > flat.amin(1)).nonzero()[:, 0]
    # 8 channels with varied maps and 2 constant ones (one zero-image pass), in layer order.
    subset = torch.cat([varied[:8], constant[:2]]).sort().values
    yield model, layer, x, a[:, subset], cls


def _our_weights(method: ScoreCAM, model: nn.Module, x: Tensor, a: Tensor, cls: int) -> Tensor:
    resolved = ResolvedTargets(torch.zeros(1, 1), torch.tensor([[cls]]))
    with torch.no_grad(), tqdm(disable=True) as bar:
        # As a call runs them: through the copy with folded batch norms (ResNet-50, Lite0).
        inference = method.inference_copy(x, model(x))
        assert (inference is None) == isinstance(model, torchvision.models.VGG)
        run = CopyRunner(model, bar, inference)
        return method.channel_weights(x, a, resolved, [[cls]], run)


def _raw(weights: Tensor, a: Tensor) -> Tensor:
    return torch.relu(torch.einsum("bc,bchw->bhw", weights.float(), a.float()))


def test_score_cam_agrees_with_pytorch_grad_cam(net: Any) -> None:
    model, layer, x, a, cls = net
    ours = _our_weights(PgcScore(model, layer), model, x, a, cls)[:, 0]
    peer = PgcScoreCAM(model, [model.get_submodule(layer)])
    try:
        theirs = peer.get_cam_image(x, None, [ClassifierOutputTarget(cls)], a.numpy(), None)
    finally:
        peer.activations_and_grads.release()
    _close(_raw(ours, a), torch.relu(torch.from_numpy(theirs)))


def _torchcam(cls_name: str, model: nn.Module, layer: str, x: Tensor, **kwargs: Any) -> Any:
    cam = getattr(torchcam_methods, cls_name)(model, layer, batch_size=8, **kwargs)
    with torch.no_grad():
        model(x)  # torchcam keeps the input and the activations from its hooks
    return cam


@pytest.mark.parametrize(
    ("ours_cls", "peer", "kwargs", "seed"),
    [
        (TcScore, "ScoreCAM", {}, None),
        (TcSS, "SSCAM", {"num_samples": 2, "std": 0.5}, 7),
        (TcIS, "ISCAM", {"num_samples": 2}, None),
    ],
    ids=["score-cam", "ss-cam", "is-cam"],
)
def test_family_agrees_with_torchcam(
    net: Any, ours_cls: type[ScoreCAM], peer: str, kwargs: dict[str, Any], seed: int | None
) -> None:
    model, layer, x, a, cls = net
    options = {**kwargs, **({"seed": seed} if seed is not None else {})}
    ours = _our_weights(ours_cls(model, layer, **options), model, x, a, cls)[:, 0]
    cam = _torchcam(peer, model, layer, x, **kwargs)
    try:
        if seed is not None:
            torch.manual_seed(seed)  # the same noise: drawn in the same order from that seed
        # As torchcam's _get_weights calls it: hooks off (its input hook would keep the
        # masked images), activations min-max normalized at layer resolution.
        with torch.no_grad(), cam._hooks_off():
            (theirs,) = cam._get_score_weights([cam._normalize(a.clone(), 2)], [cls])
    finally:
        cam.remove_hooks()
    _close(_raw(ours, a), _raw(theirs, a))


def test_whole_pipeline_agrees_with_both_peers() -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    cls = int(model(x).argmax())
    peer = PgcScoreCAM(model, [model.features])
    try:
        peer.activations_and_grads(x)
        acts = peer.activations_and_grads.activations[0].numpy()
        theirs = peer.get_cam_image(x, None, [ClassifierOutputTarget(cls)], acts, None)
    finally:
        peer.activations_and_grads.release()
    _close(PgcScore(model, "features")(x, [cls]).raw[:, 0], torch.relu(torch.from_numpy(theirs)))
    for ours, name, kwargs in [
        (TcScore(model, "features"), "ScoreCAM", {}),
        (TcIS(model, "features", num_samples=4), "ISCAM", {"num_samples": 4}),
        (
            TcSS(model, "features", num_samples=3, std=1.0, seed=5),
            "SSCAM",
            {"num_samples": 3, "std": 1.0},
        ),
    ]:
        cam = _torchcam(name, model, "features", x, **kwargs)
        try:
            torch.manual_seed(5)
            (theirs_map,) = cam(class_idx=cls, normalized=False)
        finally:
            cam.remove_hooks()
        _close(ours(x, [cls]).raw[:, 0], theirs_map)


# --- 3. top-K in one pass, a batch of two images ---------------------------------------------


@pytest.mark.parametrize("cls", [ScoreCAM, SSCAM, ISCAM])
def test_top_k_is_k_single_calls_from_the_same_passes(cls: type[ScoreCAM]) -> None:
    model = SmallCNN(seed=2).eval()
    calls = {"n": 0}
    # Counted at the head, which the copy with folded batch norms shares (hooks and all).
    model.fc.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    options = {} if cls is ScoreCAM else {"num_samples": 2}
    method = cls(model, "features", **options)
    top = method(x, TopK(3))
    passes = calls["n"]
    for k in range(3):
        calls["n"] = 0
        single = method(x, top.classes[:, k : k + 1])
        assert calls["n"] == passes  # K targets cost what one does
        torch.testing.assert_close(top.raw[:, k], single.raw[:, 0])
        torch.testing.assert_close(top.weights[:, k], single.weights[:, 0])
    assert top.raw.shape == (2, 3, 6, 6) and top.maps.shape == (2, 3, 12, 12)


# --- 4. the model is left untouched; bad options ----------------------------------------------


@pytest.mark.parametrize("cls", [ScoreCAM, SSCAM, ISCAM])
def test_model_and_input_untouched(cls: type[ScoreCAM]) -> None:
    model = SmallCNN(seed=4)
    model(torch.randn(2, 3, 12, 12)).sum().backward()
    model.train()
    before = snapshot(model)
    x = torch.randn(1, 3, 12, 12)
    x_before = x.clone()
    options = {} if cls is ScoreCAM else {"num_samples": 2}
    cls(model, "features", **options)(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x, x_before) and torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("score-cam", {"batch_size": 0}, "batch_size"),
        ("ss-cam", {"num_samples": 0}, "num_samples"),
        ("ss-cam", {"std": -1.0}, "std"),
        ("is-cam", {"num_samples": -2}, "num_samples"),
    ],
)
def test_bad_options(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        gradcam.create_method(name, SmallCNN(), "features", **options)


# --- 5. the registry -------------------------------------------------------------------------


def test_registry_and_option_text() -> None:
    model = SmallCNN(seed=1).eval()
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    for name in ("score-cam", "ss-cam", "is-cam"):
        spec = gradcam.method_spec(name)
        assert spec.kind == "heatmap" and spec.needs.layer and not spec.needs.layer_gradients
        options = {"num_samples": 2} if name != "score-cam" else {}
        result = gradcam.create_method(name, model, "features", batch_size=5, **options)(x, [1])
        assert result.raw.shape == (1, 1, 6, 6)
    assert gradcam.method_spec("score-cam").option("batch_size").parse("16") == 16
    assert gradcam.method_spec("score-cam").option("batch_size").parse("none") is None
    assert gradcam.method_spec("ss-cam").option("std").parse("0.25") == 0.25
    assert gradcam.method_spec("ss-cam").option("seed").parse("3") == 3
    assert gradcam.method_spec("is-cam").option("num_samples").parse("8") == 8
    with pytest.raises(GradCAMError, match="num_samples"):
        gradcam.method_spec("is-cam").option("num_samples").parse("many")
