"""pytorch-grad-cam's ``pytorch_grad_cam.refine_cam``: not in gradcam (the product of several
layers' maps)."""

from __future__ import annotations

from gradcam.compat.pytorch_grad_cam.unsupported import Unsupported

__all__ = ["RefineCAM"]


class RefineCAM(Unsupported):
    """pytorch-grad-cam's ``RefineCAM``: building it raises ``NotImplementedError``."""

    reason = "gradcam has no such method yet (the product of several layers' maps)"
