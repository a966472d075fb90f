"""RefineCAM: a base method's maps at several layers, multiplied.

A meta-method, and the home of what meta-methods share: building the base method by its
registry name (:func:`base_method`) and scaling a base map the way pytorch-grad-cam does before
combining maps (:func:`scaled_maps`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gradcam.engine import check_input
from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike
from gradcam.maps import normalize, upsample
from gradcam.methods.gradcam import LayerMethod
from gradcam.methods.registry import Needs, method_spec, register
from gradcam.methods.results import CAMResult
from gradcam.methods.smoothing import repeated_targets
from gradcam.targets import TargetLike

__all__ = ["RefineCAM", "base_method", "scaled_maps"]


def base_method(
    name: str,
    module: nn.Module,
    layer: LayerLike | None,
    options: Mapping[str, Any] | None,
    meta: str,
) -> Any:
    """Build the base method ``name`` of the meta-method ``meta`` at ``layer``.

    Raises:
        GradCAMError: ``name`` is not a registered heatmap method that explains through a layer,
            is ``meta`` itself, or does not take ``options``.

    Examples:
        >>> base_method("occlusion", model, "features", None, "refine-cam")
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: refine-cam: base must be a heatmap method that explains ...
    """
    if not isinstance(name, str):
        raise GradCAMError(f"{meta}: base must be a method name, got {name!r}")
    spec = method_spec(name)
    if spec.kind != "heatmap" or not spec.needs.layer or spec.name == meta:
        raise GradCAMError(
            f"{meta}: base must be a heatmap method that explains through a layer (gradcam, "
            f"gradcam++, score-cam, ...), not {name!r}"
        )
    if options is not None and not isinstance(options, Mapping):
        raise GradCAMError(
            f"{meta}: base_options must be a mapping of option names, got {options!r}"
        )
    return spec.create(module, layer, **dict(options or {}))


def scaled_maps(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """A base method's (..., h, w) maps as pytorch-grad-cam returns them, which meta-methods
    combine: rectified, min-max scaled to [0, 1] at their own resolution, bilinearly resized to
    ``size``, and scaled again (its ``scale_cam_image``, then its layer aggregation).

    .. math::
        \\hat L = N\\big(\\mathrm{up}\\big(N(\\mathrm{ReLU}(L))\\big)\\big), \\qquad
        N(L) = \\frac{L - \\min L}{\\max L - \\min L}

    (a constant map becomes all zeros). This differs from a result's ``maps``,
    ``N(up(L))``, by a factor near 1 where upsampling smooths a peak below the map's maximum;
    both are 1 at their peak.

    Examples:
        >>> scaled_maps(torch.tensor([[-1.0, 1.0, 3.0]]), (1, 3))
        tensor([[0.0000, 0.3333, 1.0000]])
    """
    return normalize(upsample(normalize(torch.relu(raw.float())), size))


@register(
    "refine-cam",
    title="RefineCAM",
    kind="heatmap",
    needs=Needs(
        layer=True,
        layer_gradients=True,
        forwards="the base method's passes once per layer",
    ),
    citation="pytorch-grad-cam 1.5.7, RefineCAM (arXiv:2605.14641): the product of a base "
    "method's maps over layers",
)
class RefineCAM(LayerMethod):
    """RefineCAM (pytorch-grad-cam's ``RefineCAM``, arXiv:2605.14641): a base method's maps at
    several layers, each scaled to [0, 1], multiplied.

    .. math::
        L^c = N\\Big(\\prod_{l} N\\big(\\mathrm{up}\\big(N(\\mathrm{ReLU}(L^c_l))\\big)\\big)\\Big)

    where ``L^c_l`` is the base method's raw map at layer ``l``, ``N`` min-max scaling and
    ``up`` bilinear resizing to the input (the inner ``N(up(N(ReLU(.))))`` is
    :func:`scaled_maps`). A position stays only where
    every layer sees evidence: an early layer's fine but noisy map is denoised by a later
    layer's coarse one. ``raw`` holds the product at input resolution; ``maps`` its scaled copy.

    The layers are ``layer`` and then ``layers``; the classes are resolved once, on the first
    layer's pass, and every other layer explains the same classes. One call costs the base
    method's passes once per layer.

    Agrees with pytorch-grad-cam 1.5.7's ``RefineCAM(model, [layer, *layers], base_method=B)``
    when the base methods agree: ``base="gradcam"`` with its ``GradCAM``, and
    ``base_options={"eps": 1e-6}`` with its default ``GradCAMPlusPlus``.

    Args:
        module: the model.
        layer: the first layer (module or dotted name); ``None`` picks the last convolutional
            feature-map layer.
        layers: the other layers: a tuple, or dotted names separated by commas
            (``layers=layer2,layer3`` on the command line); none: the base method at ``layer``
            alone, scaled.
        base: the registered heatmap method run at every layer (pytorch-grad-cam's default is
            Grad-CAM++).
        base_options: the base method's options (Python only), e.g. ``{"eps": 1e-6}``.

    Examples:
        >>> refine = gradcam.RefineCAM(
        ...     model, "features", layers=("features.pool3",), base="gradcam"
        ... )
        >>> result = refine(x, gradcam.TopK(2))
        >>> result.raw.shape, result.layer  # at input resolution
        (torch.Size([1, 2, 128, 128]), 'features, features.pool3')
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        layers: str | tuple[LayerLike, ...] = (),
        base: str = "gradcam++",
        base_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(module, layer)
        if isinstance(layers, str):
            # The command line's text: names are split on commas (a name may hold an "x").
            layers = tuple(name.strip() for name in layers.split(",") if name.strip())
        if not isinstance(layers, (tuple, list)):
            raise GradCAMError(f"layers must be a tuple of layer names, got {layers!r}")
        self.layers = tuple(layers)
        self.base = base
        self.bases = [
            base_method(base, module, at, base_options, "refine-cam")
            for at in (layer, *self.layers)
        ]

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> CAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module)
        size = (x.shape[-2], x.shape[-1])
        first = self.bases[0](x, targets)
        refined = scaled_maps(first.raw, size)
        names = [first.layer]
        same = repeated_targets(targets, first.classes, 1)
        for method in self.bases[1:]:
            found = method(x, same)
            refined = refined * scaled_maps(found.raw, size)
            names.append(found.layer)
        return CAMResult(
            raw=refined,
            maps=normalize(refined),
            weights=None,
            scores=first.scores,
            classes=first.classes,
            logits=first.logits,
            layer=", ".join(names),
        )
