"""Layers: the default choice (the paper's last conv maps; the last attention's input for ViT),
layers given as specs with a reshape (tokens, channels-last, callables), and the torchvision zoo.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from helpers import multimodal as mm
from helpers.models import ReusedLayerNet, SmallCNN, TinyGapNet, TinyTokenNet, TinyViT, tiny_input
from helpers.state import assert_unchanged, snapshot
from torch import nn

import gradcam
from gradcam import (
    CAM,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    Layer,
    LayerError,
    find_default_layer,
    spatial_layers,
)
from gradcam.layers import resolve_layer
from gradcam.reshapes import (
    Tokens,
    channels_last_to_maps,
    plausible_grid,
    token_grid,
    tokens_to_maps,
    view_for,
)

X = torch.zeros(1, 3, 224, 224)
VIT_LAYER = "encoder.layers.encoder_layer_11.ln_1"
SWIN_NORM1 = "features.7.1.norm1"  # pytorch-grad-cam's features[-1][-1].norm1


def _bench_zoo() -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "bench_zoo.py"
    spec = importlib.util.spec_from_file_location("bench_zoo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_zoo"] = module
    spec.loader.exec_module(module)
    return module


bench_zoo = _bench_zoo()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    """torchvision's ViT-B/16 at 64x64 (a 4x4 patch grid), random weights, a random head."""
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=64).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initializes it
    return model


@pytest.fixture(scope="module")
def swin() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.swin_t(weights=None).eval()


def _image(side: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(seed))


# The default layer (the paper's last convolutional feature maps) -------------------------------


def test_resnet(resnet18: nn.Module) -> None:
    assert find_default_layer(resnet18, X) == "layer4"


def test_vgg16_is_relu5_3_at_14x14() -> None:
    vgg = torchvision.models.vgg16(weights=None)
    assert find_default_layer(vgg, X) == "features.29"


def test_alexnet_and_googlenet() -> None:
    assert find_default_layer(torchvision.models.alexnet(weights=None), X) == "features.11"
    googlenet = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    assert find_default_layer(googlenet.eval(), X) == "inception5b"


def test_reused_modules_are_skipped() -> None:
    assert find_default_layer(ReusedLayerNet(), torch.zeros(1, 3, 8, 8)) == "stem"


def test_default_layer_is_found_on_first_call() -> None:
    model = SmallCNN().eval()
    cam = GradCAM(model)
    assert cam(torch.randn(1, 3, 16, 16), 0).layer == "features"


def test_spatial_layers_in_forward_order(resnet18: nn.Module) -> None:
    names = [name for name, _ in spatial_layers(resnet18, torch.zeros(1, 3, 64, 64))]
    assert names.index("layer1") < names.index("layer4")
    assert "avgpool" not in names and "layer4.0.relu" not in names  # 1x1, and reused


