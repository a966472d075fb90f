"""pytorch-grad-cam's ``pytorch_grad_cam.random_cam``, computed by gradcam's ``random-cam``
method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["RandomCAM"]


class RandomCAM(BaseCAM):
    """RandomCAM: Grad-CAM's map with channel weights drawn uniformly from [-1, 1), one per
    image and channel, the baseline a method should beat.

    Built as ``RandomCAM(model, target_layers, reshape_transform=None)``; see
    :class:`~gradcam.compat.pytorch_grad_cam.base_cam.BaseCAM`. pytorch-grad-cam draws the
    weights from numpy's global generator; here they come from torch's global generator
    (``torch.manual_seed`` makes them repeatable), or from a generator of their own seeded
    with ``seed`` at every call. The weights therefore differ from pytorch-grad-cam's draw;
    given the same weights the maps are the same. ``eigen_smooth=True`` raises
    ``NotImplementedError`` (gradcam's projection sign would differ from pytorch-grad-cam's).

    Args:
        seed: ``None`` (torch's global generator, a new draw every call) or an integer (the
            same weights every call); an addition to pytorch-grad-cam's signature.
    """

    method: ClassVar[str] = "random-cam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.seed = seed
        super().__init__(model, target_layers, reshape_transform)

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed}
