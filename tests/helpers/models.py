"""Tiny models with hand-set weights whose Grad-CAM can be computed by hand.

``TinyGapNet`` on ``x = arange(9).view(1, 1, 3, 3)``:

* conv (1 -> 2 channels, 2x2 kernel, no bias): channel 0 sums each 2x2 window, channel 1 is
  ``x[i, j] - x[i+1, j+1]``, so ``A^0 = [[8, 12], [20, 24]]`` and ``A^1 = [[-4, -4], [-4, -4]]``;
* global average pooling (Z = 4), then a linear layer with ``W = [[1, 2], [-1, 1]]``.

So ``dy^c/dA^k_ij = W[c, k] / 4`` everywhere, ``alpha^c = W[c] / 4`` and
``y^0 = 16 - 8 = 8``, ``y^1 = -16 - 4 = -20``;
``L^0 = ReLU(A^0/4 + A^1/2) = [[0, 1], [3, 4]]``;
``sum_k alpha^1_k A^k = -A^0/4 + A^1/4 = [[-3, -4], [-6, -7]]``, so ``L^1 = 0`` and its
counterfactual is ``[[3, 4], [6, 7]]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def tiny_input() -> Tensor:
    return torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)


class TinyGapNet(nn.Module):
    """conv -> GAP -> linear, with the weights of the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=2, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(
                torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [0.0, -1.0]]]])
            )
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


class TinyGatedNet(nn.Module):
    """conv (window sums, bias -15) -> ReLU(inplace) -> flatten -> linear [1, 2, 3, 4].

    On ``tiny_input()``: ``A = [[-7, -3], [5, 9]]``, ``y = 5*3 + 9*4 = 51``, the ReLU gates the
    gradient to ``[[0, 0], [3, 4]]``, ``alpha = 7/4`` and ``L = [[0, 0], [8.75, 15.75]]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=2)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(-15.0)
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


class SmallCNN(nn.Module):
    """A small random CNN with BatchNorm, in-place ReLUs and a GAP + linear head (seeded)."""

    def __init__(self, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class WrappedOutput(nn.Module):
    """SmallCNN whose output is wrapped: ``"tuple"``, ``"dict"``, ``"object"`` or ``"str"``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = SmallCNN()
        self.kind = kind

    def forward(self, x: Tensor) -> Any:
        logits = self.net(x)
        if self.kind == "tuple":
            return logits, logits.detach() * 0
        if self.kind == "dict":
            return {"logits": logits, "aux": logits.detach()}
        if self.kind == "object":
            return type("Output", (), {"logits": logits})()
        return "not a tensor"


