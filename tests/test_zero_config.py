"""Grad-CAM with no layer given on every video, MONAI and 1-D network issue 26 names: the
default layer is the last spatial map before the pooling (for token models whose head reads
the class token, the last attention's input), the maps have the input's spatial shape and no
NaN, and the model is untouched (parameters, gradients, hooks, training flags, requires_grad);
then the default layer's map against MONAI's, pytorch-grad-cam's and Captum's Grad-CAM.

Random weights, tiny inputs; the torchvision video transformers and S3D are marked slow."""

from __future__ import annotations

import copy
from collections.abc import Callable
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision.models.video as video
from torch import Tensor, nn

import gradcam
from gradcam.reshapes import Tokens
from tests.helpers.state import assert_unchanged, snapshot

nets = pytest.importorskip("monai.networks.nets")


def sized_mvit(name: str, size: tuple[int, int, int]) -> nn.Module:
    """torchvision's MViT built for ``(T, H, W)`` clips (its builders fix 16 x 224 x 224)."""
    build = video.mvit._mvit

    def sized(**kwargs: object) -> nn.Module:
        return build(**{**kwargs, "spatial_size": size[1:], "temporal_size": size[0]})

    with mock.patch.object(video.mvit, "_mvit", sized):
        return getattr(video, name)(weights=None, num_classes=5)  # type: ignore[no-any-return]


def vit(rank: int, size: int, patch: int) -> nn.Module:
    pytest.importorskip("einops")  # MONAI's ViT needs it
    return nets.ViT(  # type: ignore[no-any-return]
        in_channels=1,
        img_size=size,
        patch_size=patch,
        hidden_size=32,
        mlp_dim=64,
        num_layers=2,
        num_heads=2,
        classification=True,
        num_classes=3,
        spatial_dims=rank,
    )


def conv1d_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 8, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def tv(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(video, name)(weights=None, num_classes=5)  # type: ignore[no-any-return]


def slow(*values: object, id: str) -> object:
    return pytest.param(*values, id=id, marks=pytest.mark.slow)


# (builder, input shape (B, C, *S), default layer). The input sizes are the smallest where the
# last stage keeps more than one position (a 1x1x1 map is no map: an earlier stage is taken).
CASES = [
    pytest.param(tv("r3d_18"), (1, 3, 4, 32, 32), "layer4", id="r3d_18"),
    pytest.param(tv("mc3_18"), (1, 3, 4, 32, 32), "layer4", id="mc3_18"),
    pytest.param(tv("r2plus1d_18"), (1, 3, 4, 32, 32), "layer4", id="r2plus1d_18"),
    # S3D's 2x7x7 average pool needs 7x7 features: 224 x 224. The last map before it.
    slow(tv("s3d"), (1, 3, 16, 224, 224), "features", id="s3d"),
    slow(
        lambda: sized_mvit("mvit_v1_b", (8, 32, 32)),
        (1, 3, 8, 32, 32),
        "blocks.15.norm1",
        id="mvit_v1_b",
    ),
    slow(
        lambda: sized_mvit("mvit_v2_s", (8, 32, 32)),
        (1, 3, 8, 32, 32),
        "blocks.15.norm1",
        id="mvit_v2_s",
    ),
    slow(tv("swin3d_t"), (1, 3, 4, 32, 32), "norm", id="swin3d_t"),
    slow(tv("swin3d_s"), (1, 3, 4, 32, 32), "norm", id="swin3d_s"),
    pytest.param(
        lambda: nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=3),
        (1, 1, 64, 32, 32),
        "class_layers.relu",  # norm5 then ReLU, before the class layers' pooling
        id="monai-densenet121-3d",
    ),
    pytest.param(
        lambda: nets.DenseNet121(spatial_dims=1, in_channels=1, out_channels=3),
        (1, 1, 64),
        "class_layers.relu",
        id="monai-densenet121-1d",
    ),
    pytest.param(
        lambda: nets.ResNet(
            "basic", [1, 1, 1, 1], [4, 8, 16, 32], n_input_channels=1, num_classes=3, spatial_dims=3
        ),
        (1, 1, 64, 32, 32),
        "layer4",
        id="monai-resnet-3d",
    ),
    pytest.param(
        lambda: nets.ResNet(
            "basic", [1, 1, 1, 1], [4, 8, 16, 32], n_input_channels=1, num_classes=3, spatial_dims=1
        ),
        (1, 1, 64),
        "layer4",
        id="monai-resnet-1d",
    ),
    pytest.param(
        lambda: nets.SEResNet50(layers=(1, 1, 1, 1), spatial_dims=3, in_channels=1, num_classes=3),
        (1, 1, 64, 32, 32),
        "layer4",
        id="monai-seresnet50-3d",
    ),
    pytest.param(
        lambda: nets.SEResNet50(layers=(1, 1, 1, 1), spatial_dims=1, in_channels=1, num_classes=3),
        (1, 1, 64),
        "layer4",
        id="monai-seresnet50-1d",
    ),
    # Class token + patch tokens; the head reads the class token: the last attention's input.
    pytest.param(lambda: vit(3, 16, 4), (1, 1, 16, 16, 16), "blocks.1.norm1", id="monai-vit-3d"),
    pytest.param(lambda: vit(2, 32, 8), (1, 1, 32, 32), "blocks.1.norm1", id="monai-vit-2d"),
    pytest.param(lambda: vit(1, 64, 8), (1, 1, 64), "blocks.1.norm1", id="monai-vit-1d"),
    pytest.param(conv1d_net, (1, 2, 32), "4", id="conv1d"),
]


