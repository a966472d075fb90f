"""pytorch-grad-cam's ``pytorch_grad_cam.refine_cam``, computed by gradcam's ``refine-cam``
method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM, MetaCAM
from gradcam.compat.pytorch_grad_cam.grad_cam_plusplus import GradCAMPlusPlus
from gradcam.methods.registry import create_method

__all__ = ["RefineCAM"]


class RefineCAM(MetaCAM):
    """RefineCAM (arXiv:2605.14641): the base method's map at each target layer, scaled to
    [0, 1], multiplied, and the product scaled to [0, 1].

    Built as ``RefineCAM(model, target_layers, reshape_transform=None,
    base_method=GradCAMPlusPlus, **kwargs)``, ``base_method`` a class of this package and
    ``kwargs`` its constructor's extra arguments, as pytorch-grad-cam's; called as
    ``cam(input_tensor, targets=None, eigen_smooth=False)``. gradcam's ``refine-cam`` runs the
    base method's registry method with the options that reproduce pytorch-grad-cam's base.
    ``eigen_smooth=True`` raises ``NotImplementedError``: pytorch-grad-cam 1.5.7 passes it to
    its base positionally as ``aug_smooth``, which is not mirrored.
    """

    method: ClassVar[str] = "refine-cam"

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
        base_method: type[BaseCAM] = GradCAMPlusPlus,
        **kwargs: Any,
    ) -> None:
        # The base class checks its arguments and names the registry method and options.
        self.base_cam = base_method(model, list(target_layers[:1]), reshape_transform, **kwargs)
        super().__init__(model, target_layers, reshape_transform)

    def _methods(self, eigen_smooth: bool) -> list[Any]:
        """One ``refine-cam`` method over every target layer."""
        if eigen_smooth:
            raise NotImplementedError(
                "RefineCAM with eigen_smooth=True: pytorch-grad-cam 1.5.7 passes it to its base "
                "method as aug_smooth, which is not mirrored"
            )
        if False not in self._built:
            first, *others = [self._layer(layer) for layer in self.target_layers]
            self._built[False] = [
                create_method(
                    self.method,
                    self.model,
                    first,
                    layers=tuple(others),
                    base=self.base_cam.method,
                    base_options=self.base_cam.method_options(False),
                )
            ]
        return self._built[False]