def test_default_layer_is_chosen_per_input_shape(
    resnet18: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """layer4 is 1x1 at 32x32, so layer3 is taken there; a later 224x224 call gets layer4, and
    a repeated shape costs no new probe pass."""
    module = importlib.import_module("gradcam.methods.gradcam")
    probes: list[tuple[int, ...]] = []
    real = module.find_default_layer

    def counting(model: nn.Module, x: torch.Tensor) -> str:
        probes.append(tuple(x.shape))
        return real(model, x)

    monkeypatch.setattr(module, "find_default_layer", counting)
    cam = GradCAM(resnet18)
    assert cam(_image(32)).layer == "layer3"
    assert cam(_image(224)).layer == "layer4"
    assert cam(_image(224, seed=1)).layer == "layer4"
    assert cam(_image(32, seed=1)).layer == "layer3"
    assert probes == [(1, 3, 32, 32), (1, 3, 224, 224)]


# The reshapes, by hand ------------------------------------------------------------------------


def test_channels_last_to_maps_values() -> None:
    maps = channels_last_to_maps(torch.arange(12.0).view(1, 2, 2, 3))  # (B, h, w, C)
    assert maps.shape == (1, 3, 2, 2)
    assert torch.equal(maps[0, 0], torch.tensor([[0.0, 3.0], [6.0, 9.0]]))
    assert torch.equal(maps[0, 2], torch.tensor([[2.0, 5.0], [8.0, 11.0]]))


def test_tokens_to_maps_values() -> None:
    tokens = torch.arange(14.0).view(1, 7, 2)  # a class token, then 2x3 patches of 2 dims
    maps = tokens_to_maps(tokens, 1, (2, 3))
    assert torch.equal(maps[0, 0], torch.tensor([[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]))
    assert torch.equal(maps[0, 1], torch.tensor([[3.0, 5.0, 7.0], [9.0, 11.0, 13.0]]))


@pytest.mark.parametrize(
    ("count", "size", "expected"),
    [
        (197, (224, 224), (1, (14, 14))),  # ViT-B/16
        (50, (224, 224), (1, (7, 7))),  # ViT-B/32
        (257, (224, 224), (1, (16, 16))),  # ViT-H/14
        (198, (224, 224), (2, (14, 14))),  # DeiT: class and distillation tokens
        (201, (224, 224), (5, (14, 14))),  # a class token and 4 registers
        (196, (224, 224), (0, (14, 14))),  # no class token (global pooling)
        (393, (224, 448), (1, (14, 28))),  # non-square
        (141, (160, 224), (1, (10, 14))),  # non-square, patch 16
        (17, (64, 64), (1, (4, 4))),
    ],
)
def test_token_grid(
    count: int, size: tuple[int, int], expected: tuple[int, tuple[int, int]]
) -> None:
    assert token_grid(count, size) == expected


def test_token_grid_with_given_prefix() -> None:
    assert token_grid(197, (224, 224), prefix=1) == (1, (14, 14))
    with pytest.raises(LayerError, match="minus 2 leading ones form no patch grid"):
        token_grid(197, (224, 224), prefix=2)


def test_plausible_grid() -> None:
    assert plausible_grid((7, 7), (224, 224)) and plausible_grid((7, 10), (224, 300))
    assert plausible_grid((1, 1), (32, 32))
    assert not plausible_grid((1, 49), (224, 224)) and not plausible_grid((14, 7), (224, 224))


def test_auto_reads_swin_and_convnext_layouts(swin: nn.Module) -> None:
    """LayerNorm over the last dim marks Swin's (B, 7, 7, 768) as channels-last; ConvNeXt's
    block (a LayerNorm inside, but a conv of width C first) stays channels-first."""
    norm = swin.norm
    assert view_for("norm", "auto", (1, 7, 7, 768), (224, 224), norm, swin).kind == (
        "channels-last"
    )
    depth = swin.features[7][1].stochastic_depth  # no widths of its own: the model's decide
    view = view_for("sd", "auto", (1, 7, 7, 768), (224, 224), depth, swin)
    assert view.kind == "channels-last"
    convnext = torchvision.models.convnext_tiny(weights=None)
    block = convnext.features[7][2]
    assert view_for("b", "auto", (1, 768, 7, 7), (224, 224), block, convnext).kind == (
        "channels-first"
    )


# Layer specs through the methods ----------------------------------------------------------------


def test_tiny_token_model_by_hand() -> None:
    """See TinyTokenNet: L^0 = [[0, 1.6], [6.4, 8]], alpha^0 = W[0] / 5, L^1 = 0."""
    model, x = TinyTokenNet(), torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[0.0, 1.6], [6.4, 8.0]])
    for layer in ("proj", model.proj, Layer("proj"), Layer(model.proj, reshape="tokens")):
        result = GradCAM(model, layer)(x, [0, 1])
        assert result.layer == "proj"
        torch.testing.assert_close(result.raw[0, 0], expected)
        torch.testing.assert_close(result.weights[0], torch.tensor([[0.2, 0.4], [-0.2, 0.2]]))
        assert torch.equal(result.raw[0, 1], torch.zeros(2, 2))
    assert GradCAM(model)(x, 0).layer == "proj"  # the last token layer (no attention)
    explicit = Layer("proj", reshape=Tokens(prefix=1, grid=(2, 2)))
    torch.testing.assert_close(GradCAM(model, explicit)(x, 0).raw[0, 0], expected)


