"""Score-CAM (Wang et al. 2020) and its smoothed (SS-CAM) and integrated (IS-CAM) variants.

Each feature map ``A^k`` of the layer, upsampled to the input and min-max normalized, masks
the image; the target scores of the masked images, softmaxed over the channels, weight the
maps. No gradients, one forward pass per channel (and per sample for the variants), in
batches; every target of an image is scored from the same masked images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gradcam.engine import spatial_size
from gradcam.errors import GradCAMError
from gradcam.layers import LayerLike
from gradcam.maps import normalize, upsample
from gradcam.methods.perturbation import (
    Columns,
    CopyRunner,
    PerturbationMethod,
    default_batch_size,
    scores_of,
)
from gradcam.methods.registry import Needs, register
from gradcam.targets import ResolvedTargets

__all__ = ["ISCAM", "SSCAM", "ScoreCAM", "score_masks"]


def score_masks(activations: Tensor, size: tuple[int, ...], align_corners: bool = False) -> Tensor:
    """Score-CAM's masks ``H^k = s(Up(A^k))`` (eq. 5): feature maps (..., h, w) bilinearly
    upsampled to ``size`` (as :func:`gradcam.maps.upsample`, linearly or trilinearly for a
    signal's or clip's ``size``; or with the corner pixels aligned when ``align_corners``),
    then min-max normalized to [0, 1] each; a constant map gives an all-zero mask.

    Examples:
        >>> score_masks(torch.tensor([[[1.0, 3.0]]]), (1, 2))
        tensor([[[0., 1.]]])
    """
    if not align_corners:
        return normalize(upsample(activations.float(), size), len(size))
    modes = {1: "linear", 2: "bilinear", 3: "trilinear"}
    spatial = activations.shape[-len(size) :]
    maps = activations.float().reshape(-1, 1, *spatial)
    up = torch.nn.functional.interpolate(maps, size=size, mode=modes[len(size)], align_corners=True)
    return normalize(up.reshape(*activations.shape[: -len(size)], *size), len(size))


@register(
    "score-cam",
    title="Score-CAM",
    kind="heatmap",
    needs=Needs(layer=True, forwards="one per channel of the layer, in batches", many_passes=True),
    citation="Wang et al. 2020",
    ranks=(1, 2, 3),
)
class ScoreCAM(PerturbationMethod):
    """Score-CAM: the feature maps weighted by the scores of the image masked by each of them
    (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR workshops 2020, Algorithm 1):

    ``H^k = s(Up(A^k))``, ``S^c_k = f^c(X * H^k) - f^c(X_b)``,
    ``alpha^c_k = exp(S^c_k) / sum_j exp(S^c_j)``, ``L^c = ReLU(sum_k alpha^c_k A^k)``

    where ``Up`` is bilinear upsampling to the input, ``s`` min-max normalization and
    ``f^c`` the score before the softmax. The baseline term ``f^c(X_b)`` is the same for every
    channel, so the softmax over channels cancels it. A constant map has an all-zero mask
    (pytorch-grad-cam and torchcam do the same): those channels share one forward pass of
    an all-zero image.

    The masked images run through a copy of the model with its batch norms folded into its
    convolutions (:func:`gradcam.fusion.fold_batch_norms`; 1.17x faster for ResNet-50, 1.37x
    for EfficientNet-B0 on a CPU), checked against the model on the clean image first; a
    model that ``torch.fx`` cannot trace runs as it is. The copy is kept while the model lives.

    pytorch-grad-cam computes this (with ``align_corners=True`` upsampling of the masks);
    torchcam normalizes ``A^k`` before upsampling it, so its masks differ where a map's
    extremes are inside it.

    Args:
        module: the model.
        layer: the layer ``A``, as a submodule or a dotted name; ``None`` picks the last
            convolutional feature-map layer on the first call.
        batch_size: masked images per forward pass; ``None`` picks 8 on the CPU for
            224 x 224 inputs, more for smaller ones (as many pixels a pass, at most 64;
            :func:`~gradcam.methods.perturbation.default_batch_size`), and 64 on an
            accelerator.
        progress: show a progress bar; ``None`` shows one for runs of more than 200 passes.
        align_corners: upsample the maps with their corner pixels on the image's corners
            (pytorch-grad-cam's ``UpsamplingBilinear2d``) rather than half-pixel centres
            (``False``, the default: torchcam's and :func:`gradcam.maps.upsample`'s).

    Examples:
        >>> result = ScoreCAM(model, "features.relu1")(x, gradcam.TopK(2))  # 32 masked images
        >>> result.weights.shape  # (B, K, C)
        torch.Size([1, 2, 32])
        >>> result.weights.sum(-1).allclose(torch.ones(1, 2))  # each class's softmax sums to 1
        True
    """

    whole_model_copies = True

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        batch_size: int | None = None,
        progress: bool | None = None,
        align_corners: bool = False,
    ) -> None:
        if not isinstance(align_corners, bool):
            raise GradCAMError(f"align_corners must be true or false, got {align_corners!r}")
        super().__init__(module, layer, batch_size=batch_size, progress=progress)
        self.align_corners = align_corners

    def steps(self) -> int:
        """Masked images per channel whose scores are averaged (1: Score-CAM)."""
        return 1

    def masks(self, activations: Tensor, size: tuple[int, ...]) -> Tensor:
        """The masks (n, H, W) of feature maps (n, h, w): :func:`score_masks`."""
        return score_masks(activations, size, self.align_corners)

    def blank_channels(self, activations: Tensor) -> Tensor:
        """(B, C) bool: the channels whose masked images are all zero (constant maps), scored
        together by one forward pass of a zero image."""
        flat = activations.flatten(2)
        return flat.amax(dim=-1) == flat.amin(dim=-1)

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The random generator of a call's perturbations (``None``: they are not random)."""
        return None

    def perturb(
        self, image: Tensor, masks: Tensor, step: int, generator: torch.Generator | None
    ) -> Tensor:
        """The masked copies (n, C, H, W) of ``image`` (C, H, W) for ``masks`` (n, H, W) at
        sample ``step``: ``X * H^k``."""
        return image * masks[:, None].to(image.dtype)

    def passes(self, activations: Tensor) -> int:
        """Masked images run per call: every non-blank channel ``steps`` times, plus one."""
        blank = self.blank_channels(activations)
        return self.steps() * int((~blank).sum()) + int(bool(blank.any()))

    def channel_weights(
        self,
        x: Tensor,
        activations: Tensor,
        resolved: ResolvedTargets,
        columns: Sequence[Columns],
        run: CopyRunner,
    ) -> Tensor:
        """Softmax over the channels of the mean scores of the masked images (B, K, C)."""
        batch, channels = activations.shape[:2]
        size = spatial_size(x)
        steps = self.steps()
        scores = torch.zeros(batch, resolved.scores.shape[1], channels, device=x.device)
        blank = self.blank_channels(activations)
        if bool(blank.any()):
            # X * 0 is the zero image whatever X is: one pass serves every image and sample.
            zero_output = run(x.new_zeros(1, *x.shape[1:]))
            for b in range(batch):
                scores[b][:, blank[b]] = scores_of(columns[b], zero_output, 1).T
        chunk = self.batch_size or default_batch_size(x.device, math.prod(size))
        generator = self.generator(x.device)
        totals = torch.zeros_like(scores)
        kept = [(~blank[b]).nonzero()[:, 0] for b in range(batch)]
        # Sample, then image, then channel: torchcam's order, so the noise draws match.
        for step in range(steps):
            for b in range(batch):
                for start in range(0, len(kept[b]), chunk):
                    live = kept[b][start : start + chunk]
                    masks = self.masks(activations[b, live], size)
                    output = run(self.perturb(x[b], masks, step, generator))
                    totals[b][:, live] += scores_of(columns[b], output, len(live)).T
        scores = torch.where(blank[:, None, :], scores, totals / steps)
        return torch.softmax(scores, dim=-1)


def _check_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise GradCAMError(f"num_samples must be a positive integer, got {num_samples!r}")
    return num_samples


@register(
    "ss-cam",
    title="SS-CAM",
    kind="heatmap",
    needs=Needs(
        layer=True, forwards="num_samples per channel of the layer, in batches", many_passes=True
    ),
    citation="Wang et al. 2020 (SS-CAM)",
    ranks=(1, 2, 3),
)
class SSCAM(ScoreCAM):
    """Smoothed Score-CAM: Score-CAM whose scores are averaged over noisy masks (Wang, Naidu,
    Michael and Kundu, "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization",
    2020):

    ``S^c_k = 1/N sum_i f^c(X * (H^k + delta_i)) - f^c(X_b)``, ``delta_i ~ N(0, std^2)``

    per pixel, then ``alpha^c = softmax_k(S^c)`` and ``L^c = ReLU(sum_k alpha^c_k A^k)`` as in
    :class:`ScoreCAM`. The noise comes from a generator seeded with ``seed`` at every call (the
    same call gives the same map), drawn sample by sample, image by image, channel by channel
    as torchcam draws it, so torchcam's SSCAM after ``torch.manual_seed(seed)`` sees the same
    noise (on the CPU). Costs ``num_samples`` forward passes per channel: 35 times Score-CAM
    at the defaults (torchcam's).

    Args:
        module: the model.
        layer: the layer ``A`` (default: the last convolutional feature maps).
        num_samples: noisy masks per channel, ``N``.
        std: standard deviation of the noise added to the masks (which lie in [0, 1]).
        seed: seed of the noise.
        batch_size: masked images per forward pass; ``None`` picks as Score-CAM does (8 on
            the CPU at 224 x 224, more for smaller inputs; 64 on an accelerator).
        progress: show a progress bar; ``None`` shows one for runs of more than 200 passes.

    Examples:
        >>> result = SSCAM(model, "features.relu1", num_samples=2, std=0.5)(x, [3])
        >>> result.raw.shape  # (B, K, h, w)
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        num_samples: int = 35,
        std: float = 2.0,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        if not std >= 0:
            raise GradCAMError(f"std must be non-negative, got {std!r}")
        super().__init__(module, layer, batch_size=batch_size, progress=progress)
        self.num_samples = _check_samples(num_samples)
        self.std = float(std)
        self.seed = seed

    def steps(self) -> int:
        """``num_samples`` noisy masks per channel."""
        return self.num_samples

    def blank_channels(self, activations: Tensor) -> Tensor:
        """None: the noise makes every masked image distinct."""
        return torch.zeros(activations.shape[:2], dtype=torch.bool, device=activations.device)

    def generator(self, device: torch.device) -> torch.Generator | None:
        """A generator on ``device`` seeded with ``seed``."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def perturb(
        self, image: Tensor, masks: Tensor, step: int, generator: torch.Generator | None
    ) -> Tensor:
        """``X * (H^k + delta)`` with fresh noise ``delta`` (n, H, W) from ``generator``."""
        noise = torch.randn(masks.shape, generator=generator, device=masks.device) * self.std
        return image * (masks + noise)[:, None].to(image.dtype)


