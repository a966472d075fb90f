"""Signals (B, C, L) and volumes or clips (B, C, D, H, W) through the engine, the reshapes and
Grad-CAM: exact maps on hand-weighted nets, agreement with Captum and pytorch-grad-cam on
random ones, torchvision's video classifiers with random weights, and one-line refusals."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models.video as video
from torch import Tensor, nn

import gradcam
from gradcam.engine import check_input, spatial_size
from gradcam.errors import GradCAMError
from gradcam.hooks import eval_mode, token_grids
from gradcam.maps import normalize, upsample
from gradcam.reshapes import Tokens, plausible_grid, token_grid, tokens_to_maps, view_for
from tests.helpers.state import assert_unchanged, snapshot


def hand_net(rank: int, stride: int = 1) -> nn.Module:
    """A 1x1 convolution of one channel into ``A^0 = 2x + 1`` and ``A^1 = -x + 3``, global
    average pooling, and a head ``y^0 = mean A^0 - mean A^1``, ``y^1 = mean A^1``."""
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[rank](1, 2, 1, stride=stride)
    pool = {1: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool3d}[rank](1)
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, *(1,) * rank))
        conv.bias.copy_(torch.tensor([1.0, 3.0]))
        head.weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
    return nn.Sequential(conv, pool, nn.Flatten(), head).eval()


def test_hand_weighted_signal_equals_the_formula() -> None:
    # alpha = (1, -1) / 4 over L = 4 positions: L^0 = ReLU((2x+1)/4 - (-x+3)/4) = ReLU(3x/4 - 1/2)
    x = torch.arange(4.0).view(1, 1, 4)
    result = gradcam.GradCAM(hand_net(1), "0")(x, [0, 1])
    expected = torch.tensor([0.0, 0.25, 1.0, 1.75])
    torch.testing.assert_close(result.weights[0, 0], torch.tensor([0.25, -0.25]), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.raw[0, 0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.maps[0, 0], expected / 1.75, atol=1e-6, rtol=0)
    # y^1 = mean A^1: alpha = (0, 1/4), L^1 = ReLU((3 - x) / 4)
    torch.testing.assert_close(result.raw[0, 1], (3 - torch.arange(4.0)) / 4, atol=1e-6, rtol=0)


def test_hand_weighted_volume_equals_the_formula() -> None:
    # 8 positions: alpha = (1, -1) / 8, L^0 = ReLU((3x - 2) / 8) for x = 0..7
    x = torch.arange(8.0).view(1, 1, 2, 2, 2)
    result = gradcam.GradCAM(hand_net(3), "0")(x, 0)
    values = torch.relu((3 * torch.arange(8.0) - 2) / 8).view(2, 2, 2)
    assert result.raw.shape == (1, 1, 2, 2, 2) and result.maps.shape == (1, 1, 2, 2, 2)
    torch.testing.assert_close(result.raw[0, 0], values, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.maps[0, 0], values / values.max(), atol=1e-6, rtol=0)


def test_volume_maps_are_upsampled_trilinearly() -> None:
    # A stride-2 convolution: the layer sees the even positions of a 4x4x4 volume.
    x = torch.arange(64.0).view(1, 1, 4, 4, 4)
    result = gradcam.GradCAM(hand_net(3, stride=2), "0")(x, 0)
    even = x[0, 0, ::2, ::2, ::2].reshape(-1)
    raw = torch.relu((3 * even - 2) / 8).view(1, 1, 2, 2, 2)
    torch.testing.assert_close(result.raw, raw, atol=1e-5, rtol=0)
    up = F.interpolate(raw, size=(4, 4, 4), mode="trilinear", align_corners=False)
    torch.testing.assert_close(
        result.maps, (up - up.min()) / (up.max() - up.min()), atol=1e-6, rtol=0
    )


def test_upsample_and_normalize_by_rank() -> None:
    signal = torch.tensor([[[0.0, 2.0]]])
    expected = F.interpolate(signal, size=4, mode="linear", align_corners=False)
    torch.testing.assert_close(upsample(signal, (4,)), expected)
    assert torch.equal(normalize(torch.tensor([[[1.0, 1.0]]]), 1), torch.zeros(1, 1, 2))
    clip = torch.rand(2, 3, 2, 2, 2)
    flat = normalize(clip, 3).flatten(2)
    assert torch.equal(flat.amin(-1), torch.zeros(2, 3)) and torch.equal(
        flat.amax(-1), torch.ones(2, 3)
    )


def random_net(rank: int) -> nn.Module:
    torch.manual_seed(0)
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[rank]
    pool = {1: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool3d}[rank]
    return nn.Sequential(
        conv(2, 6, 3, padding=1),
        nn.ReLU(),
        conv(6, 8, 3, stride=2),
        nn.ReLU(),
        pool(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


def random_input(rank: int) -> Tensor:
    shape = {1: (2, 2, 21), 3: (2, 2, 5, 9, 9)}[rank]
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("rank", [1, 3])
def test_matches_captum_layer_gradcam(rank: int) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    net, x = random_net(rank), random_input(rank)
    ours = gradcam.GradCAM(net, "2")(x, torch.tensor([[1, 4], [1, 4]]))
    for k, target in enumerate([1, 4]):
        theirs = captum_attr.LayerGradCam(net, net[2]).attribute(
            x, target=target, relu_attributions=True
        )
        torch.testing.assert_close(ours.raw[:, k], theirs[:, 0].detach(), atol=1e-6, rtol=1e-5)


def test_matches_pytorch_grad_cam_in_3d() -> None:
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, x = random_net(3), random_input(3)
    ours = gradcam.GradCAM(net, "2")(x, 3)
    cam = pgc.GradCAM(model=net, target_layers=[net[2]])
    targets = [ClassifierOutputTarget(3)] * 2
    cam(input_tensor=x, targets=targets)
    activations = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy()
    weights = cam.get_cam_weights(x, net[2], targets, activations, grads)
    raw = np.maximum(cam.get_cam_image(x, net[2], targets, activations, grads, False), 0)
    cam.activations_and_grads.release()
    torch.testing.assert_close(ours.weights[:, 0], torch.from_numpy(weights), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.raw[:, 0], torch.from_numpy(raw), atol=1e-6, rtol=1e-5)


def test_matches_monai_gradcam_in_3d() -> None:
    monai_visualize = pytest.importorskip("monai.visualize")
    net, x = random_net(3), random_input(3)
    ours = gradcam.GradCAM(net, "2")(x, 3)
    cam = monai_visualize.GradCAM(nn_module=net, target_layers="2")
    raw = cam.compute_map(x, class_idx=3, layer_idx=-1)
    torch.testing.assert_close(ours.raw, raw.detach(), atol=1e-6, rtol=1e-5)
    # MONAI upsamples trilinearly too, then scales each map to [1, 0]: high evidence is 0.
    maps = cam(x, class_idx=3)
    torch.testing.assert_close(ours.maps, 1 - maps.detach(), atol=1e-6, rtol=1e-5)


def test_pixel_methods_keep_the_channels() -> None:
    net, x = random_net(3), random_input(3)
    found = gradcam.explain_methods(["guided-backprop", "guided-gradcam"], net, x, [2])
    assert found["guided-backprop"].maps.shape == (2, 1, 2, 5, 9, 9)
    guided = found["guided-gradcam"]
    factor = upsample(guided.cam.raw, spatial_size(x)).unsqueeze(2)
    torch.testing.assert_close(guided.maps, guided.gradients * factor)


def small_mvit() -> nn.Module:
    """torchvision's mvit_v2_s built for 8 x 32 x 32 clips (its builder fixes 16 x 224 x 224)."""
    build = video.mvit._mvit

    def sized(**kwargs: object) -> nn.Module:
        return build(**{**kwargs, "spatial_size": (32, 32), "temporal_size": 8})

    torch.manual_seed(0)
    with mock.patch.object(video.mvit, "_mvit", sized):
        return video.mvit_v2_s(weights=None).eval()