@pytest.mark.parametrize(("build", "shape", "layer"), CASES)
def test_no_layer_given(build: Callable[[], nn.Module], shape: tuple[int, ...], layer: str) -> None:
    torch.manual_seed(0)
    # In training mode with its first parameter frozen: both must come back as they were.
    model = build().train()
    next(model.parameters()).requires_grad_(False)
    before = snapshot(model)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    result = gradcam.GradCAM(model)(x, gradcam.TopK(2))
    assert result.layer == layer
    assert result.maps.shape == (1, 2, *shape[2:])
    assert result.raw.dim() == x.dim()
    assert torch.isfinite(result.maps).all() and float(result.maps.std()) > 0
    assert_unchanged(before, model)


def test_monai_vit_tokens_read_with_the_models_grid() -> None:
    """A signal's 9 tokens (64 samples, patches of 8) are a class token and 8 patches, as the
    patch embedding says, not 9 patches of 7 samples (which the count alone would allow)."""
    model = vit(1, 64, 8).eval()
    x = torch.randn(2, 1, 64, generator=torch.Generator().manual_seed(3))
    result = gradcam.GradCAM(model)(x, 1)
    assert result.raw.shape == (2, 1, 8)
    tokens = gradcam.GradCAM(model, gradcam.Layer("blocks.1.norm1", Tokens(1, (8,))))
    torch.testing.assert_close(result.raw, tokens(x, 1).raw, atol=0, rtol=0)


def test_monai_resnet_matches_monai_gradcam() -> None:
    visualize = pytest.importorskip("monai.visualize")
    torch.manual_seed(0)
    model = nets.ResNet(
        "basic", [1, 1, 1, 1], [4, 8, 16, 32], n_input_channels=1, num_classes=3
    ).eval()
    x = torch.randn(2, 1, 64, 32, 32, generator=torch.Generator().manual_seed(4))
    ours = gradcam.GradCAM(model)(x, 2)
    peer = visualize.GradCAM(nn_module=copy.deepcopy(model), target_layers=ours.layer)
    raw = peer.compute_map(x, class_idx=2, layer_idx=-1)
    torch.testing.assert_close(ours.raw, raw.detach(), atol=1e-6, rtol=1e-5)


def test_monai_vit_matches_pytorch_grad_cam_in_3d() -> None:
    """The automatic token reshape equals pytorch-grad-cam's with a hand-written
    ``reshape_transform`` (class token dropped, 4x4x4 patches) at the same layer."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = vit(3, 16, 4).eval()
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(5))
    ours = gradcam.GradCAM(model)(x, 1)

    def reshape(tokens: Tensor) -> Tensor:
        return tokens[:, 1:].reshape(tokens.shape[0], 4, 4, 4, -1).movedim(-1, 1)

    class Logits(nn.Module):  # pytorch-grad-cam reads a tensor, MONAI's ViT returns a tuple
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Tensor) -> Tensor:
            return self.inner(x)[0]  # type: ignore[no-any-return]

    peer = Logits(copy.deepcopy(model))
    layer = peer.inner.get_submodule(ours.layer)
    cam = pgc.GradCAM(model=peer, target_layers=[layer], reshape_transform=reshape)
    targets = [ClassifierOutputTarget(1)] * 2
    cam(input_tensor=x, targets=targets)
    activations = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy()
    raw = np.maximum(cam.get_cam_image(x, layer, targets, activations, grads, False), 0)
    cam.activations_and_grads.release()
    torch.testing.assert_close(ours.raw[:, 0], torch.from_numpy(raw), atol=1e-6, rtol=1e-5)


def test_conv1d_net_matches_captum() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = conv1d_net().eval()
    x = torch.randn(3, 2, 32, generator=torch.Generator().manual_seed(6))
    ours = gradcam.GradCAM(model)(x, 3)
    layer = model.get_submodule(ours.layer)
    theirs = captum_attr.LayerGradCam(model, layer).attribute(x, target=3, relu_attributions=True)
    torch.testing.assert_close(ours.raw, theirs.detach(), atol=1e-6, rtol=1e-5)
