"""Grad-CAM (section 3) and its counterfactual variant (section 3.3), at one layer or at a
feature pyramid (:func:`pyramid_cam`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn

from gradcam.engine import Gradients, Level, check_input, spatial_size
from gradcam.errors import GradCAMError, LayerError
from gradcam.layers import LayerLike, ResolvedLayer, find_default_layer, resolve_layer
from gradcam.maps import normalize, upsample
from gradcam.methods.base import GradientMethod, Plan
from gradcam.methods.multi_layer import combine_layers, layers_gradients, resolve_layers
from gradcam.methods.registry import Needs, check_layers, register, several_layers
from gradcam.methods.results import CAMResult
from gradcam.methods.smoothing import SmoothSign, augmentation_smoothing, principal_projection
from gradcam.rectifiers import RULES, Rule
from gradcam.reshapes import finest_size
from gradcam.targets import TargetLike

__all__ = [
    "GradCAM",
    "LayerMethod",
    "LayersLike",
    "Pooling",
    "describe_pyramid",
    "grad_cam_from_gradients",
    "pooled_gradients",
    "pyramid_cam",
    "single_layer",
    "weighted_sum",
]

Pooling = Literal["mean", "max", "abs"]

LayersLike = LayerLike | Sequence[LayerLike]
"""One layer, or a list of layers for the methods whose entry declares ``multi_layer``."""
_POOLINGS = ("mean", "max", "abs")


def pooled_gradients(gradients: Tensor, pooling: Pooling = "mean") -> Tensor:
    """Grad-CAM's channel weights from ``dy^c/dA`` (B, K, C, h, w): (B, K, C).

    .. math::
        \\alpha_k^c = \\frac{1}{Z}\\sum_i\\sum_j \\frac{\\partial y^c}{\\partial A^k_{ij}}

    In every spatial rank the mean runs over all of the layer's positions (eq. 1 in N-D):
    ``(B, K, C, l)`` for a signal, ``(B, K, C, t, h, w)`` for a clip, ``Z`` their number.
    ``pooling="max"`` takes the global max instead of the mean and ``"abs"`` the mean of
    absolute gradients (appendix B ablations).

    Examples:
        >>> pooled_gradients(torch.tensor([[[[[1.0, 3.0]]]]]), "max")
        tensor([[[3.]]])
        >>> pooled_gradients(torch.tensor([[[[1.0, 3.0]]]]))  # a signal's (B, K, C, l)
        tensor([[[2.]]])
    """
    if pooling not in _POOLINGS:
        raise GradCAMError(f"pooling must be one of {', '.join(_POOLINGS)}; got {pooling!r}")
    axes = tuple(range(3, gradients.dim()))
    if pooling == "mean":
        return gradients.mean(dim=axes)
    if pooling == "max":
        return gradients.amax(dim=axes)
    return gradients.abs().mean(dim=axes)


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """``sum_k w_k^c A^k`` (B, K, h, w) for channel weights (B, K, C) or element-wise weights
    (B, K, C, h, w), with ``A`` (B, C, h, w); in any spatial rank, (B, K, *s) from
    ``A`` (B, C, *s).

    Examples:
        >>> weighted_sum(torch.tensor([[[2.0, -1.0]]]), torch.ones(1, 2, 1, 1))
        tensor([[[[1.]]]])
    """
    if weights.dim() == 3:
        return torch.einsum("bkc,bc...->bk...", weights, activations)
    return (weights * activations.unsqueeze(1)).sum(dim=2)


def grad_cam_from_gradients(
    activations: Tensor,
    gradients: Tensor,
    *,
    counterfactual: bool = False,
    pooling: Pooling = "mean",
    relu: bool = True,
) -> tuple[Tensor, Tensor]:
    """Grad-CAM weights and maps from a layer's activations and gradients, in float32.

    .. math::
        \\alpha_k^c = \\frac{1}{Z}\\sum_i\\sum_j \\frac{\\partial y^c}{\\partial A^k_{ij}}
        \\qquad L^c = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big)

    Counterfactual (eq. 12) negates the gradients; ``pooling`` and ``relu=False`` give the
    ablations of appendix B.

    Args:
        activations: ``A``, (B, C, h, w).
        gradients: ``dy^c/dA``, (B, K, C, h, w).

    Returns:
        ``(raw, weights)``: (B, K, h, w) maps and (B, K, C) weights ``alpha``.

    Examples:
        >>> A = torch.ones(1, 1, 2, 2); G = torch.full((1, 1, 1, 2, 2), 0.5)
        >>> grad_cam_from_gradients(A, G)[0]
        tensor([[[[0.5000, 0.5000],
                  [0.5000, 0.5000]]]])
    """
    grads = gradients.float()
    weights = pooled_gradients(-grads if counterfactual else grads, pooling)
    cam = weighted_sum(weights, activations.float())
    return (torch.relu(cam) if relu else cam), weights


def pyramid_cam(weights: Sequence[Tensor], activations: Sequence[Tensor]) -> Tensor:
    """The weighted maps of a feature pyramid's levels, summed at the finest level's size,
    before the ReLU: (B, K, h_0, w_0).

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_l \\mathrm{up}_0
        \\Big(\\sum_k \\alpha_k^{c,l} A_l^k\\Big)\\Big),
        \\qquad \\alpha_k^{c,l} = \\frac{1}{Z_l}\\sum_i\\sum_j
        \\frac{\\partial y^c}{\\partial A^k_{l,ij}}

    A layer whose output is a pyramid (torchvision's FPN: levels ``'0'`` to ``'3'`` and
    ``'pool'``, each (B, 256, h_l, w_l)) feeds the score through every level, so each level
    ``l`` is treated as Grad-CAM treats one layer: its weights come from its own gradient
    (eq. 1 per level; a variant's :meth:`GradCAM.weights` per level) and give its own map
    ``sum_k alpha_k^{c,l} A_l^k``. The levels' maps are upsampled bilinearly
    (``up_0``, ``align_corners=False``) to the finest level's size and summed *before* the
    ReLU: to first order a change of ``y^c`` is the sum of each level's contribution, and a
    level's negative evidence must be able to cancel another's positive evidence.

    Why not resample first, as pytorch-grad-cam's detection tutorial does (it resizes every
    level to one size and concatenates them, which it can use only with gradient-free
    Eigen-CAM)? The gradient of a resized level is not the resized gradient, so Grad-CAM's
    weights would no longer be the paper's. Since upsampling is linear and the weights are
    per channel, the sum above *is* Grad-CAM on the levels upsampled and concatenated
    (:func:`~gradcam.reshapes.concat_levels`) with each level's channels keeping their own
    ``alpha``: the result's ``weights`` are the levels' ``alpha`` concatenated in that order.

    Args:
        weights: per level, (B, K, C_l) channel weights or (B, K, C_l, h_l, w_l) element
            weights.
        activations: per level, ``A_l`` (B, C_l, h_l, w_l).

    Examples:
        Two levels of one channel: 2x2 maps weighted by 1, and a 1x1 map weighted by -2.

        >>> fine, coarse = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.ones(1, 1, 1, 1)
        >>> pyramid_cam([torch.ones(1, 1, 1), torch.full((1, 1, 1), -2.0)], [fine, coarse])
        tensor([[[[-1.,  0.],
                  [ 1.,  2.]]]])
    """
    levels = list(zip(weights, activations, strict=True))
    size = finest_size(a for _, a in levels)
    total: Tensor | None = None
    for w, a in levels:
        cam = upsample(weighted_sum(w, a.float()), size)
        total = cam if total is None else total + cam
    if total is None:
        raise LayerError("a feature pyramid needs at least one level")
    return total


def describe_pyramid(name: str, levels: Sequence[tuple[str, Tensor]]) -> str:
    """The text a pyramid layer is reported as in results' ``layer``: its name, then each
    level's key and ``C x h x w``.

    Examples:
        >>> describe_pyramid("backbone", [("0", torch.zeros(1, 8, 4, 4)),
        ...                               ("pool", torch.zeros(1, 8, 1, 1))])
        'backbone (pyramid: 0 8x4x4, pool 8x1x1)'
    """
    parts = ", ".join(f"{key} {'x'.join(str(n) for n in maps.shape[1:])}" for key, maps in levels)
    return f"{name} (pyramid: {parts})"


def single_layer(grads: Gradients, layer: str, method: str) -> None:
    """Raise a :class:`LayerError` when ``grads`` come from a feature pyramid, which
    ``method`` cannot take (it needs one (B, C, h, w) map); names the alternatives.

    Examples:
        >>> g = Gradients(torch.zeros(1, 1), torch.zeros(1, 1), None)
        >>> single_layer(g, "features", "Eigen-Grad-CAM")  # one layer: nothing to say
    """
    if grads.levels:
        shown = describe_pyramid(layer, [(lv.name, lv.activations) for lv in grads.levels])
        raise LayerError(
            f"{method} needs one (B, C, h, w) map, and layer {shown} is a feature pyramid: use "
            "Grad-CAM or a Grad-CAM variant on the pyramid, or one level's module for "
            f"{method}"
        )


class LayerMethod:
    """Base of the methods that explain through a layer ``A``: holds and finds the layer.

    ``layer`` is a submodule, a dotted name or a :class:`~gradcam.layers.Layer` (with a
    reshape); ``None`` picks the default layer for each input shape (see :mod:`gradcam.layers`).
    A list of layers is for the methods whose registry entry declares ``multi_layer``
    (:attr:`multi_layers`); the others refuse it.
    """

    _MAX_SHAPES = 32  # default layers remembered, one per input shape

    def __init__(self, module: nn.Module, layer: LayersLike | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise GradCAMError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.multi_layers: tuple[ResolvedLayer, ...] = ()
        """The layers of a call through several layers (``layer`` a list of two or more, for
        the methods whose entry declares ``multi_layer``); ``()`` for one layer."""
        one = cast("LayerLike | None", layer)
        if several_layers(layer):
            check_layers(type(self), layer)
            if len(layer) == 1:
                one = layer[0]
            else:
                self.multi_layers = resolve_layers(module, layer)
                one = self.multi_layers[0]
        self._layer = None if one is None else resolve_layer(module, one)
        self._defaults: dict[tuple[int, ...], ResolvedLayer] = {}

    def layer_for(self, x: Tensor) -> ResolvedLayer:
        """The layer ``A`` for the batch ``x``: the one given, or the default for ``x``'s
        image shape (C, H, W), found with one probe pass the first time that shape is seen."""
        if self._layer is not None:
            return self._layer
        shape = tuple(x.shape[1:])
        found = self._defaults.get(shape)
        if found is None:
            found = resolve_layer(self.module, find_default_layer(self.module, x[:1]))
            if len(self._defaults) >= self._MAX_SHAPES:
                self._defaults.clear()
            self._defaults[shape] = found
        return found


@register(
    "counterfactual",
    title="Counterfactual",
    kind="heatmap",
    needs=Needs(layer=True, layer_gradients=True),
    citation="Selvaraju et al. 2017, section 3.3",
    presets={"counterfactual": True},
    ranks=(1, 2, 3),
    multi_layer=True,
)
@register(
    "gradcam",
    title="Grad-CAM",
    kind="heatmap",
    needs=Needs(layer=True, layer_gradients=True),
    citation="Selvaraju et al. 2017, section 3",
    ranks=(1, 2, 3),
    multi_layer=True,
)
class GradCAM(LayerMethod, GradientMethod):
    """Gradient-weighted Class Activation Mapping (Selvaraju et al., section 3).

    Weights each feature map ``A^k`` of a layer by the global-average-pooled gradient of the
    target score ``y^c`` and keeps the positive part of the weighted sum:
    ``L^c = ReLU(sum_k alpha_k^c A^k)``, ``alpha_k^c = 1/Z sum_ij dy^c/dA^k_ij``.

    One call costs one forward pass and one batched backward pass to the layer, whatever the
    number of targets. The model is not modified: hooks exist only during the call, the model
    runs in eval mode and its flags are restored, parameter gradients stay untouched, and the
    input tensor is not modified.

    Variants (Grad-CAM++, XGrad-CAM, HiResCAM, ...) subclass this class and override
    :meth:`weights` only, as torchcam does.

    Signals (B, C, L) and volumes or clips (B, C, D, H, W) are explained with the same formula
    (registry ``ranks=(1, 2, 3)``, and so for every variant): ``Z`` counts every position of
    the layer, ``raw`` is (B, K, *the layer's spatial size) and ``maps`` is upsampled linearly
    or trilinearly (see the page "Signals, volumes and video").

    Args:
        module: the model.
        layer: the layer ``A``, as a submodule or a dotted name; ``None`` picks the last
            convolutional feature-map layer (see :mod:`gradcam.layers`) on the first call.
        counterfactual: negate the gradients (section 3.3): regions whose removal would make
            the model more confident of the class.
        pooling: ``"mean"`` (the paper), ``"max"`` or ``"abs"`` (appendix B ablations).
        relu: apply the final ReLU (``False`` is the appendix B ablation).
        gradient_rule: backward rule at rectifiers between ``A`` and the score: ``"plain"``
            (the paper), ``"guided"`` or ``"deconv"`` (appendix B, section 2.3 ablations).
        eigen_smooth: replace ``sum_k w_k A^k`` by the projection of the weighted maps
            ``w_k A^k`` on their first principal component (pytorch-grad-cam's eigen_smooth).
        aug_smooth: average the maps of six test-time augmentations (horizontal flip x
            brightness 0.9, 1, 1.1; pytorch-grad-cam's aug_smooth): runs twice, on the input
            then on its five augmented copies.
        smooth_sign: the sign of ``eigen_smooth``'s projection: ``"agreement"`` (it
            correlates non-negatively with the unsmoothed map) or ``"lapack"`` (numpy's SVD's,
            as pytorch-grad-cam).

    Examples:
        >>> import gradcam
        >>> from gradcam.synthetic import make_scene
        >>> shapes = gradcam.load_model("shapes")  # gradcam.load_model(): EfficientNet-Lite0
        >>> scene = make_scene(0, shapes=["star"])
        >>> x = shapes.preprocess(scene.image)  # (1, 3, 128, 128)
        >>> cam = gradcam.GradCAM(shapes.module, shapes.default_layer)
        >>> result = cam(x, gradcam.TopK(3))
        >>> result.maps.shape  # (B, K, H, W), values in [0, 1]
        torch.Size([1, 3, 128, 128])
        >>> [shapes.class_names[c] for c in result.classes[0]]
        ['star', 'cross', 'crescent']
        >>> gradcam.peak(result.maps[0, 0]), scene.objects[0].box  # the peak is on the star
        ((99, 28), (71, 8, 102, 39))
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayersLike | None = None,
        *,
        counterfactual: bool = False,
        pooling: Pooling = "mean",
        relu: bool = True,
        gradient_rule: Rule = "plain",
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        smooth_sign: SmoothSign = "agreement",
    ) -> None:
        if smooth_sign not in ("agreement", "lapack"):
            raise GradCAMError(f"smooth_sign must be agreement or lapack, got {smooth_sign!r}")
        for name, flag in (("eigen_smooth", eigen_smooth), ("aug_smooth", aug_smooth)):
            if not isinstance(flag, bool):
                raise GradCAMError(f"{name} must be true or false, got {flag!r}")
        if pooling not in _POOLINGS:
            raise GradCAMError(f"pooling must be one of {', '.join(_POOLINGS)}; got {pooling!r}")
        if gradient_rule not in RULES:
            raise GradCAMError(f"gradient_rule must be one of {', '.join(RULES)}")
        super().__init__(module, layer)
        self.counterfactual = counterfactual
        self.pooling: Pooling = pooling
        self.relu = relu
        self.gradient_rule: Rule = gradient_rule
        self.eigen_smooth = eigen_smooth
        self.aug_smooth = aug_smooth
        self.smooth_sign: SmoothSign = smooth_sign

    @property
    def shares_pass(self) -> bool:
        """With ``aug_smooth`` the method runs on augmented copies, and with several layers it
        hooks them all: it needs passes of its own."""
        return not self.aug_smooth and not self.multi_layers

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """The weights of the feature maps: (B, K, C) per channel, or (B, K, C, h, w) per
        element, from ``A`` (B, C, h, w) and ``dy^c/dA`` (B, K, C, h, w), both float32.

        Grad-CAM's ``alpha_k^c`` is the spatial mean of the gradient (eq. 1).
        """
        return pooled_gradients(gradients, self.pooling)

    def plan(self, x: Tensor) -> Plan:
        """One backward pass to the layer, under :attr:`gradient_rule`."""
        return Plan(layer=self.layer_for(x), layer_rule=self.gradient_rule)

    def from_gradients(
        self, grads: Gradients, plan: Plan, input_size: tuple[int, ...]
    ) -> CAMResult:
        """``ReLU(sum_k w_k A^k)`` with :meth:`weights`, upsampled and normalized."""
        if grads.levels and plan.layer is not None:
            return self._pyramid_result(grads.levels, grads, plan.layer[1], input_size)
        if grads.activations is None or grads.gradients is None or plan.layer is None:
            raise ValueError("Grad-CAM needs gradients computed at a layer")
        activations = grads.activations.float()
        gradients = grads.gradients.float()
        if self.counterfactual:
            gradients = -gradients
        weights = self.weights(activations, gradients)
        return self._result(weights, activations, grads, plan.layer[1], input_size)

    def _pyramid_result(
        self,
        levels: Sequence[Level],
        grads: Gradients,
        layer: str,
        input_size: tuple[int, ...],
    ) -> CAMResult:
        """:func:`pyramid_cam` with :meth:`weights` taken per level, rectified, as a result."""
        if self.eigen_smooth:
            raise LayerError(
                f"eigen_smooth projects one layer's maps, and layer {layer!r} is a feature "
                "pyramid: leave eigen_smooth off, or choose one level's module"
            )
        weights: list[Tensor] = []
        activations: list[Tensor] = []
        for level in levels:
            a = level.activations.float()
            g = level.gradients.float()
            weights.append(self.weights(a, -g if self.counterfactual else g))
            activations.append(a)
        raw = pyramid_cam(weights, activations)
        if self.relu:
            raw = torch.relu(raw)
        per_channel = all(w.dim() == 3 for w in weights)
        return CAMResult(
            raw=raw,
            maps=normalize(upsample(raw, input_size), len(input_size)),
            weights=torch.cat(weights, dim=2) if per_channel else None,
            scores=grads.scores.float(),
            classes=grads.classes,
            logits=None if grads.logits is None else grads.logits.float(),
            layer=describe_pyramid(layer, [(lv.name, lv.activations) for lv in levels]),
        )

    def _result(
        self,
        weights: Tensor,
        activations: Tensor,
        grads: Gradients,
        layer: str,
        input_size: tuple[int, ...],
    ) -> CAMResult:
        """The map ``sum_k w_k A^k`` (or its principal projection), rectified, as a result."""
        rank = len(input_size)
        if self.eigen_smooth:
            expanded = weights if weights.dim() > 3 else weights[(...,) + (None,) * rank]
            raw = principal_projection(expanded * activations.unsqueeze(1), rank, self.smooth_sign)
        else:
            raw = weighted_sum(weights, activations)
        if self.relu:
            raw = torch.relu(raw)
        return CAMResult(
            raw=raw,
            maps=normalize(upsample(raw, input_size), rank),
            weights=weights if weights.dim() == 3 else None,
            scores=grads.scores.float(),
            classes=grads.classes,
            logits=None if grads.logits is None else grads.logits.float(),
            layer=layer,
        )

    def _explain(self, x: Tensor, targets: TargetLike | None) -> CAMResult:
        """One explanation of ``x``, without test-time augmentation: one engine pass."""
        if self.multi_layers:
            return self._explain_layers(check_input(x, self.module), targets)
        result = GradientMethod.__call__(self, x, targets)
        assert isinstance(result, CAMResult)
        return result

    def _explain_layers(self, x: Tensor, targets: TargetLike | None) -> CAMResult:
        """Through :attr:`multi_layers`: one forward and one batched backward pass, each layer's map
        by :meth:`from_gradients`, combined by
        :func:`~gradcam.methods.multi_layer.combine_layers` (``raw`` is then at input
        resolution, ``weights`` is ``None``)."""
        input_size = spatial_size(x)
        found = layers_gradients(
            self.module, x, targets, self.multi_layers, layer_rule=self.gradient_rule
        )
        raws = []
        for layer, grads in zip(self.multi_layers, found, strict=True):
            result = self.from_gradients(grads, Plan(layer=layer), input_size)
            assert isinstance(result, CAMResult)
            raws.append(result.raw)
        raw = combine_layers(raws, input_size)
        first = found[0]
        return CAMResult(
            raw=raw,
            maps=normalize(raw, len(input_size)),
            weights=None,
            scores=first.scores.float(),
            classes=first.classes,
            logits=None if first.logits is None else first.logits.float(),
            layer=" + ".join(layer.name for layer in self.multi_layers),
        )

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> CAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        if self.aug_smooth:
            return augmentation_smoothing(self._explain, check_input(x, self.module), targets)
        return self._explain(x, targets)