VIDEO = [
    ("r3d_18", (8, 32, 32), "layer4"),
    ("mc3_18", (8, 32, 32), "layer4"),
    ("r2plus1d_18", (8, 32, 32), "layer4"),
    pytest.param("mvit_v2_s", (8, 32, 32), "blocks.15.norm1", marks=pytest.mark.slow),
    pytest.param("swin3d_t", (4, 32, 32), "norm", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "size", "layer"), VIDEO)
def test_video_classifiers_with_no_layer_given(
    name: str, size: tuple[int, int, int], layer: str
) -> None:
    torch.manual_seed(0)
    model = small_mvit() if name == "mvit_v2_s" else getattr(video, name)(weights=None).eval()
    before = snapshot(model)
    clip = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    result = gradcam.GradCAM(model)(clip, gradcam.TopK(2))
    assert result.layer == layer
    assert result.maps.shape == (1, 2, *size)
    assert torch.isfinite(result.maps).all() and float(result.maps.std()) > 0
    assert_unchanged(before, model)


def test_mvit_tokens_read_with_the_grid_the_model_declares() -> None:
    model = small_mvit()
    with torch.no_grad(), eval_mode(model):
        model(torch.zeros(1, 3, 8, 32, 32))
    grids = token_grids(model)
    # conv_proj: (8, 32, 32) / (2, 4, 4); three stages halve h and w: 4x8x8 ... 4x1x1
    assert grids[1 + 4 * 8 * 8] == (4, 8, 8) and grids[1 + 4 * 1 * 1] == (4, 1, 1)
    norm = model.blocks[15].norm1
    view = view_for(
        "blocks.15.norm1", "auto", (1, 5, 768), (8, 32, 32), norm, model, declared=grids
    )
    assert (view.kind, view.prefix, view.grid) == ("tokens", 1, (4, 1, 1))


