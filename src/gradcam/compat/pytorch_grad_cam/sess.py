"""pytorch-grad-cam's ``pytorch_grad_cam.sess``, computed by gradcam's ``sess`` method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM, MetaCAM
from gradcam.compat.pytorch_grad_cam.grad_cam import GradCAM
from gradcam.methods.registry import create_method

__all__ = ["SESS"]


class SESS(MetaCAM):
    """SESS (Tang et al. 2022): the base method's maps on sliding windows of the image at
    several scales, weighted by each patch's target probability, fused and blurred.

    Built as pytorch-grad-cam's ``SESS(model, target_layers, reshape_transform=None,
    base_method=GradCAM, scales=None, num_scales=12, scale_step_ratio=2/7, window_size=None,
    step_size=None, pre_filter_ratio=0.0, theta=0.0, pool="mean", smooth=True,
    use_softmax_scores=True, batch_size=32, **kwargs)`` (``kwargs``: the base class's extra
    arguments) and called as ``cam(input_tensor, targets=None, eigen_smooth=False)``; see
    gradcam's :class:`gradcam.methods.sess.SESS` for the formula. One target layer only
    (several raise ``NotImplementedError``); invalid settings raise
    :class:`~gradcam.errors.GradCAMError`, a ``ValueError`` as pytorch-grad-cam's.
    """

    method: ClassVar[str] = "sess"

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
        base_method: type[BaseCAM] = GradCAM,
        scales: list[int] | None = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        window_size: int | None = None,
        step_size: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        if len(target_layers) != 1:
            raise NotImplementedError(
                f"SESS with {len(target_layers)} target layers: gradcam's sess explains one layer"
            )
        self.base_cam = base_method(model, list(target_layers), reshape_transform, **kwargs)
        self.settings: dict[str, Any] = {
            "scales": tuple(scales or ()),
            "num_scales": num_scales,
            "scale_step_ratio": scale_step_ratio,
            "window_size": window_size,
            "step_size": step_size,
            "pre_filter_ratio": pre_filter_ratio,
            "theta": theta,
            "pool": pool,
            "smooth": smooth,
            "use_softmax_scores": use_softmax_scores,
            "batch_size": batch_size,
        }
        super().__init__(model, target_layers, reshape_transform)

    def _methods(self, eigen_smooth: bool) -> list[Any]:
        """One ``sess`` method whose base explains with ``eigen_smooth``."""
        if eigen_smooth not in self._built:
            self._built[eigen_smooth] = [
                create_method(
                    self.method,
                    self.model,
                    self._layer(self.target_layers[0]),
                    base=self.base_cam.method,
                    base_options=self.base_cam.method_options(eigen_smooth),
                    **self.settings,
                )
            ]
        return self._built[eigen_smooth]
