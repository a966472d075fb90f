"""pytorch-grad-cam's ``pytorch_grad_cam.fullgrad_cam``, computed by gradcam's ``fullgrad``
method."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM
from gradcam.methods.registry import create_method

__all__ = ["FullGrad"]


class FullGrad(BaseCAM):
    """FullGrad (Srinivas and Fleuret 2019): the input-gradient and every bias-gradient, each
    rectified by its absolute value, scaled and summed at the input's resolution.

    ``target_layers`` is ignored, as in pytorch-grad-cam: every layer with a bias takes part.
    """

    method: ClassVar[str] = "fullgrad"

    def _methods(self, eigen_smooth: bool) -> list[Any]:
        if eigen_smooth:
            raise NotImplementedError("FullGrad with eigen_smooth=True: gradcam's has none")
        if False not in self._built:
            self._built[False] = [create_method(self.method, self.model)]
        return self._built[False]

    def _layer_maps(self, x: Tensor, targets: list[Any] | None, eigen_smooth: bool) -> list[Tensor]:
        # FullGrad's map is already at the input's resolution and non-negative.
        result = self._methods(eigen_smooth)[0](x, targets)
        self.outputs = result.logits
        return [result.raw[:, 0].float()]
