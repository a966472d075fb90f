"""Grad-CAM's gradient variants: each changes only how the feature maps ``A^k`` are weighted.

Every class here is a :class:`~gradcam.methods.gradcam.GradCAM` that overrides
:meth:`~gradcam.methods.gradcam.GradCAM.weights`; the map is then, as for Grad-CAM,
``L^c = ReLU(sum_k w_k^c A^k)`` with channel weights ``w_k^c`` (B, K, C) or element-wise
weights ``w_k^c(i, j)`` (B, K, C, h, w), upsampled and normalized. One call costs one forward
and one batched backward pass to the layer for all targets, and shares that pass with the other
gradient methods of a request (:func:`~gradcam.methods.planner.explain_methods`), except
Smooth Grad-CAM++ (noisy copies) and any method with ``aug_smooth`` (augmented copies), which
need passes of their own. Each explains signals and volumes or clips too (registry
``ranks=(1, 2, 3)``): the sums over ``i, j`` below run over every position of the layer.

Where the two reference implementations (pytorch-grad-cam 1.5.7, torchcam 0.5.0) differ, the
paper's formula is used; each docstring says how each library relates to it.

Notation: ``g_ij = dy^c/dA^k_ij`` the gradient of the target score, ``S_k = sum_ab A^k_ab``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gradcam.engine import Gradients, check_input, compute_gradients, spatial_size
from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike
from gradcam.methods.base import Plan
from gradcam.methods.gradcam import GradCAM, LayersLike, single_layer
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import CAMResult
from gradcam.methods.smoothing import SmoothSign, repeated_targets
from gradcam.rectifiers import Rule
from gradcam.targets import TargetLike

__all__ = [
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "plusplus_weights",
]

_LAYER_GRADIENTS = Needs(layer=True, layer_gradients=True)


def plusplus_weights(
    activations: Tensor, d1: Tensor, d2: Tensor, d3: Tensor, eps: float = 0.0
) -> Tensor:
    """Grad-CAM++'s channel weights from ``A`` and the first three derivatives of the score.

    .. math::
        \\alpha^{kc}_{ij} = \\frac{D^2_{ij}}{2 D^2_{ij} + S_k D^3_{ij} + \\epsilon}
        \\qquad w^c_k = \\sum_{ij} \\alpha^{kc}_{ij}\\, \\mathrm{ReLU}(D^1_{ij})

    with ``alpha = 0`` where ``D^1 <= 0`` (it is multiplied by ``ReLU(D^1)``) or where the
    denominator is 0. For Grad-CAM++, ``D^p = g^p`` (Chattopadhay et al. 2018, eq. 19 for an
    exponential of the score, which is how the paper turns higher derivatives into powers of
    the gradient); for Smooth Grad-CAM++ they are means over noisy copies. With ``eps = 0``
    and ``D^p = g^p``, ``alpha = 1 / (2 + S_k g_ij)``.

    Args:
        activations: ``A``, (B, C, h, w).
        d1: (B, K, C, h, w) the first derivative ``g``.
        d2: (B, K, C, h, w) the second derivative (``g^2``).
        d3: (B, K, C, h, w) the third derivative (``g^3``).
        eps: added to the denominator (0 in the paper).

    Returns:
        (B, K, C) the weights ``w_k^c``.

    Examples:
        >>> A = torch.ones(1, 1, 1, 2)  # S = 2
        >>> g = torch.tensor([[[[[1.0, -1.0]]]]])
        >>> plusplus_weights(A, g, g**2, g**3)  # 1 / (2 + 2 * 1) * ReLU(1) + 0
        tensor([[[0.2500]]])
    """
    axes = tuple(range(2, activations.dim()))  # every position, in any spatial rank
    total = activations.sum(dim=axes)[(slice(None), None, slice(None)) + (None,) * len(axes)]
    denominator = 2 * d2 + total * d3 + eps
    usable = (d1 > 0) & (denominator != 0)
    alpha = torch.where(usable, d2 / torch.where(usable, denominator, 1.0), 0.0)
    return (alpha * torch.relu(d1)).sum(dim=tuple(range(3, d1.dim())))


class _Variant(GradCAM):
    """Grad-CAM's options less ``pooling``, which only Grad-CAM's own weights use."""

    def __init__(
        self,
        module: nn.Module,
        layer: LayersLike | None = None,
        *,
        counterfactual: bool = False,
        relu: bool = True,
        gradient_rule: Rule = "plain",
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        smooth_sign: SmoothSign = "agreement",
    ) -> None:
        super().__init__(
            module,
            layer,
            counterfactual=counterfactual,
            relu=relu,
            gradient_rule=gradient_rule,
            eigen_smooth=eigen_smooth,
            aug_smooth=aug_smooth,
            smooth_sign=smooth_sign,
        )


@register(
    "hirescam",
    title="HiResCAM",
    kind="heatmap",
    needs=_LAYER_GRADIENTS,
    citation="Draelos and Carin 2020, arXiv:2011.08891",
    ranks=(1, 2, 3),
    multi_layer=True,
)
class HiResCAM(_Variant):
    """HiResCAM (Draelos and Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks", arXiv:2011.08891).

    Multiplies the gradient and the feature maps element by element instead of averaging the
    gradient first: ``L^c = ReLU(sum_k g^k ⊙ A^k)``. For a model whose layer ``A`` is followed
    by a flatten and a linear layer, the sum over positions of the unrectified map is exactly
    the score (less the bias), so the map shows where the score comes from.

    Agrees with pytorch-grad-cam's ``HiResCAM``. As pytorch-grad-cam warns, ``eigen_smooth``
    gives up that faithfulness.

    Args: as :class:`~gradcam.GradCAM` (the options are inherited).

    Examples:
        >>> result = gradcam.HiResCAM(model, "features")(x, gradcam.TopK(2))
        >>> result.raw.shape, result.weights  # (B, K, h, w); None: element-wise weights
        (torch.Size([1, 2, 16, 16]), None)
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """The gradient itself, element by element: (B, K, C, h, w)."""
        return gradients


@register(
    "gradcam-elementwise",
    title="Grad-CAM element-wise",
    kind="heatmap",
    needs=_LAYER_GRADIENTS,
    citation="Gildenblat et al., pytorch-grad-cam (2021), GradCAMElementWise",
    ranks=(1, 2, 3),
    multi_layer=True,
)
class GradCAMElementWise(_Variant):
    """Element-wise Grad-CAM, as pytorch-grad-cam defines it (Gildenblat et al. 2021, the
    ``GradCAMElementWise`` method: "like Grad-CAM but element-wise multiply the activations with
    the gradients, then apply a ReLU before summing"; no paper of its own).

    ``L^c = ReLU(sum_k ReLU(g^k ⊙ A^k))``: HiResCAM (Draelos and Carin 2020) with each
    channel's product rectified before the sum, so negative evidence of one channel cannot
    cancel positive evidence of another. The element-wise weight is ``g [g A > 0]``, so that
    ``w A = ReLU(g A)`` exactly.

    Agrees with pytorch-grad-cam's ``GradCAMElementWise``.

    Args:
        module: the model.
        layer: the layer ``A`` (module or dotted name); ``None`` picks the last convolutional
            feature-map layer on the first call.
        counterfactual: negate the gradients (explain ``-y^c``).
        relu: apply the final ReLU (the sum of rectified products is already non-negative).
        gradient_rule: backward rule at rectifiers between ``A`` and the score: ``"plain"``,
            ``"guided"`` or ``"deconv"``.
        eigen_smooth: replace ``sum_k w_k A^k`` by the projection of the weighted maps
            ``w_k A^k`` on their first principal component (pytorch-grad-cam's eigen_smooth).
        aug_smooth: average the maps of six test-time augmentations (horizontal flip x
            brightness 0.9, 1, 1.1; pytorch-grad-cam's aug_smooth): runs twice, on the input
            then on its five augmented copies.

    Examples:
        >>> result = gradcam.GradCAMElementWise(model, "features")(x, [3])
        >>> result.raw.shape, result.weights  # (B, K, h, w); None: element-wise weights
        (torch.Size([1, 1, 16, 16]), None)
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """``g`` where ``g A > 0``, else 0: (B, K, C, h, w)."""
        positive = gradients * activations.unsqueeze(1) > 0
        return torch.where(positive, gradients, 0.0)


@register(
    "gradcam++",
    title="Grad-CAM++",
    kind="heatmap",
    needs=_LAYER_GRADIENTS,
    citation="Chattopadhay et al. 2018, arXiv:1710.11063",
    ranks=(1, 2, 3),
    multi_layer=True,
)
class GradCAMPlusPlus(_Variant):
    """Grad-CAM++ (Chattopadhay, Sarkar, Howlader and Balasubramanian 2018, "Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional Networks", WACV;
    arXiv:1710.11063).

    Weights the positive gradients by pixel-wise coefficients, so that several instances of a
    class all count, rather than the plain mean:

    .. math::
        w^c_k = \\sum_{ij} \\alpha^{kc}_{ij}\\, \\mathrm{ReLU}(g_{ij}), \\qquad
        \\alpha^{kc}_{ij} = \\frac{g_{ij}^2}{2 g_{ij}^2 + S_k\\, g_{ij}^3}
        = \\frac{1}{2 + S_k\\, g_{ij}}

    (the closed form of the paper's eq. 19; see :func:`plusplus_weights`), and
    ``L^c = ReLU(sum_k w_k^c A^k)``.

    The references differ from the paper and from each other:

    * pytorch-grad-cam adds ``1e-6`` to the denominator. As gradients at the last layer are
      often of order 1e-4 (``g^2`` ~ 1e-8), that constant is far from negligible there; this
      class agrees with it exactly with ``eps=1e-6``.
    * torchcam 0.5.0's ``GradCAMpp`` divides a boolean-masked copy of ``g^2`` in place, which
      leaves ``g^2`` itself undivided: its weights are ``sum_ij g^2 ReLU(g)``, not Grad-CAM++'s
      (its intended denominator, ``2 g^2_ij + sum_ab A_ab g^3_ab``, also differs from the
      paper's where the gradient varies over positions).

    It takes the options of :class:`~gradcam.GradCAM`, and:

    Args:
        eps: added to the denominator of ``alpha``: 0 is the paper, 1e-6 is pytorch-grad-cam.

    Examples:
        >>> result = gradcam.GradCAMPlusPlus(model, "features")(x, gradcam.TopK(3))
        >>> result.weights.shape  # (B, K, C)
        torch.Size([1, 3, 128])
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayersLike | None = None,
        *,
        counterfactual: bool = False,
        relu: bool = True,
        gradient_rule: Rule = "plain",
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        eps: float = 0.0,
        smooth_sign: SmoothSign = "agreement",
    ) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
            raise GradCAMError(f"eps must be a non-negative number, got {eps!r}")
        super().__init__(
            module,
            layer,
            counterfactual=counterfactual,
            relu=relu,
            gradient_rule=gradient_rule,
            eigen_smooth=eigen_smooth,
            aug_smooth=aug_smooth,
            smooth_sign=smooth_sign,
        )
        self.eps = float(eps)

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """``sum_ij alpha_ij ReLU(g_ij)``: (B, K, C)."""
        squared = gradients * gradients
        return plusplus_weights(activations, gradients, squared, squared * gradients, self.eps)


@register(
    "smooth-gradcam++",
    title="Smooth Grad-CAM++",
    kind="heatmap",
    needs=Needs(
        layer=True,
        layer_gradients=True,
        forwards="num_samples noisy passes (forward and backward to the layer), in batches",
        many_passes=True,
    ),
    citation="Omeiza et al. 2019, arXiv:1908.01224",
    ranks=(1, 2, 3),
)
class SmoothGradCAMPlusPlus(GradCAMPlusPlus):
    """Smooth Grad-CAM++ (Omeiza, Speakman, Cintas and Weldemariam 2019, "Smooth Grad-CAM++: An
    Enhanced Inference Level Visualization Technique for Deep Convolutional Neural Network
    Models", arXiv:1908.01224).

    Grad-CAM++ with the derivatives averaged over ``n = num_samples`` noisy copies
    ``x + N(0, std^2)`` of the input (SmoothGrad's noise), for the classes resolved on ``x``:

    .. math::
        D^p = \\frac{1}{n}\\sum_{m=1}^n g_m^p, \\qquad
        \\alpha^{kc}_{ij} = \\frac{D^2_{ij}}{2 D^2_{ij} + S_k D^3_{ij}}, \\qquad
        w^c_k = \\sum_{ij} \\alpha^{kc}_{ij}\\, \\mathrm{ReLU}(D^1_{ij})

    with ``S_k`` and the map ``ReLU(sum_k w_k^c A^k)`` taken on the clean input ``x`` (the
    image explained). As in torchcam, the numerator of ``alpha`` is ``D^2`` (the paper prints
    ``D^1``, which does not reduce to Grad-CAM++ for ``n = 1`` and no noise).

    torchcam 0.5.0's ``SmoothGradCAMpp`` draws the same noise (``torch.manual_seed(seed)``
    there equals ``seed`` here) and the same averages ``D^p``, with ``eps=1e-8``, but:

    * its denominator is ``2 D^2_ij + sum_ab A_ab D^3_ab`` rather than the paper's
      ``2 D^2_ij + S_k D^3_ij``;
    * it takes ``ReLU`` of the *last* noisy copy's gradient instead of ``D^1``;
    * it builds the map on the last noisy copy's activations instead of the input's.

    Its weights therefore equal these (with ``eps=1e-8``) when the gradient at the layer is
    the same at every position and for every input, as at a layer followed by global average
    pooling and a linear head (ResNet-50's ``layer4``, EfficientNet-Lite0's ``_head_act``).

    The noise is drawn on the CPU from a generator seeded with ``seed`` (the same noise on
    every device), one (B, C, H, W) draw per sample; the noisy copies run ``batch_size``
    samples per pass. This method cannot share a pass with other methods.

    It takes the options of :class:`~gradcam.GradCAM`, and:

    Args:
        eps: added to the denominator of ``alpha`` (0 in the paper, 1e-8 in torchcam).
        num_samples: noisy copies of the input (torchcam's default 4).
        std: standard deviation of the Gaussian noise, in the model's input space.
        seed: seed of the noise; ``None`` draws from torch's global generator.
        batch_size: noisy copies of the batch per pass; ``None`` runs up to 8 per pass.

    Examples:
        >>> smooth = gradcam.SmoothGradCAMPlusPlus(model, "features", num_samples=8, std=0.2)
        >>> result = smooth(x, [3])
        >>> result.raw.shape, result.weights.shape  # (B, K, h, w), (B, K, C)
        (torch.Size([1, 1, 16, 16]), torch.Size([1, 1, 128]))
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        counterfactual: bool = False,
        relu: bool = True,
        gradient_rule: Rule = "plain",
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        eps: float = 0.0,
        num_samples: int = 4,
        std: float = 0.3,
        seed: int | None = 0,
        batch_size: int | None = None,
    ) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise GradCAMError(f"num_samples must be a positive integer, got {num_samples!r}")
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 <= std < math.inf:
            raise GradCAMError(f"std must be a non-negative number, got {std!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise GradCAMError(f"seed must be an integer or None, got {seed!r}")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise GradCAMError(f"batch_size must be a positive integer, got {batch_size!r}")
        super().__init__(
            module,
            layer,
            counterfactual=counterfactual,
            relu=relu,
            gradient_rule=gradient_rule,
            eigen_smooth=eigen_smooth,
            aug_smooth=aug_smooth,
            eps=eps,
        )
        self.num_samples = num_samples
        self.std = float(std)
        self.seed = seed
        self.batch_size = batch_size

    @property
    def shares_pass(self) -> bool:
        """Never: the noisy copies need passes of their own."""
        return False

    def from_gradients(
        self, grads: Gradients, plan: Plan, input_size: tuple[int, ...]
    ) -> CAMResult:
        """Not available: one pass on the clean input does not give this method's result."""
        raise ValueError("Smooth Grad-CAM++ needs noisy passes of its own: call the method")

    def _noise(self, x: Tensor) -> list[Tensor]:
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        shape = tuple(x.shape)
        return [
            torch.normal(0.0, self.std, shape, generator=generator).to(x.device, x.dtype)
            for _ in range(self.num_samples)
        ]

    def _explain(self, x: Tensor, targets: TargetLike | None) -> CAMResult:
        """The clean pass (activations, classes), then the noisy passes (derivatives)."""
        x = check_input(x, self.module)
        plan = self.plan(x)
        clean = compute_gradients(
            self.module, x, targets, layer=plan.layer, layer_rule=plan.layer_rule
        )
        if plan.layer is not None:
            single_layer(clean, plan.layer[1], "Smooth Grad-CAM++")
        if clean.activations is None or plan.layer is None:
            raise ValueError("Smooth Grad-CAM++ needs activations at a layer")
        activations = clean.activations.float()
        noise = self._noise(x)
        per_pass = self.batch_size or 8
        moments: list[Tensor] = []
        for start in range(0, len(noise), per_pass):
            chunk = noise[start : start + per_pass]
            noisy = torch.cat([x + n for n in chunk])
            found = compute_gradients(
                self.module,
                noisy,
                repeated_targets(targets, clean.classes, len(chunk)),
                layer=plan.layer,
                layer_rule=plan.layer_rule,
            )
            assert found.gradients is not None
            g = found.gradients.float().reshape(len(chunk), x.shape[0], *found.gradients.shape[1:])
            if self.counterfactual:
                g = -g
            sums = torch.stack([g.sum(dim=0), (g * g).sum(dim=0), (g * g * g).sum(dim=0)])
            moments.append(sums)
        d1, d2, d3 = torch.stack(moments).sum(dim=0) / self.num_samples
        weights = plusplus_weights(activations, d1, d2, d3, self.eps)
        return self._result(weights, activations, clean, plan.layer[1], spatial_size(x))


@register(
    "xgradcam",
    title="XGrad-CAM",
    kind="heatmap",
    needs=_LAYER_GRADIENTS,
    citation="Fu et al. 2020, arXiv:2008.02312",
    ranks=(1, 2, 3),
    multi_layer=True,
)
class XGradCAM(_Variant):
    """XGrad-CAM (Fu, Hu, Dong, Guo, Gao and Wang 2020, "Axiom-based Grad-CAM: Towards Accurate
    Visualization and Explanation of CNNs", BMVC; arXiv:2008.02312).

    Weights each gradient by the share of its position in the channel's total activation, the
    weights the paper derives from its sensitivity and conservation axioms:

    .. math::
        w^c_k = \\sum_{ij} \\frac{A^k_{ij}}{S_k}\\, g_{ij}, \\qquad
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w^c_k A^k\\Big)

    with ``w_k = 0`` for a channel whose activations sum to 0. pytorch-grad-cam adds ``1e-7``
    and torchcam ``1e-8`` to ``S_k``; as ``S_k`` is a sum of activations, that changes the maps
    by much less than 1e-4 relative, and this class agrees with both.

    Args: as :class:`~gradcam.GradCAM` (the options are inherited).

    Examples:
        >>> result = gradcam.XGradCAM(model, "features")(x, [3, 4])
        >>> result.classes, result.weights.shape  # (B, K), (B, K, C)
        (tensor([[3, 4]]), torch.Size([1, 2, 128]))
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """``sum_ij A_ij g_ij / S_k``: (B, K, C)."""
        axes = tuple(range(3, gradients.dim()))  # every position, in any spatial rank
        total = activations.sum(dim=tuple(range(2, activations.dim()))).unsqueeze(1)
        numerator = (gradients * activations.unsqueeze(1)).sum(dim=axes)
        nonzero = total != 0
        return torch.where(nonzero, numerator / torch.where(nonzero, total, 1.0), 0.0)


@register(
    "layercam",
    title="LayerCAM",
    kind="heatmap",
    needs=_LAYER_GRADIENTS,
    citation="Jiang et al. 2021, IEEE TIP 30",
    ranks=(1, 2, 3),
    multi_layer=True,
)
class LayerCAM(_Variant):
    """LayerCAM (Jiang, Zhang, Hou, Cheng and Wei 2021, "LayerCAM: Exploring Hierarchical Class
    Activation Maps for Localization", IEEE Transactions on Image Processing 30).

    Weights every position of every feature map by its own positive gradient, which keeps the
    fine detail of shallow layers:

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k \\mathrm{ReLU}(g^k) \\odot A^k\\Big)

    Agrees with pytorch-grad-cam's and torchcam's ``LayerCAM`` (torchcam's tanh scaling of
    eq. 9 only applies when fusing several layers, which this class does not do).

    Args: as :class:`~gradcam.GradCAM` (the options are inherited).

    Examples:
        >>> result = gradcam.LayerCAM(model, "features.relu3c")(x, [3])  # a shallower layer
        >>> result.raw.shape  # (B, K, h, w): 32 x 32 maps, twice the last layer's resolution
        torch.Size([1, 1, 32, 32])
    """

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """``ReLU(g)`` element by element: (B, K, C, h, w)."""
        return torch.relu(gradients)
