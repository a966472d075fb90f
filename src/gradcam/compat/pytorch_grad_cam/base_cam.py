"""The base of the compatible CAM classes: pytorch-grad-cam's call, gradcam's methods.

A class names its method in gradcam's registry (:mod:`gradcam.methods.registry`) and the options
that reproduce pytorch-grad-cam's numerics; :class:`BaseCAM` builds that method once per target
layer and runs pytorch-grad-cam's post-processing on the maps it returns:

.. math:: L = s\\Big(\\frac{1}{n} \\sum_{l=1}^{n}
s\\big(\\mathrm{Up}(\\mathrm{ReLU}(L_l))\\big)\\Big)

for ``n`` target layers, where ``L_l`` is the method's map at layer ``l`` (``result.raw``),
``Up`` is bilinear resizing to the input (half-pixel centres, as ``cv2.resize``) and
``s(m) = (m - min m) / (max(m - min m) + 1e-7)`` (``scale_cam_image``). The result is a
float32 numpy array (B, H, W), one map per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from gradcam.errors import TargetError
from gradcam.layers import Layer
from gradcam.methods.registry import create_method, method_spec
from gradcam.methods.smoothing import AUGMENTATIONS, augment, deaugment
from gradcam.reshapes import Reshape
from gradcam.targets import per_image

__all__ = ["BaseCAM", "MetaCAM", "scale_maps"]

_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image


def scale_maps(maps: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """``scale_cam_image`` on (N, h, w) maps: shifted to a minimum of 0, divided by
    ``max + 1e-7``, then resized bilinearly to ``size`` = (H, W) (half-pixel centres, no
    antialiasing: what ``cv2.resize`` does).

    Examples:
        >>> scale_maps(torch.tensor([[[1.0, 3.0]]]))
        tensor([[[0., 1.]]])
    """
    low = maps.amin(dim=(-2, -1), keepdim=True)
    shifted = maps - low
    scaled = shifted / (shifted.amax(dim=(-2, -1), keepdim=True) + _EPS)
    if size is None or tuple(scaled.shape[-2:]) == tuple(size):
        return scaled
    resized = nn.functional.interpolate(
        scaled[:, None], size=size, mode="bilinear", align_corners=False
    )
    return resized[:, 0]


def _as_targets(targets: Sequence[Callable[[Any], Any]] | None) -> list[Any] | None:
    """pytorch-grad-cam's targets: ``None`` (each image's top class) or one callable per image,
    called on that image's output."""
    if targets is None:
        return None
    if isinstance(targets, (Tensor, str, bytes)) or not isinstance(targets, Sequence):
        raise TargetError(
            f"targets must be None or a list of one callable per image (such as "
            f"ClassifierOutputTarget(281)), got {type(targets).__name__}"
        )
    for target in targets:
        if not callable(target):
            raise TargetError(
                f"target {target!r} is not callable: pytorch-grad-cam's targets are callables "
                "such as ClassifierOutputTarget(281), one per image"
            )
    return [per_image(t) for t in targets]


