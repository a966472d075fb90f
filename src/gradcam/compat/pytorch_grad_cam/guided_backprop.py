"""pytorch-grad-cam's ``pytorch_grad_cam.guided_backprop``, computed by gradcam's
``guided-backprop`` method (no module of the model is replaced)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from gradcam.methods.registry import create_method

__all__ = ["GuidedBackpropReLUModel"]


class GuidedBackpropReLUModel:
    """Guided Backpropagation (Springenberg et al. 2015): the gradient of the class score to
    the input, with only positive gradients passed back through positive ReLU inputs.

    Args:
        model: the model.
        device: move the model to this device first (``None``: leave it where it is).

    Examples:
        >>> gb = GuidedBackpropReLUModel(model)(x, target_category=3)
        >>> gb.shape  # (H, W, C) of the first image
        (128, 128, 3)
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = None) -> None:
        if device is None:
            self.device = next(model.parameters()).device
        else:
            self.device = torch.device(device)
            model = model.to(self.device)
        self.model = model
        self._method = create_method("guided-backprop", model)

    def forward(self, input_img: Tensor) -> Tensor:
        """The model's output."""
        return self.model(input_img)  # type: ignore[no-any-return]

    def __call__(self, input_img: Tensor, target_category: int | None = None) -> np.ndarray:
        """(H, W, C) float32 guided gradient of the first image's ``target_category`` score
        (``None``: its top class)."""
        x = input_img.to(self.device)
        targets = None if target_category is None else int(target_category)
        maps = self._method(x[:1], targets).maps  # (1, 1, C, H, W)
        return maps[0, 0].permute(1, 2, 0).cpu().numpy()  # type: ignore[no-any-return]
