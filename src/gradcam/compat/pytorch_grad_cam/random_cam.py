"""pytorch-grad-cam's ``pytorch_grad_cam.random_cam``: not in gradcam (random channel weights
(pytorch-grad-cam's baseline))."""

from __future__ import annotations

from gradcam.compat.pytorch_grad_cam.unsupported import Unsupported

__all__ = ["RandomCAM"]


class RandomCAM(Unsupported):
    """pytorch-grad-cam's ``RandomCAM``: building it raises ``NotImplementedError``."""

    reason = "gradcam has no such method yet (random channel weights (pytorch-grad-cam's baseline))"