def test_swin3d_reads_channels_last() -> None:
    clip = nn.Sequential(nn.Conv3d(3, 8, (2, 4, 4), stride=(2, 4, 4)), nn.LayerNorm(8))
    view = view_for("1", "auto", (1, 4, 16, 16, 8), (8, 64, 64), clip[1], clip)
    assert view.kind == "channels-last"
    out = torch.arange(2 * 3 * 4 * 8.0).view(1, 2, 3, 4, 8)
    assert view(out).shape == (1, 8, 2, 3, 4) and torch.equal(
        view(out)[0, :, 1, 2, 3], out[0, 1, 2, 3]
    )


def test_token_and_grid_helpers_in_other_ranks() -> None:
    tokens = torch.arange(9 * 2.0).view(1, 9, 2)  # a class token, then 2x2x2 tokens
    maps = tokens_to_maps(tokens, 1, (2, 2, 2))
    assert maps.shape == (1, 2, 2, 2, 2) and maps[0, 0, 1, 0, 1].item() == tokens[0, 1 + 5, 0]
    assert token_grid(65, (64, 64, 64)) == (1, (4, 4, 4))  # a common 16-voxel patch
    assert token_grid(65, (8, 64, 64), declared={65: (4, 4, 4)}) == (1, (4, 4, 4))
    assert plausible_grid((4, 2, 2), (8, 64, 64)) and not plausible_grid((4, 1, 8), (8, 64, 64))
    assert plausible_grid((13,), (100,))
    view = view_for("x", Tokens(grid=(2, 2, 2)), (1, 9, 4), (8, 8, 8), nn.Identity(), nn.Identity())
    assert (view.prefix, view.grid) == (1, (2, 2, 2))


def one_line(error: pytest.ExceptionInfo[GradCAMError]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_a_2d_model_given_a_clip() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(
        GradCAMError, match=r"\(B, C, H, W\), got \(1, 3, 4, 16, 16\): the model's"
    ) as e:
        gradcam.GradCAM(net)(torch.rand(1, 3, 4, 16, 16))
    assert "Conv2d" in one_line(e)
    with pytest.raises(GradCAMError, match="add a batch dimension"):
        gradcam.GradCAM(random_net(3))(torch.rand(2, 5, 9, 9))


def test_a_volume_with_nan_voxels() -> None:
    x = random_input(3)
    x[0, 0, 2, 3, 3] = float("nan")
    with pytest.raises(GradCAMError, match="NaN or infinite") as e:
        gradcam.GradCAM(random_net(3))(x)
    one_line(e)


def test_a_clip_shorter_than_the_temporal_kernel() -> None:
    net = random_net(3)
    net[0] = nn.Conv3d(2, 6, 3)  # no padding: 3 frames at least
    with pytest.raises(GradCAMError, match="axis D has 2 positions, fewer than the 3") as e:
        gradcam.GradCAM(net)(torch.rand(1, 2, 2, 9, 9))
    one_line(e)
    # A deeper kernel that does not fit: the model's own error, in one line, for the default
    # layer's probe and for a layer given.
    deep = nn.Sequential(nn.Conv3d(2, 4, (1, 3, 3)), nn.Conv3d(4, 4, 3), nn.Flatten(1))
    clip = torch.rand(1, 2, 2, 9, 9)
    for method in (gradcam.GradCAM(deep), gradcam.GradCAM(deep, "0")):
        with pytest.raises(GradCAMError, match=r"cannot take an input|too small for the") as e:
            method(clip)
        one_line(e)


def test_check_input_keeps_2d_messages() -> None:
    net = nn.Conv2d(3, 4, 3)
    assert check_input(torch.zeros(1, 3, 5, 5), net).shape == (1, 3, 5, 5)
    with pytest.raises(
        GradCAMError, match=r"must have shape \(B, C, H, W\), got \(3, 5, 5\) \(add"
    ):
        check_input(torch.zeros(3, 5, 5), net)
    assert check_input(torch.zeros(1, 3, 1, 1), net).shape == (1, 3, 1, 1)  # as before
    with pytest.raises(GradCAMError, match="axis L has 2 positions, fewer than the 3"):
        check_input(torch.zeros(1, 3, 2), nn.Conv1d(3, 4, 3))
    assert check_input(torch.zeros(1, 3, 2), nn.Conv1d(3, 4, 3, padding=1)).shape == (1, 3, 2)


def test_a_model_mixing_ranks_is_read_at_the_inputs() -> None:
    # A text branch's Conv1d registered before the image stem: images are still images.
    model = nn.ModuleDict({"text": nn.Conv1d(4, 4, 3), "image": nn.Conv2d(3, 8, 3)})
    assert check_input(torch.zeros(1, 3, 8, 8), model).shape == (1, 3, 8, 8)
    assert check_input(torch.zeros(1, 4, 8), model).shape == (1, 4, 8)
    with pytest.raises(GradCAMError, match="input has 4 channels, but the model takes 3"):
        check_input(torch.zeros(1, 4, 8, 8), model)