class BaseCAM:
    """A CAM method with pytorch-grad-cam's interface, computed by gradcam's registry method
    :attr:`method` at each of ``target_layers``.

    Args:
        model: the model (it is not modified: gradcam's methods run it in eval mode and
            restore its mode, and never replace its modules).
        target_layers: the layers to explain, modules of ``model``; with several, their
            scaled maps are averaged (pytorch-grad-cam's aggregation).
        reshape_transform: a callable turning a layer's output into (B, C, h, w) maps (a ViT's
            tokens, say); it must only select and permute elements, as it is applied to the
            output and to its gradient alike.

    Examples:
        >>> from gradcam.compat.pytorch_grad_cam import GradCAM
        >>> from gradcam.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        >>> with GradCAM(model=model, target_layers=[model.features]) as cam:
        ...     grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(3)])
        >>> grayscale.shape, grayscale.dtype
        ((1, 128, 128), dtype('float32'))
    """

    method: ClassVar[str] = ""
    """The method's name in gradcam's registry."""
    options: ClassVar[dict[str, Any]] = {}
    """Registry options that reproduce pytorch-grad-cam's numerics."""
    smoothable: ClassVar[bool] = False
    """Whether the registry method takes ``eigen_smooth``."""
    ignores_eigen_smooth: ClassVar[bool] = False
    """Whether pytorch-grad-cam's class ignores ``eigen_smooth`` (its map is a projection
    already), so that ``eigen_smooth=True`` changes nothing here either."""

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.model = model
        self.target_layers = list(target_layers)
        self.reshape_transform = reshape_transform
        self.device = next(model.parameters()).device
        self.outputs: Tensor | None = None
        """The model's (B, N) class scores of the last call (detached), as pytorch-grad-cam's
        ``cam.outputs``; ``None`` before the first call or for outputs without class scores."""
        self._built: dict[bool, list[Any]] = {}
        self._methods(False)  # check the layers now, as pytorch-grad-cam hooks them now

    def _options(self) -> dict[str, Any]:
        return dict(self.options)

    def method_options(self, eigen_smooth: bool) -> dict[str, Any]:
        """The registry options of :attr:`method` for one call with ``eigen_smooth``; the
        meta-classes (RefineCAM, SESS) pass them on as their base method's options.

        Raises:
            NotImplementedError: ``eigen_smooth`` for a method without it.
        """
        options = self._options()
        if eigen_smooth and not self.ignores_eigen_smooth:
            if not self.smoothable:
                raise NotImplementedError(
                    f"{type(self).__name__} with eigen_smooth=True: gradcam's {self.method!r} "
                    "has no eigen_smooth"
                )
            options["eigen_smooth"] = True
        return options

    def _layer(self, layer: nn.Module) -> Layer:
        """A target layer read through :attr:`reshape_transform`."""
        reshape: Reshape = (
            "channels-first" if self.reshape_transform is None else self.reshape_transform
        )
        return Layer(layer, reshape)

    def _multi_layer(self) -> bool:
        """Whether the registry method takes all target layers in one call (its entry declares
        ``multi_layer``): one forward and one backward pass for all layers, combined as
        pytorch-grad-cam combines them (:mod:`gradcam.methods.multi_layer`)."""
        return len(self.target_layers) > 1 and method_spec(self.method).multi_layer

    def _methods(self, eigen_smooth: bool) -> list[Any]:
        """The registry method at each target layer, or one method at all of them
        (:meth:`_multi_layer`); built once per ``eigen_smooth``."""
        eigen_smooth = eigen_smooth and not self.ignores_eigen_smooth
        if eigen_smooth not in self._built:
            options = self.method_options(eigen_smooth)
            if self._multi_layer():
                layers = [self._layer(layer) for layer in self.target_layers]
                self._built[eigen_smooth] = [
                    create_method(self.method, self.model, layers, **options)
                ]
            else:
                self._built[eigen_smooth] = [
                    create_method(self.method, self.model, self._layer(layer), **options)
                    for layer in self.target_layers
                ]
        return self._built[eigen_smooth]

    def _layer_maps(self, x: Tensor, targets: list[Any] | None, eigen_smooth: bool) -> list[Tensor]:
        """Each target layer's (B, h, w) map, rectified (with :meth:`_multi_layer`: one map,
        the layers' mean of scaled maps at input resolution)."""
        maps = []
        for method in self._methods(eigen_smooth):
            result = method(x, targets)
            self.outputs = result.logits
            maps.append(torch.relu(result.raw[:, 0].float()))
        return maps

    def forward(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Any], Any]] | None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The (B, H, W) maps of one pass, scaled to [0, 1] (see the module docstring)."""
        return self._forward(input_tensor, _as_targets(targets), eigen_smooth).cpu().numpy()

    def _forward(self, x: Tensor, targets: list[Any] | None, eigen_smooth: bool) -> Tensor:
        x = x.to(self.device)
        size = (x.shape[-2], x.shape[-1])
        maps = self._layer_maps(x, targets, eigen_smooth)
        if self._multi_layer():
            return scale_maps(maps[0])
        scaled = [scale_maps(m, size) for m in maps]
        return scale_maps(torch.stack(scaled).mean(dim=0))

    def forward_augmentation_smoothing(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Any], Any]] | None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The mean of :meth:`forward` over six test-time augmentations (horizontal flip x
        brightness 0.9, 1, 1.1), each map flipped back; every augmentation resolves
        ``targets=None`` on its own image, as pytorch-grad-cam does."""
        chosen = _as_targets(targets)
        maps = [
            deaugment(
                self._forward(augment(input_tensor, flip, factor), chosen, eigen_smooth), flip
            )
            for flip, factor in AUGMENTATIONS
        ]
        return torch.stack(maps).mean(dim=0).cpu().numpy()

    def __call__(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Any], Any]] | None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Explain ``targets`` (one callable per image, ``None``: each image's top class) for
        the (B, C, H, W) batch ``input_tensor``; returns (B, H, W) float32 maps in [0, 1]."""
        if aug_smooth:
            return self.forward_augmentation_smoothing(input_tensor, targets, eigen_smooth)
        return self.forward(input_tensor, targets, eigen_smooth)

    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(self, *exc: object) -> None:
        # Nothing to release: gradcam's hooks exist only during a call. Exceptions propagate
        # (pytorch-grad-cam prints and swallows an IndexError; a wrong result is worse).
        return None


class MetaCAM(BaseCAM):
    """The base of pytorch-grad-cam's meta-methods (RefineCAM, SESS): one registry method
    whose base method is another class's, returning maps at input resolution that are scaled
    once; called as ``cam(input_tensor, targets=None, eigen_smooth=False)`` (no
    ``aug_smooth``, as pytorch-grad-cam's)."""

    def _forward(self, x: Tensor, targets: list[Any] | None, eigen_smooth: bool) -> Tensor:
        # The registry method's maps are at input resolution already.
        result = self._methods(eigen_smooth)[0](x.to(self.device), targets)
        self.outputs = result.logits
        return scale_maps(result.raw[:, 0].float())

    def __call__(  # type: ignore[override]
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Any], Any]] | None = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The (B, H, W) float32 maps in [0, 1] for ``targets`` (``None``: the top class)."""
        return self.forward(input_tensor, targets, eigen_smooth)
