"""pytorch-grad-cam's ``pytorch_grad_cam.score_cam``, computed by gradcam's ``score-cam`` method."""

from __future__ import annotations

from typing import Any, ClassVar

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["ScoreCAM"]


class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al. 2020), with pytorch-grad-cam's mask upsampling
    (``align_corners=True``).

    Built as ``ScoreCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`.
    """

    method: ClassVar[str] = "score-cam"
    options: ClassVar[dict[str, Any]] = {"align_corners": True}
