"""pytorch-grad-cam's ``pytorch_grad_cam.finer_cam``: its call is not mirrored (use gradcam's
``create_method("finer-cam", ...)``)."""

from __future__ import annotations

from gradcam.compat.pytorch_grad_cam.unsupported import Unsupported

__all__ = ["FinerCAM"]


class FinerCAM(Unsupported):
    """pytorch-grad-cam's ``FinerCAM``: building it raises ``NotImplementedError``."""

    reason = (
        "its call (alpha, comparison_categories, target_idx) is not mirrored yet; gradcam's "
        "create_method('finer-cam', ...) computes Finer-CAM"
    )