def test_custom_reshape_callable() -> None:
    """A callable is applied to the output and to its gradient, like pytorch-grad-cam's."""
    model, x = TinyTokenNet(), torch.arange(16.0).view(1, 1, 4, 4)

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(t.shape[0], 2, 2, t.shape[2]).permute(0, 3, 1, 2)

    result = GradCAM(model, Layer("proj", reshape=reshape))(x, 0)
    torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 1.6], [6.4, 8.0]]))


def test_resolve_layer_keeps_the_reshape() -> None:
    model = TinyTokenNet()
    resolved = resolve_layer(model, Layer("proj", reshape="tokens"))
    assert resolved[0] is model.proj and resolved[1] == "proj" and resolved.reshape == "tokens"
    assert resolve_layer(model, "proj").reshape == "auto"
    assert resolve_layer(model, resolved) == resolved  # a resolved layer passes on as it is
    with pytest.raises(LayerError, match="not a submodule"):
        resolve_layer(TinyTokenNet(), resolved)


def test_plain_channels_first_layers_are_unchanged() -> None:
    """The captum example: a one-conv net on arange(9) has L^0 = [[0, 1], [3, 4]]."""
    for layer in ("conv", Layer("conv"), Layer("conv", reshape="channels-first")):
        raw = GradCAM(TinyGapNet(), layer)(tiny_input(), 0).raw[0, 0]
        torch.testing.assert_close(raw, torch.tensor([[0.0, 1.0], [3.0, 4.0]]))


def test_tiny_vit_default_is_the_last_attention_input() -> None:
    model = TinyViT().eval()
    x = _image(16)
    assert find_default_layer(model, x) == "blocks.1.norm1"
    before = snapshot(model)
    result = GradCAM(model)(x, gradcam.TopK(2))
    assert_unchanged(before, model)
    assert result.layer == "blocks.1.norm1" and result.raw.shape == (1, 2, 4, 4)
    assert torch.isfinite(result.raw).all() and result.raw.amax() > result.raw.amin()
    # After the last attention only the class token reaches the score: a zero map.
    assert GradCAM(model, "norm")(x, 0).raw.abs().max() == 0


def test_vit_default_layer_and_spatial_layers(vit: nn.Module) -> None:
    x = _image(64)
    assert find_default_layer(vit, x) == VIT_LAYER
    layers = dict(spatial_layers(vit, x))
    assert layers[VIT_LAYER] == (1, 768, 4, 4)
    assert layers["conv_proj"] == (1, 768, 4, 4)


def test_swin_default_and_cam(swin: nn.Module) -> None:
    """Swin's default is the final norm, channels-last, which the head averages: CAM applies,
    and Grad-CAM equals CAM / (h*w) there (section 3.1)."""
    x = _image(64)
    grad = GradCAM(swin)(x, 3)
    cam = CAM(swin)(x, 3)
    assert grad.layer == cam.layer == "norm" and grad.raw.shape == (1, 1, 2, 2)
    torch.testing.assert_close(grad.raw, cam.raw / 4, rtol=1e-4, atol=1e-6)
    by_name = GradCAM(swin, Layer(SWIN_NORM1, reshape="channels-last"))(x, 3)
    torch.testing.assert_close(GradCAM(swin, SWIN_NORM1)(x, 3).raw, by_name.raw)


