"""pytorch-grad-cam's ``pytorch_grad_cam.seg_eigen_cam``: not in gradcam (Eigen-CAM of |gradient|
times activations, sign-corrected)."""

from __future__ import annotations

from gradcam.compat.pytorch_grad_cam.unsupported import Unsupported

__all__ = ["SegEigenCAM"]


class SegEigenCAM(Unsupported):
    """pytorch-grad-cam's ``SegEigenCAM``: building it raises ``NotImplementedError``."""

    reason = (
        "gradcam has no such method yet (Eigen-CAM of |gradient| times activations, sign-corrected)"
    )
