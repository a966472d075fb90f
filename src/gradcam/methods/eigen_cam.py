"""Eigen-CAM, Eigen-Grad-CAM and KPCA-CAM: the first principal component of a layer's features
at each position.

The (h*w, C) matrix of a layer's features (one row per position, centred per channel) is
projected on its first principal direction: linear PCA for Eigen-CAM (of ``A``) and
Eigen-Grad-CAM (of ``dy^c/dA * A``), kernel PCA for KPCA-CAM. A principal direction has no sign,
so each projection is oriented by a stated rule (:data:`SignRule`) before the ReLU.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from gradcam.engine import Gradients
from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike
from gradcam.maps import normalize, upsample
from gradcam.methods.activation import ActivationMethod, check_choice
from gradcam.methods.base import Plan
from gradcam.methods.gradcam import GradCAM, LayersLike, single_layer
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import CAMResult
from gradcam.methods.smoothing import lapack_projection
from gradcam.rectifiers import Rule

__all__ = [
    "KPCACAM",
    "EigenCAM",
    "EigenGradCAM",
    "Kernel",
    "SignRule",
    "kernel_projection",
    "orient",
    "principal_projection",
]

SignRule = Literal["peak", "activation", "lapack"]
"""How a projection's sign is chosen. ``"peak"``: its entry of largest magnitude is positive
(scikit-learn's ``svd_flip``, which KPCA-CAM's peer uses; the sign correction of Seg-Eigen-CAM,
Chung and Ying 2025, eq. 13). ``"activation"``: it correlates positively with the channel sum
``sum_k F^k`` of the features (for linear PCA: the principal direction's components sum to a
positive number). ``"lapack"``: the sign of ``M v_1`` with ``v_1`` as ``numpy.linalg.svd``
returns it for the float32 centred features (whatever LAPACK happens to pick; this is
pytorch-grad-cam's ``get_2d_projection``, for agreeing with it, and costs a second SVD)."""
_SIGNS = ("peak", "activation", "lapack")

Kernel = Literal["sigmoid", "rbf", "poly", "linear", "cosine"]
_KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def _positions(features: Tensor, rank: int = 2) -> Tensor:
    """(..., C, h, w) features as (N, h*w, C) float64 rows, centred per channel; in any
    ``rank``, (..., C, *s) as (N, prod(s), C)."""
    c = features.shape[features.dim() - rank - 1]
    positions = math.prod(features.shape[features.dim() - rank :])
    rows = features.reshape(-1, c, positions).transpose(1, 2).double()
    return rows - rows.mean(dim=1, keepdim=True)


def orient(projection: Tensor, features: Tensor, sign: SignRule = "peak") -> Tensor:
    """Flip each (h*w) projection of (N, h*w) by ``sign`` (see :data:`SignRule`), given the
    (N, h*w, C) centred features it was computed from. An all-zero projection stays as it is.

    Examples:
        >>> orient(torch.tensor([[1.0, -3.0]]), torch.zeros(1, 2, 1))
        tensor([[-1.,  3.]])
    """
    check_choice("sign", sign, _SIGNS)
    if sign == "lapack":
        flip = (projection * lapack_projection(features)).sum(dim=1) < 0
    elif sign == "peak":
        # The first entry of largest magnitude decides, as numpy's argmax in svd_flip.
        index = projection.abs().argmax(dim=1, keepdim=True)
        flip = projection.gather(1, index)[:, 0] < 0
    else:
        flip = (projection * features.sum(dim=2)).sum(dim=1) < 0
    return torch.where(flip[:, None], -projection, projection)


def principal_projection(features: Tensor, sign: SignRule = "peak", rank: int = 2) -> Tensor:
    """Each position's coordinate on the first principal component of (..., C, h, w)
    features: (..., h, w); of (..., C, *s) features with ``rank`` spatial dims in general
    (signals, volumes, clips: every position is a sample).

    With ``M`` the (h*w, C) matrix of one map's features centred per channel and
    ``M = U S V^T`` its singular value decomposition, the projection is
    ``M v_1 = s_1 u_1`` (Muhammad and Yeasin 2020, eq. 4), oriented by ``sign``. Computed in
    float64, returned in float32.

    Examples:
        >>> f = torch.tensor([[[1.0, 2.0, 6.0]], [[2.0, 4.0, 12.0]]])  # C=2, h=1, w=3
        >>> principal_projection(f)  # centred rows a_i (1, 2), a = (-2, -1, 3): sqrt(5) a
        tensor([[-4.4721, -2.2361,  6.7082]])
    """
    lead = features.shape[: features.dim() - rank - 1]
    spatial = features.shape[features.dim() - rank :]
    rows = _positions(features, rank)
    u, s, _ = torch.linalg.svd(rows, full_matrices=False)
    projection = orient(u[..., 0] * s[..., :1], rows, sign)
    return projection.float().reshape(*lead, *spatial)


def _kernel(rows: Tensor, kernel: Kernel, gamma: float, degree: int, coef0: float) -> Tensor:
    if kernel == "cosine":
        norms = rows.norm(dim=2, keepdim=True).clamp(min=torch.finfo(rows.dtype).tiny)
        unit: Tensor = rows / norms
        return unit @ unit.transpose(1, 2)
    dots = rows @ rows.transpose(1, 2)
    if kernel == "linear":
        return dots
    if kernel == "poly":
        return (gamma * dots + coef0) ** degree
    if kernel == "sigmoid":
        return torch.tanh(gamma * dots + coef0)
    squares = rows.square().sum(dim=2)
    distances = (squares[:, :, None] + squares[:, None, :] - 2 * dots).clamp(min=0)
    return torch.exp(-gamma * distances)


def kernel_projection(
    features: Tensor,
    kernel: Kernel = "sigmoid",
    gamma: float | None = None,
    *,
    degree: int = 3,
    coef0: float = 1.0,
    sign: SignRule = "peak",
    rank: int = 2,
) -> Tensor:
    """Each position's coordinate on the first kernel principal component of (..., C, h, w)
    features: (..., h, w).

    With ``x_i`` the centred feature vector of position ``i``, ``K_ij = k(x_i, x_j)``
    (sigmoid ``tanh(gamma x_i.x_j + coef0)``, rbf ``exp(-gamma |x_i - x_j|^2)``, poly
    ``(gamma x_i.x_j + coef0)^degree``, linear, cosine), the centred kernel
    ``K' = K - 1K/n - K1/n + 1K1/n^2`` and ``(lambda_1, a_1)`` its largest eigenpair, the
    projection is ``sqrt(lambda_1) a_1`` (Schoelkopf et al. 1998), oriented by ``sign``;
    ``gamma=None`` is ``1 / C``. This is scikit-learn's ``KernelPCA(n_components=1)``
    ``fit_transform``, which KPCA-CAM uses. Computed in float64, returned in float32.
    ``rank`` is the number of spatial dims ((..., C, *s) features give (..., *s)).

    Examples:
        >>> f = torch.tensor([[[1.0, 2.0, 6.0]], [[2.0, 4.0, 12.0]]])
        >>> kernel_projection(f, "linear")  # linear kernel PCA is PCA
        tensor([[-4.4721, -2.2361,  6.7082]])
    """
    check_choice("kernel", kernel, _KERNELS)
    lead = features.shape[: features.dim() - rank - 1]
    c = features.shape[features.dim() - rank - 1]
    spatial = features.shape[features.dim() - rank :]
    rows = _positions(features, rank)
    gram = _kernel(rows, kernel, 1.0 / c if gamma is None else gamma, degree, coef0)
    centred = (
        gram
        - gram.mean(dim=1, keepdim=True)
        - gram.mean(dim=2, keepdim=True)
        + gram.mean(dim=(1, 2), keepdim=True)
    )
    values, vectors = torch.linalg.eigh(centred)
    top = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()
    return orient(top, rows, sign).float().reshape(*lead, *spatial)


@register(
    "eigen-cam",
    title="Eigen-CAM",
    kind="heatmap",
    needs=Needs(layer=True, forwards="one no-grad forward pass"),
    citation="Muhammad and Yeasin 2020",
    ranks=(1, 2, 3),
)
class EigenCAM(ActivationMethod):
    """Eigen-CAM (Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020): the projection of the layer's features on their first principal
    component.

    With ``M`` the (h*w, C) matrix of ``A``'s feature vectors centred per channel and
    ``M = U S V^T``, ``L = ReLU(M v_1)``, reshaped to (h, w), where ``v_1`` is oriented by
    ``sign`` (a principal direction has no sign of its own).

    Eigen-CAM uses neither gradients nor the target: it is class-agnostic, and the result
    holds the same map for every target (the targets still give ``scores`` and ``classes``).
    It costs one no-grad forward pass. On signals, volumes and clips every position of the
    layer is a row of ``M`` (registry ``ranks=(1, 2, 3)``).

    pytorch-grad-cam's ``EigenCAM`` computes the same projection with numpy's SVD and keeps
    the sign LAPACK returns; ours equals it or its negative, then is oriented by ``sign``.

    Args:
        module: the model.
        layer: the layer ``A`` (default: the last convolutional feature maps).
        sign: how the projection's sign is chosen: ``"peak"`` (its largest-magnitude entry is
            positive), ``"activation"`` (it correlates positively with ``sum_k A^k``) or
            ``"lapack"`` (numpy's SVD's, pytorch-grad-cam's: equal to it to float precision).
        relu: keep the positive part (``False`` gives the signed projection).

    Examples:
        >>> result = EigenCAM(model, "features")(x, gradcam.TopK(2))
        >>> torch.equal(result.raw[:, 0], result.raw[:, 1])  # the same map for each target
        True
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        sign: SignRule = "peak",
        relu: bool = True,
    ) -> None:
        check_choice("sign", sign, _SIGNS)
        super().__init__(module, layer)
        self.sign: SignRule = sign
        self.relu = relu

    def project(self, activations: Tensor) -> tuple[Tensor, Tensor | None]:
        """``M v_1`` per image (B, h, w), rectified unless ``relu=False``; no channel weights."""
        projection = principal_projection(activations, self.sign, activations.dim() - 2)
        return (torch.relu(projection) if self.relu else projection), None


@register(
    "eigen-gradcam",
    title="Eigen-Grad-CAM",
    kind="heatmap",
    needs=Needs(layer=True, layer_gradients=True),
    citation="Muhammad and Yeasin 2020 (on gradients times activations)",
    ranks=(1, 2, 3),
    multi_layer=True,
)
class EigenGradCAM(GradCAM):
    """Eigen-Grad-CAM: Eigen-CAM (Muhammad and Yeasin 2020) of the class-specific features
    ``dy^c/dA * A`` instead of ``A``.

    With ``M^c`` the (h*w, C) matrix of ``dy^c/dA^k_ij A^k_ij`` centred per channel and
    ``M^c = U S V^T``, ``L^c = ReLU(M^c v_1)``, with ``v_1`` oriented by ``sign``
    (``"activation"`` then means: positively correlated with ``sum_k dy^c/dA^k A^k``, the
    HiResCAM map). As pytorch-grad-cam's ``EigenGradCAM``, whose sign is LAPACK's: ours equals
    its projection or the negative of it.

    A gradient method: one forward pass and one batched backward pass to the layer for all
    targets, shared with Grad-CAM by :func:`~gradcam.methods.planner.explain_methods`.

    Args:
        module: the model.
        layer: the layer ``A`` (default: the last convolutional feature maps).
        sign: how the projection's sign is chosen: ``"peak"`` (its largest-magnitude entry is
            positive), ``"activation"`` (it correlates positively with
            ``sum_k dy^c/dA^k A^k``) or ``"lapack"`` (numpy's SVD's, pytorch-grad-cam's).
        relu: keep the positive part (``False`` gives the signed projection).
        gradient_rule: backward rule at rectifiers between ``A`` and the score.

    Examples:
        >>> result = EigenGradCAM(model, "features")(x, gradcam.TopK(3))
        >>> result.raw.shape, result.weights  # (B, K, h, w); no channel weights
        (torch.Size([1, 3, 16, 16]), None)
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayersLike | None = None,
        *,
        sign: SignRule = "peak",
        relu: bool = True,
        gradient_rule: Rule = "plain",
    ) -> None:
        check_choice("sign", sign, _SIGNS)
        super().__init__(module, layer, relu=relu, gradient_rule=gradient_rule)
        self.sign: SignRule = sign

    def from_gradients(
        self, grads: Gradients, plan: Plan, input_size: tuple[int, ...]
    ) -> CAMResult:
        """``ReLU(M^c v_1)`` for every image and target, upsampled and normalized."""
        if plan.layer is not None:
            single_layer(grads, plan.layer[1], "Eigen-Grad-CAM")
        if grads.activations is None or grads.gradients is None or plan.layer is None:
            raise ValueError("Eigen-Grad-CAM needs gradients computed at a layer")
        features = grads.gradients.float() * grads.activations.float().unsqueeze(1)
        raw = principal_projection(features, self.sign, len(input_size))
        if self.relu:
            raw = torch.relu(raw)
        return CAMResult(
            raw=raw,
            maps=normalize(upsample(raw, input_size), len(input_size)),
            weights=None,
            scores=grads.scores.float(),
            classes=grads.classes,
            logits=None if grads.logits is None else grads.logits.float(),
            layer=plan.layer[1],
        )