def _reshape_vit(tensor: torch.Tensor, height: int = 4, width: int = 4) -> torch.Tensor:
    # pytorch-grad-cam's documented ViT reshape_transform (tutorials/vision_transformers.md)
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _reshape_swin(tensor: torch.Tensor) -> torch.Tensor:
    # torchvision's Swin outputs (B, h, w, C) already: the documented transform's permute
    return tensor.permute(0, 3, 1, 2)


def _peer_raw(
    model: nn.Module, layer: nn.Module, reshape: Callable[[torch.Tensor], Any], x: torch.Tensor
) -> np.ndarray:
    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    peer = PeerGradCAM(model, [layer], reshape_transform=reshape)
    try:
        targets = [ClassifierOutputTarget(7)]
        peer(input_tensor=x, targets=targets)
        grads = peer.activations_and_grads
        acts, grad = grads.activations[0].numpy(), grads.gradients[0].numpy()
        raw = peer.get_cam_image(x, layer, targets, acts, grad, False)
        return np.asarray(np.maximum(raw, 0))
    finally:
        peer.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_agrees_with_pytorch_grad_cam(arch: str, request: pytest.FixtureRequest) -> None:
    """Raw maps equal pytorch-grad-cam 1.5.7's with its documented layers and reshapes."""
    pytest.importorskip("pytorch_grad_cam")
    model = request.getfixturevalue(arch)
    x = _image(64)
    if arch == "vit":
        name, reshape = VIT_LAYER, _reshape_vit
    else:
        name, reshape = SWIN_NORM1, _reshape_swin
    ours = GradCAM(model, name)(x, 7).raw[0, 0]
    layer = resolve_layer(model, name).module
    theirs = torch.from_numpy(_peer_raw(model, layer, reshape, x)[0])
    assert ours.shape == theirs.shape == ((4, 4) if arch == "vit" else (2, 2))
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


def test_guided_methods_on_a_transformer(vit: nn.Module) -> None:
    """GELU gets the guided rule, softmax and LayerNorm their plain gradient: finite results,
    the model untouched."""
    x = _image(64)
    before = snapshot(vit)
    guided = GuidedBackprop(vit)(x, 1)
    fused = GuidedGradCAM(vit)(x, 1)
    assert_unchanged(before, vit)
    for maps in (guided.maps, fused.maps, fused.cam.raw):
        assert torch.isfinite(maps).all()
    assert guided.maps.abs().max() > 0 and fused.cam.layer == VIT_LAYER


def test_guided_backprop_on_tiny_vit() -> None:
    model = TinyViT().eval()
    before = snapshot(model)
    result = GuidedGradCAM(model)(_image(16), 0)
    assert_unchanged(before, model)
    assert torch.isfinite(result.maps).all() and result.gradients.abs().max() > 0


# Bad input --------------------------------------------------------------------------------------


def test_vector_output_names_shape_and_reshapes() -> None:
    with pytest.raises(LayerError, match=r"'fc' must output .*\(1, 5\).*'channels-last'"):
        GradCAM(SmallCNN(), "fc")(torch.randn(1, 3, 8, 8), 0)


def test_tokens_without_a_grid() -> None:
    with pytest.raises(LayerError, match=r"\(1, 120, 8\).*form no patch grid.*reshapes:"):
        view_for("t", "tokens", (1, 120, 8), (64, 64), nn.Identity(), nn.Identity())
    model, x = TinyTokenNet(), torch.arange(16.0).view(1, 1, 4, 4)
    with pytest.raises(LayerError, match=r"'proj'.*\(1, 5, 2\).*'tokens'"):
        GradCAM(model, Layer("proj", reshape=Tokens(prefix=0)))(x, 0)
    with pytest.raises(LayerError, match="do not fit"):
        GradCAM(model, Layer("proj", reshape=Tokens(grid=(3, 3))))(x, 0)


def test_ambiguous_4d_layout_raises(swin: nn.Module) -> None:
    """MaxViT-like window partitions (B, windows, tokens, C) are no map of the image."""
    with pytest.raises(LayerError, match=r"1x49 maps, which do not fit a 224x224 input"):
        view_for("w", "auto", (1, 1, 49, 768), (224, 224), nn.Identity(), swin)


