"""RandomCAM: Grad-CAM's map with random channel weights, the baseline every method should beat.

A sanity check in the spirit of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps",
NeurIPS): a map built from the layer's activations with weights that know nothing of the target.
A localization or faithfulness score that RandomCAM reaches tells what the activations alone
give; a method is informative by what it adds above it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike
from gradcam.methods.gradcam import GradCAM
from gradcam.methods.registry import Needs, register

__all__ = ["RandomCAM", "random_weights"]


def random_weights(shape: tuple[int, ...], seed: int | None = 0) -> Tensor:
    """Channel weights drawn uniformly from [-1, 1), on the CPU, in float32.

    .. math::
        w_k^c \\sim \\mathcal{U}(-1, 1)

    ``seed`` seeds a generator of its own (the same weights on every device and in every
    process); ``None`` draws from torch's global generator.

    Examples:
        >>> w = random_weights((1, 2, 3), seed=7)
        >>> w.shape, bool(((-1 <= w) & (w < 1)).all()), torch.equal(w, random_weights((1, 2, 3), 7))
        (torch.Size([1, 2, 3]), True, True)
    """
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) * 2.0 - 1.0


@register(
    "random-cam",
    title="RandomCAM",
    kind="heatmap",
    needs=Needs(layer=True, layer_gradients=True),
    citation=(
        "Gildenblat et al., pytorch-grad-cam (2021), RandomCAM: the random-weights baseline "
        "(sanity checks: Adebayo et al. 2018, NeurIPS)"
    ),
)
class RandomCAM(GradCAM):
    """RandomCAM (pytorch-grad-cam's ``RandomCAM``; no paper of its own): Grad-CAM with channel
    weights drawn at random, a baseline that knows the layer's activations but not the target.

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w_k^c A^k\\Big), \\qquad w_k^c \\sim \\mathcal{U}(-1, 1)

    independently for every image, target and channel. The weights come from a generator seeded
    with ``seed`` at every call, so one call on the same batch and targets gives the same maps
    every time; ``seed=None`` draws from torch's global generator (pytorch-grad-cam draws from
    numpy's global generator, unseeded). A gradient method by construction (it overrides
    :meth:`~gradcam.GradCAM.weights` only): it runs, or shares, Grad-CAM's pass, whose gradients
    it ignores.

    Agrees with pytorch-grad-cam's ``RandomCAM`` given the same weights (the same map formula);
    the weights themselves agree in distribution (uniform on [-1, 1), one per image and channel).

    Args:
        module: the model.
        layer: the layer ``A`` (module or dotted name); ``None`` picks the last convolutional
            feature-map layer on the first call.
        relu: apply the final ReLU (pytorch-grad-cam always does).
        eigen_smooth: replace ``sum_k w_k A^k`` by the projection of the weighted maps
            ``w_k A^k`` on their first principal component (pytorch-grad-cam's eigen_smooth).
        aug_smooth: average the maps of six test-time augmentations (pytorch-grad-cam's
            aug_smooth).
        seed: seed of the random weights (an integer); ``None`` draws from torch's global
            generator, so that every call differs.

    Examples:
        >>> result = gradcam.RandomCAM(model, "features", seed=1)(x, gradcam.TopK(2))
        >>> result.weights.shape  # (B, K, C), uniform on [-1, 1)
        torch.Size([1, 2, 128])
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        relu: bool = True,
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        seed: int | None = 0,
    ) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise GradCAMError(f"seed must be an integer or None, got {seed!r}")
        super().__init__(module, layer, relu=relu, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)
        self.seed = seed

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """``U(-1, 1)`` per image, target and channel: (B, K, C)."""
        shape = tuple(gradients.shape[:3])
        return random_weights(shape, self.seed).to(gradients.device)
