"""pytorch-grad-cam's ``pytorch_grad_cam.sess``: not in gradcam (the scale ensemble over sliding
windows)."""

from __future__ import annotations

from gradcam.compat.pytorch_grad_cam.unsupported import Unsupported

__all__ = ["SESS"]


class SESS(Unsupported):
    """pytorch-grad-cam's ``SESS``: building it raises ``NotImplementedError``."""

    reason = "gradcam has no such method yet (the scale ensemble over sliding windows)"