def test_wrong_reshape_spec() -> None:
    with pytest.raises(LayerError, match="unknown reshape 'token'"):
        Layer("proj", reshape="token")  # type: ignore[arg-type]
    with pytest.raises(LayerError, match="4-D for 'channels-last'"):
        GradCAM(TinyTokenNet(), Layer("proj", reshape="channels-last"))(torch.zeros(1, 1, 4, 4), 0)
    with pytest.raises(LayerError, match=r"must map \(1, 5, 2\) to \(B, C, h, w\)"):
        GradCAM(TinyTokenNet(), Layer("proj", reshape=lambda t: t[:, 0]))(
            torch.zeros(1, 1, 4, 4), 0
        )


# The torchvision zoo ----------------------------------------------------------------------------


def test_zoo_smallest_covers_every_family() -> None:
    families = [bench_zoo.family(name) for name in bench_zoo.SMALLEST]
    assert len(families) == len(set(families))
    assert set(families) == {bench_zoo.family(name) for name in bench_zoo.all_models()}


def _check_zoo(name: str, size: int) -> None:
    model = bench_zoo.build(name)
    x = _image(bench_zoo.input_size(name, size))
    before = snapshot(model)
    result = GradCAM(model)(x)
    assert_unchanged(before, model)
    assert torch.isfinite(result.raw).all(), name
    assert result.raw.amax() > result.raw.amin(), f"{name}: constant map at {result.layer}"


@pytest.mark.parametrize("name", bench_zoo.SMALLEST)
def test_zoo_smallest_of_each_family(name: str) -> None:
    """No layer given: a finite, non-constant map, the model bit-identical afterwards."""
    _check_zoo(name, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", bench_zoo.all_models())
def test_zoo_every_model(name: str) -> None:
    _check_zoo(name, 224)


# timm (optional) --------------------------------------------------------------------------------


def test_timm_vit_default_and_agreement() -> None:
    """timm's ViT: the default is blocks[-1].norm1, pytorch-grad-cam's documented layer, and the
    raw maps agree with it (its documented reshape_transform)."""
    timm = pytest.importorskip("timm")
    pytest.importorskip("pytorch_grad_cam")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    x = _image(64)
    ours = GradCAM(model)(x, 7)
    assert ours.layer == "blocks.11.norm1" and ours.raw.shape == (1, 1, 4, 4)
    theirs = torch.from_numpy(_peer_raw(model, model.blocks[-1].norm1, _reshape_vit, x)[0])
    assert ours.raw.abs().max() > 0
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours.raw[0, 0], theirs, rtol=1e-5, atol=1e-5 * scale)


