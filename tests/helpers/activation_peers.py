"""Models and pytorch-grad-cam's raw maps for the peer-agreement tests of the activation
methods (Eigen-CAM, Eigen-Grad-CAM, KPCA-CAM, FEM, Deep Feature Factorization).

The models, and one forward and backward pass of each, are made once per test session
(random seeded weights, eval mode); the peer's maps are read before its ReLU and its scaling,
from its ``get_cam_image`` on that pass's activations and gradients.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

import gradcam

# (model name, layer, input side): the peers' default layers; inputs kept small for 2 cores.
CASES = [("resnet50", "layer4", 128), ("vgg16", "features.29", 128), ("lite0", "_head_act", 128)]


@cache
def peer_model(name: str) -> nn.Module:
    """ResNet-50 and VGG-16 with seeded random weights, or the embedded EfficientNet-Lite0."""
    torch.manual_seed(0)
    if name == "resnet50":
        return torchvision.models.resnet50(weights=None).eval()
    if name == "vgg16":
        return torchvision.models.vgg16(weights=None).eval()
    return gradcam.load_model().module.eval()


def peer_input(side: int, batch: int = 1, seed: int = 1) -> Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


@cache
def peer_pass(name: str) -> tuple[Tensor, np.ndarray, np.ndarray, int]:
    """For the case ``name`` of :data:`CASES`: the input, the layer's activations and the
    gradient of the top-1 class score to them (numpy, as the peer holds them), and the class;
    one forward and one backward pass per session."""
    layer, side = next((c[1], c[2]) for c in CASES if c[0] == name)
    model, x = peer_model(name), peer_input(side)
    found: list[Tensor] = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: found.append(out)
    )
    try:
        output = model(x)
    finally:
        handle.remove()
    class_id = int(output[0].argmax())
    (grads,) = torch.autograd.grad(output[0, class_id], found[0])
    return x, found[0].detach().numpy(), grads.numpy(), class_id


def peer_raw(cls: Any, name: str, **options: Any) -> Tensor:
    """The peer's (1, h, w) map before its ReLU for the case ``name``, from its
    ``get_cam_image`` on :func:`peer_pass`'s activations and gradients."""
    model = peer_model(name)
    layer = next(c[1] for c in CASES if c[0] == name)
    module = dict(model.named_modules())[layer]
    cam = cls(model, [module], **options)
    cam.activations_and_grads.release()  # its hooks are not needed: the pass is given
    _, activations, grads, _ = peer_pass(name)
    raw = cam.get_cam_image(None, module, None, activations.copy(), grads.copy(), False)
    return torch.from_numpy(np.asarray(raw, dtype=np.float32))


def assert_close_relative(ours: Tensor, theirs: Tensor, rtol: float = 1e-4) -> float:
    """Largest difference within ``rtol`` of the peer's largest magnitude; returns the ratio."""
    ours, theirs = ours.float(), theirs.float()
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * float(theirs.abs().max()))
    return float((ours - theirs).abs().max() / theirs.abs().max())


class FeatureNet(nn.Module):
    """``features`` (identity: the activations ``A`` are the input, set by hand) -> global
    average pooling -> ``fc`` with the given (N, C) weights and no bias, so that
    ``dy^c/dA^k_ij = W[c, k] / Z``."""

    def __init__(self, weight: list[list[float]]) -> None:
        super().__init__()
        w = torch.tensor(weight)
        self.features = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(w)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def features(*channels: list[float], width: int | None = None) -> Tensor:
    """A (1, C, h, w) batch from per-channel row-major values (one row unless ``width``)."""
    t = torch.tensor(channels, dtype=torch.float32)
    w = width or t.shape[1]
    return t.reshape(1, t.shape[0], -1, w)