@register(
    "is-cam",
    title="IS-CAM",
    kind="heatmap",
    needs=Needs(
        layer=True, forwards="num_samples per channel of the layer, in batches", many_passes=True
    ),
    citation="Naidu et al. 2020",
    ranks=(1, 2, 3),
)
class ISCAM(ScoreCAM):
    """Integrated Score-CAM: Score-CAM whose scores are averaged along a path of growing
    masks, as integrated gradients average along a path (Naidu, Ghosh, Maurya, Nayak K and
    Kundu, "IS-CAM: Integrated Score-CAM for axiomatic-based explanations", 2020):

    ``S^c_k = 1/N sum_{i=1..N} f^c(X * M_i^k) - f^c(X_b)``,
    ``M_i^k = sum_{j=1..i} (j/N) H^k = i(i+1)/(2N) H^k``

    then ``alpha^c = softmax_k(S^c)`` and ``L^c = ReLU(sum_k alpha^c_k A^k)`` as in
    :class:`ScoreCAM`. The mask of the last step is ``(N+1)/2`` times ``H^k`` (torchcam reads
    the paper's sum the same way). Costs ``num_samples`` forward passes per channel.

    Args:
        module: the model.
        layer: the layer ``A`` (default: the last convolutional feature maps).
        num_samples: steps of the path, ``N``.
        batch_size: masked images per forward pass; ``None`` picks as Score-CAM does (8 on
            the CPU at 224 x 224, more for smaller inputs; 64 on an accelerator).
        progress: show a progress bar; ``None`` shows one for runs of more than 200 passes.

    Examples:
        >>> result = ISCAM(model, "features.relu1", num_samples=2)(x, gradcam.TopK(2))
        >>> result.maps.shape  # (B, K, H, W)
        torch.Size([1, 2, 128, 128])
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        num_samples: int = 10,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        super().__init__(module, layer, batch_size=batch_size, progress=progress)
        self.num_samples = _check_samples(num_samples)

    def steps(self) -> int:
        """``num_samples`` steps along the path."""
        return self.num_samples

    def coefficient(self, step: int) -> float:
        """The scale ``i(i+1)/(2N)`` of the masks at step ``i = step + 1``."""
        i = step + 1
        return i * (i + 1) / (2 * self.num_samples)

    def perturb(
        self, image: Tensor, masks: Tensor, step: int, generator: torch.Generator | None
    ) -> Tensor:
        """``X * M_i^k``: the image times the masks scaled by :meth:`coefficient`."""
        return image * (masks * self.coefficient(step))[:, None].to(image.dtype)