def test_timm_convnext_channels_last_norm() -> None:
    """timm's ConvNeXt block (conv_mlp=False) normalizes NHWC: its norm is read channels-last."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, conv_mlp=False).eval()
    x = _image(64)
    auto = GradCAM(model, "stages.3.blocks.1.norm")(x, 0)
    given = GradCAM(model, Layer("stages.3.blocks.1.norm", reshape="channels-last"))(x, 0)
    assert auto.raw.shape == (1, 1, 2, 2) and auto.weights.shape == (1, 1, 320)
    torch.testing.assert_close(auto.raw, given.raw)
    assert GradCAM(model)(x, 0).layer == "stages"


# The default on multimodal and task models: the layer that follows the image -----------------
# Small random configs (tests/helpers/multimodal.py): 32 x 32 images in 8 px patches, 4 x 4 grid.

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed"
)


def _mm_image(side: int = 32) -> torch.Tensor:
    return torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(3))


def _peer_tokens(
    model: nn.Module,
    layer: nn.Module,
    x: torch.Tensor,
    score: Callable[[torch.Tensor], torch.Tensor],
    prefix: int,
) -> torch.Tensor:
    """pytorch-grad-cam's raw map at ``layer`` with its ViT tutorial's reshape (``prefix``
    leading tokens dropped, the rest a square grid) for the target ``score`` of one image."""
    from pytorch_grad_cam import GradCAM as PeerGradCAM

    def reshape(tensor: torch.Tensor) -> torch.Tensor:
        side = int((tensor.size(1) - prefix) ** 0.5)
        result = tensor[:, prefix:, :].reshape(tensor.size(0), side, side, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    peer = PeerGradCAM(model, [layer], reshape_transform=reshape)
    try:
        peer(input_tensor=x, targets=[score])
        grads = peer.activations_and_grads
        acts, grad = grads.activations[0].numpy(), grads.gradients[0].numpy()
        raw = peer.get_cam_image(x, layer, [score], acts, grad, False)
        return torch.from_numpy(np.maximum(raw, 0)[0])
    finally:
        peer.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


def _agrees(model: nn.Module, x: torch.Tensor, layer: str, index: tuple[int, ...], prefix: int):
    """Our default-layer map for ``output[(b, *index)]`` equals pytorch-grad-cam's there."""
    result = GradCAM(model)(x, lambda out: out[(slice(None), *index)])
    assert result.layer == layer
    theirs = _peer_tokens(
        model, resolve_layer(model, layer).module, x, lambda out: out[index], prefix
    )
    assert result.raw.shape[-2:] == theirs.shape and result.raw.abs().max() > 0
    scale = float(theirs.abs().max())
    torch.testing.assert_close(result.raw[0, 0], theirs, rtol=1e-4, atol=1e-4 * scale)


@needs_transformers
def test_clip_with_one_prompt_is_the_vision_tower_too() -> None:
    """One prompt: the text has the image's batch size, and is still no map of the image."""
    layer = "model.vision_model.encoder.layers.1.layer_norm1"
    assert find_default_layer(mm.clip(prompts=1), _mm_image()) == layer


@needs_transformers
def test_clip_default_is_the_vision_tower_and_agrees() -> None:
    """pytorch-grad-cam's CLIP tutorial: the old rule took the text tower's final norm (the 5
    prompts read as the batch); the default is now its layer, the last vision block's first
    norm, with one map per image and target, equal to its maps."""
    pytest.importorskip("pytorch_grad_cam")
    model, x = mm.clip(prompts=5), _mm_image()
    layer = "model.vision_model.encoder.layers.1.layer_norm1"
    assert find_default_layer(model, x) == layer
    assert GradCAM(model)(x, [0, 3]).maps.shape == (1, 2, 32, 32)
    _agrees(model, x, layer, (3,), prefix=1)


@needs_transformers
@pytest.mark.parametrize("task", ["caption", "vqa", "itm"])
def test_blip_default_is_the_vision_encoder_and_agrees(task: str) -> None:
    """The text decoder (captioning, VQA) and the ITM text encoder attend to every image token:
    the default is the vision encoder's last block, not a text layer (old rule: 2x2 maps)."""
    pytest.importorskip("pytorch_grad_cam")
    model, x = mm.blip(task), _mm_image()
    layer = "model.vision_model.encoder.layers.1"
    assert find_default_layer(model, x) == layer
    _agrees(model, x, layer, (1,) if task == "itm" else (2, 5), prefix=1)


@needs_transformers
def test_detr_default_is_the_encoder_and_agrees() -> None:
    """DETR: the encoder's last layer (image tokens, no class token), never the decoder nor its
    heads (the old rule took bbox_predictor and then refused the class scores)."""
    pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("timm")
    model, x = mm.detr(), _mm_image(64)
    layer = "model.model.encoder.layers.1"
    assert find_default_layer(model, x) == layer
    _agrees(model, x, layer, (4, 1), prefix=0)


