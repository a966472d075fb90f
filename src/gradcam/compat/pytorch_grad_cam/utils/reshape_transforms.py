"""pytorch-grad-cam's ``pytorch_grad_cam.utils.reshape_transforms``: token and pyramid outputs
as (B, C, h, w) maps, for ``reshape_transform=``."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["fasterrcnn_reshape_transform", "swinT_reshape_transform", "vit_reshape_transform"]


def fasterrcnn_reshape_transform(x: Mapping[str, Tensor]) -> Tensor:
    """A feature pyramid's levels, absolute values resized bilinearly to the coarsest level
    (``"pool"``) and concatenated along the channels (for gradient-free methods).

    Examples:
        >>> levels = {"0": torch.ones(1, 2, 8, 8), "pool": torch.ones(1, 2, 2, 2)}
        >>> fasterrcnn_reshape_transform(levels).shape
        torch.Size([1, 4, 2, 2])
    """
    size = tuple(x["pool"].shape[-2:])
    resized = [
        torch.nn.functional.interpolate(level.abs(), size, mode="bilinear") for level in x.values()
    ]
    return torch.cat(resized, dim=1)


def swinT_reshape_transform(tensor: Tensor, height: int = 7, width: int = 7) -> Tensor:
    """(B, h*w, C) Swin tokens as (B, C, h, w) maps.

    Examples:
        >>> swinT_reshape_transform(torch.zeros(2, 49, 8)).shape
        torch.Size([2, 8, 7, 7])
    """
    return tensor.reshape(tensor.shape[0], height, width, tensor.shape[2]).permute(0, 3, 1, 2)


def vit_reshape_transform(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
    """(B, 1 + h*w, C) ViT tokens, the class token dropped, as (B, C, h, w) maps.

    Examples:
        >>> vit_reshape_transform(torch.zeros(2, 1 + 196, 8)).shape
        torch.Size([2, 8, 14, 14])
    """
    grid = tensor[:, 1:, :].reshape(tensor.shape[0], height, width, tensor.shape[2])
    return grid.permute(0, 3, 1, 2)
