"""pytorch-grad-cam's ``pytorch_grad_cam.feature_factorization.deep_feature_factorization``:
its call is not mirrored (use gradcam's ``create_method("dff", ...)``)."""

from __future__ import annotations

from typing import Any

from gradcam.compat.pytorch_grad_cam.unsupported import Unsupported

__all__ = ["DeepFeatureFactorization", "run_dff_on_image"]


class DeepFeatureFactorization(Unsupported):
    """pytorch-grad-cam's ``DeepFeatureFactorization``: building it raises
    ``NotImplementedError``."""

    reason = "its interface is not mirrored yet; gradcam's create_method('dff', ...) computes it"


def run_dff_on_image(*args: Any, **kwargs: Any) -> Any:
    """pytorch-grad-cam's ``run_dff_on_image``: raises ``NotImplementedError``."""
    raise NotImplementedError(f"run_dff_on_image: {DeepFeatureFactorization.reason}")