@needs_transformers
@pytest.mark.parametrize(
    ("build", "layer", "maps"),
    [
        ("vision_encoder_decoder", "model.encoder.layernorm", (4, 4)),
        ("vilt", "model.vilt.embeddings.patch_embeddings", (1, 1)),
        ("llava", "model.model.multi_modal_projector", (4, 4)),
        ("owlvit", "model.layer_norm", (4, 4)),
    ],
)
def test_multimodal_default_follows_the_image(
    build: str, layer: str, maps: tuple[int, int]
) -> None:
    """The last map of the image before text is mixed in: the encoder a captioning decoder
    attends to, ViLT's patch embedding (text and patches share every later layer), LLaVA's
    projected patch tokens, OWL-ViT's image tokens before the text queries."""
    model, x = getattr(mm, build)(), _mm_image()
    result = GradCAM(model)(x, lambda out: out.flatten(1)[:, -1])
    assert result.layer == layer
    assert torch.isfinite(result.raw).all() and result.raw.amax() > result.raw.amin()
    assert result.raw.shape[-2:] == maps or build == "vilt"


@needs_transformers
def test_deformable_detr_default_is_the_backbone() -> None:
    pytest.importorskip("timm")
    try:
        model = mm.detr(deformable=True)
    except ImportError as error:  # its custom kernels' dependencies
        pytest.skip(f"Deformable DETR not importable: {error}")
    x = _mm_image(64)
    result = GradCAM(model)(x, lambda out: out[:, 2, 1])
    assert result.layer.startswith("model.model.backbone.model (pyramid: 0 128x8x8")
    assert torch.isfinite(result.raw).all() and result.weights.abs().amax() > 0


def test_faster_rcnn_plain_call_explains_at_the_backbone() -> None:
    """layer=None on a detector: the feature pyramid the detection heads read (the old rule took
    the proposals' RoI pool: 150 maps for one image)."""
    from gradcam.tasks import DetectionScore, detect

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3
    ).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    found = detect(model, x)[0][:2]
    assert found
    result = GradCAM(model)(x, [DetectionScore.of(d) for d in found])
    assert result.layer.startswith("backbone (pyramid: 0 ")
    assert result.maps.shape == (1, len(found), 64, 64)
    assert torch.isfinite(result.raw).all()


@pytest.mark.parametrize(
    ("build", "layer"),
    [
        ("deeplabv3_mobilenet_v3_large", "classifier.3"),
        ("fcn_resnet50", "classifier.2"),
        ("lraspp_mobilenet_v3_large", "backbone (pyramid"),
    ],
)
def test_segmenter_plain_call_explains_before_the_class_maps(build: str, layer: str) -> None:
    """layer=None on a segmenter: the head's last features before its class-logit maps (those
    are the output, upsampled), or LR-ASPP's two backbone stages, which it combines."""
    from gradcam.tasks import SegmentationScore

    torch.manual_seed(0)
    model = getattr(torchvision.models.segmentation, build)(
        weights=None, weights_backbone=None, num_classes=4
    ).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(64, 64)
    mask[:32, :32] = 1  # a quarter of the image, whatever the random model predicts there
    result = GradCAM(model)(x, SegmentationScore(1, mask))
    assert result.layer.startswith(layer)
    assert torch.isfinite(result.raw).all() and result.raw.amax() > result.raw.amin()


class _MixesAtOnce(nn.Module):
    """Pixels added to a per-image text map in the first module: nothing comes before."""

    def __init__(self) -> None:
        super().__init__()
        self.text = torch.ones(1, 3, 8, 8)
        self.mix = _Add()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.mix(x, self.text.expand(len(x), -1, -1, -1))))


class _Add(nn.Module):
    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return x + other


def test_no_layer_before_mixing_is_one_line_naming_the_candidates() -> None:
    match = r"meets other inputs at mix; spatial outputs seen: mix, conv;"
    with pytest.raises(LayerError, match=match) as info:
        GradCAM(_MixesAtOnce())(torch.randn(1, 3, 8, 8), 0)
    assert "\n" not in str(info.value)