@register(
    "kpca-cam",
    title="KPCA-CAM",
    kind="heatmap",
    needs=Needs(layer=True, forwards="one no-grad forward pass"),
    citation="Karmani et al. 2024, KPCA-CAM (arXiv:2410.00267)",
    ranks=(1, 2, 3),
)
class KPCACAM(ActivationMethod):
    """KPCA-CAM (Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision
    Models using Kernel PCA", MMSP 2024): Eigen-CAM with kernel PCA.

    With ``x_i`` the feature vector of position ``i`` of ``A`` centred per channel, the
    kernel matrix ``K_ij = k(x_i, x_j)`` centred in feature space, and ``(lambda_1, a_1)`` its
    largest eigenpair, ``L_i = ReLU(sqrt(lambda_1) a_{1,i})`` (see :func:`kernel_projection`).

    Class-agnostic like Eigen-CAM: the same map for every target; one no-grad forward pass.
    Matches pytorch-grad-cam's ``KPCA_CAM`` (scikit-learn's ``KernelPCA``, whose sign rule is
    ``sign="peak"``), computed here with ``torch.linalg.eigh``.

    Args:
        module: the model.
        layer: the layer ``A`` (default: the last convolutional feature maps).
        kernel: ``"sigmoid"`` (the paper's and the peer's default), ``"rbf"``, ``"poly"``
            (degree 3), ``"linear"`` (which is Eigen-CAM) or ``"cosine"``.
        gamma: the kernel's scale; ``None`` is ``1 / C``, for C channels.
        sign: how the projection's sign is chosen: ``"peak"`` (its largest-magnitude entry is
            positive, as scikit-learn's) or ``"activation"`` (it correlates positively with
            ``sum_k A^k``).
        relu: keep the positive part (``False`` gives the signed projection).

    Examples:
        >>> result = KPCACAM(model, "features", kernel="rbf")(x)
        >>> result.raw.shape  # (B, 1, h, w)
        torch.Size([1, 1, 16, 16])
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        kernel: Kernel = "sigmoid",
        gamma: float | None = None,
        sign: SignRule = "peak",
        relu: bool = True,
    ) -> None:
        check_choice("kernel", kernel, _KERNELS)
        check_choice("sign", sign, _SIGNS)
        if gamma is not None and not gamma > 0:
            raise GradCAMError(f"gamma must be positive or None, got {gamma!r}")
        super().__init__(module, layer)
        self.kernel: Kernel = kernel
        self.gamma = gamma
        self.sign: SignRule = sign
        self.relu = relu

    def project(self, activations: Tensor) -> tuple[Tensor, Tensor | None]:
        """``sqrt(lambda_1) a_1`` per image (B, h, w), rectified unless ``relu=False``."""
        projection = kernel_projection(
            activations, self.kernel, self.gamma, sign=self.sign, rank=activations.dim() - 2
        )
        return (torch.relu(projection) if self.relu else projection), None