class ReusedLayerNet(nn.Module):
    """Calls ``self.block`` twice per forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(self.block(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


class FailingNet(SmallCNN):
    """Raises inside forward, after the feature layer has run."""

    def forward(self, x: Tensor) -> Tensor:
        self.features(x)
        raise RuntimeError("boom inside forward")


def signed_input() -> Tensor:
    return torch.tensor([[[[1.0, -2.0], [3.0, -1.0]]]])


RECTIFIERS: dict[str, Any] = {
    "nn.ReLU": nn.ReLU(),
    "nn.ReLU(inplace)": nn.ReLU(inplace=True),
    "F.relu": torch.nn.functional.relu,
    "F.relu(inplace)": lambda t: torch.nn.functional.relu(t, inplace=True),
    "F.relu(t, True)": lambda t: torch.nn.functional.relu(t, True),
    "torch.relu": torch.relu,
    "torch.relu_": torch.relu_,
    "Tensor.relu": lambda t: t.relu(),
    "Tensor.relu_": lambda t: t.relu_(),
    "nn.ReLU6": nn.ReLU6(),
    "F.relu6": torch.nn.functional.relu6,
    "nn.SiLU": nn.SiLU(),
}


class RectifierNet(nn.Module):
    """conv 1x1 (weights +1, -1) -> rectifier -> flatten -> linear; any rectifier form.

    On ``signed_input()`` ``x = [[1, -2], [3, -1]]``: ``z0 = x``, ``z1 = -x``, and the linear
    weights are ``v0 = [2, -3, -1, 4]`` on channel 0 and ``v1 = [1, 2, 5, -1]`` on channel 1.
    For ReLU, ``h0 = [1, 0, 3, 0]`` and ``h1 = [0, 2, 0, 1]``, so ``y = -1 + 3 = 2``, and
    ``dy/dx = dy/dz0 - dy/dz1`` is, under each rule:

    * plain:  ``v0 [x>0] - v1 [-x>0] = [2, 0, -1, 0] - [0, 2, 0, -1] = [2, -2, -1, 1]``;
    * guided: ``max(v0,0) [x>0] - max(v1,0) [-x>0] = [2, 0, 0, 0] - [0, 2, 0, 0] = [2, -2, 0, 0]``;
    * deconv: ``max(v0, 0) - max(v1, 0) = [2, 0, 0, 4] - [1, 2, 5, 0] = [1, -2, -5, 4]``.
    """

    def __init__(self, rectifier: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.rectifier = rectifier
        self.fc = nn.Linear(8, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[2.0, -3.0, -1.0, 4.0, 1.0, 2.0, 5.0, -1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.rectifier(self.conv(x)).flatten(1))


class GmpNet(SmallCNN):
    """Like SmallCNN, but with global *max* pooling: not a CAM architecture."""

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).amax(dim=(2, 3)))


class TinyTokenNet(nn.Module):
    """A hand-weighted token model: patch embedding, a class token, a linear layer, mean pooling.

    On ``x = arange(16).view(1, 1, 4, 4)``, the 2x2 patches (``patch``: conv 1 -> 2 channels,
    kernel 2, stride 2; channel 0 sums a patch, channel 1 is its first pixel minus its last)
    give the tokens ``A^0 = [[10, 18], [42, 50]]`` and ``A^1 = -5`` everywhere. A zero class
    token goes first; ``proj`` (the identity, 2 -> 2) outputs the 5 tokens (1, 5, 2); the head
    averages all 5 tokens and applies ``W = [[1, 2], [-1, 1]]``.

    So ``dy^c/dA_ij = W[c] / 5`` at every patch token, ``alpha^c = W[c] / 5`` and
    ``L^0 = ReLU(A^0/5 + 2 A^1/5) = [[0, 1.6], [6.4, 8]]``;
    ``L^1 = ReLU(-A^0/5 + A^1/5) = 0``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 2, kernel_size=2, stride=2, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 2))
        self.proj = nn.Linear(2, 2, bias=False)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.patch.weight.copy_(
                torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [0.0, -1.0]]]])
            )
            self.proj.weight.copy_(torch.eye(2))
            self.head.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, 4, 2), row by row
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        tokens = self.proj(torch.cat([cls, tokens], dim=1))
        return self.head(tokens.mean(dim=1))


class TinyAttention(nn.Module):
    """Single-head softmax self-attention over tokens (B, N, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        return self.out(weights @ v)


class TinyBlock(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TinyAttention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A random two-block ViT (seeded): patch 4, a class token, GELU MLPs; the head reads the
    class token, so after the last attention only the class token reaches the score."""

    def __init__(self, dim: int = 8, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.patch = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.Sequential(TinyBlock(dim), TinyBlock(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])


#: The default layer of each peer-agreement model fixture of tests/methods, by fixture name.
DEFAULT_LAYERS = {"resnet50": "layer4", "vgg16": "features.29", "lite0_module": "_head_act"}


class ChannelNet(nn.Module):
    """Class c's score is the mean of input channel c: its Grad-CAM map *is* channel c.

    ``features`` (a 1x1 conv with identity weights, then ReLU) copies the first two channels;
    GAP and an identity linear layer give the scores, so ``alpha^c`` is one-hot over channels.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.ReLU())
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.copy_(torch.eye(2, 3).view(2, 3, 1, 1))
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def channel_model(name: str = "channels") -> Any:
    """:class:`ChannelNet` as a ``gradcam.LoadedModel`` on 32 px inputs, pixels unnormalized,
    classes ``("red", "green")``, default layer ``features``."""
    import gradcam
    from gradcam.images import Preprocess

    identity = Preprocess(32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return gradcam.LoadedModel(
        name, ChannelNet().eval(), identity, ("red", "green"), "features", True
    )
