"""Feature Explanation Method (FEM): channels weighted by how often they fire far above their
own mean."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike
from gradcam.methods.activation import ActivationMethod
from gradcam.methods.registry import Needs, register

__all__ = ["FEM", "fem_weights"]


def fem_weights(activations: Tensor, k: float = 2.0, rank: int = 2) -> Tensor:
    """FEM's channel weights (B, C) for activations ``A`` (B, C, h, w) (the last ``rank`` dims
    are the positions: 1 for signals, 3 for volumes and clips): the fraction of each
    feature map's positions above its k-sigma threshold.

    .. math::
        w_k = \\frac{1}{Z}\\sum_{ij} [A^k_{ij} > \\mu_k + k\\,\\sigma_k]

    with ``mu_k`` and ``sigma_k`` the mean and (population) standard deviation of ``A^k``.

    Examples:
        >>> fem_weights(torch.tensor([[[[0.0, 0.0, 0.0, 4.0]]]]), k=1.0)  # mu 1, sigma sqrt 3
        tensor([[0.2500]])
    """
    axes = tuple(range(activations.dim() - rank, activations.dim()))
    std, mean = torch.std_mean(activations, dim=axes, correction=0)
    threshold = (mean + k * std)[(...,) + (None,) * len(axes)]
    return (activations > threshold).float().mean(dim=axes)


@register(
    "fem",
    title="FEM",
    kind="heatmap",
    needs=Needs(layer=True, forwards="one no-grad forward pass"),
    citation="Fuad et al. 2020, IPTA",
    ranks=(1, 2, 3),
)
class FEM(ActivationMethod):
    """Feature Explanation Method (Fuad, Martin, Giot, Bourqui, Benois-Pineau and Zemmari,
    "Features understanding in 3D CNNs for actions recognition in video", IPTA 2020).

    Each feature map ``A^k`` is binarized by the k-sigma rule, ``A^k_ij > mu_k + k sigma_k``;
    its weight is the fraction of positions that pass, and

    ``L = ReLU(sum_k w_k A^k)``,  ``w_k = 1/Z sum_ij [A^k_ij > mu_k + k sigma_k]``

    (see :func:`fem_weights`). FEM uses neither gradients nor the target: it is
    class-agnostic, and the result holds the same map and weights for every target. It costs
    one no-grad forward pass. As pytorch-grad-cam's ``FEM``.

    Args:
        module: the model.
        layer: the layer ``A`` (default: the last convolutional feature maps).
        k: how many standard deviations above the mean a position must be to count.

    Examples:
        >>> result = FEM(model, "features")(x)
        >>> result.weights.shape  # (B, 1, C): the fraction of each map above threshold
        torch.Size([1, 1, 128])
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        k: float = 2.0,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k):
            raise GradCAMError(f"k must be a finite number, got {k!r}")
        super().__init__(module, layer)
        self.k = float(k)

    def project(self, activations: Tensor) -> tuple[Tensor, Tensor | None]:
        """``ReLU(sum_k w_k A^k)`` (B, h, w) and the weights ``w`` (B, C)."""
        weights = fem_weights(activations, self.k, activations.dim() - 2)
        return torch.relu(torch.einsum("bc,bc...->b...", weights, activations)), weights
