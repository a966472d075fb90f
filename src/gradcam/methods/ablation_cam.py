"""Ablation-CAM (Desai and Ramaswamy 2020): the score drop when one feature map is zeroed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gradcam.errors import GradCAMError
from gradcam.hooks import replace_output
from gradcam.layers import LayerLike
from gradcam.methods.perturbation import (
    Columns,
    CopyRunner,
    PerturbationMethod,
    default_batch_size,
    scores_of,
)
from gradcam.methods.registry import Needs, register
from gradcam.targets import ResolvedTargets

__all__ = ["AblationCAM"]

# Ablated copies of A per pass when only the layers after A run on them: as many as this many
# bytes of A hold (160 copies for ResNet-50's layer4 at 224 px), at least the usual batch.
_TAIL_BYTES = 64 * 2**20


@register(
    "ablation-cam",
    title="Ablation-CAM",
    kind="heatmap",
    needs=Needs(
        layer=True,
        forwards="one per non-zero channel of the layer, in batches, of the layers after it",
        many_passes=True,
    ),
    citation="Desai and Ramaswamy 2020",
    ranks=(1, 2, 3),
)
class AblationCAM(PerturbationMethod):
    """Ablation-CAM: each feature map weighted by the relative drop of the target score when
    that map is set to zero (Desai and Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization", WACV 2020, eq. 4):

    ``w_k^c = (y^c - y^c_k) / y^c``, ``L^c = ReLU(sum_k w_k^c A^k)``

    where ``y^c_k`` is the score with ``A^k = 0``. A map that is already all zero has
    ``w_k^c = 0`` and needs no pass. ``y^c = 0`` makes the weights undefined (an error).

    The network before the layer runs once per batch of ablated copies, on the image alone: a
    hook makes the layer return the copies, and only the layers after it run on the batch
    (for ResNet-50's ``layer4``, the pooling and the classifier). A model whose forward pass
    cannot take a batch that grows at the layer (checked on the first batch: it holds one
    unablated copy whose scores must be the clean ones) gets copies of the whole image
    instead, the layer's output replaced by the ablated copies, as pytorch-grad-cam does.

    pytorch-grad-cam agrees where the layer's minimum is 0 (after a ReLU); elsewhere it
    ablates to a large negative value instead of zero.

    Args:
        module: the model.
        layer: the layer ``A``, as a submodule or a dotted name; ``None`` picks the last
            convolutional feature-map layer on the first call.
        batch_size: ablated copies per forward pass; ``None`` picks as many as hold 64 MB of
            ``A`` when only the layers after ``A`` run (160 for ResNet-50's ``layer4`` at
            224 px), at least 8 on the CPU and 64 on an accelerator.
        progress: show a progress bar; ``None`` shows one for runs of more than 200 passes.

    Examples:
        >>> result = AblationCAM(model, "features.relu1")(x, gradcam.TopK(2))  # 32 channels
        >>> result.classes, result.weights.shape  # (B, K, C) relative score drops
        (tensor([[3, 4]]), torch.Size([1, 2, 32]))
    """

    channels_first_only = True

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        super().__init__(module, layer, batch_size=batch_size, progress=progress)

    def ablated(self, activation: Tensor) -> Tensor:
        """The channels of one image's ``A`` (C, h, w) to ablate: the maps not all zero."""
        return activation.flatten(1).ne(0).any(dim=-1).nonzero()[:, 0]

    def passes(self, activations: Tensor) -> int:
        """Ablated copies per call: one per channel to ablate."""
        return sum(len(self.ablated(a)) for a in activations)

    def channel_weights(
        self,
        x: Tensor,
        activations: Tensor,
        resolved: ResolvedTargets,
        columns: Sequence[Columns],
        run: CopyRunner,
    ) -> Tensor:
        """``(y^c - y^c_k) / y^c`` for every channel (B, K, C); 0 for all-zero maps."""
        clean = resolved.scores.float()
        if bool((clean == 0).any()):
            raise GradCAMError(
                "Ablation-CAM divides by the target score y^c, and it is 0 here: choose "
                "another target or method"
            )
        batch, channels = activations.shape[:2]
        resolved_layer = self.layer_for(x)
        layer = (resolved_layer.module, resolved_layer.name)
        drops = torch.zeros(batch, clean.shape[1], channels, device=x.device)
        tail_only: bool | None = None  # decided on the first batch of copies
        for b in range(batch):
            live = self.ablated(activations[b])
            start = 0
            while start < len(live):
                ablated = live[start : start + self._chunk(activations, x.device, tail_only)]
                copies = activations[b].expand(len(ablated), *activations.shape[1:]).clone()
                copies[torch.arange(len(ablated)), ablated] = 0
                if tail_only is None:
                    scores = self._probe(
                        x[b : b + 1], copies, activations[b], clean[b], columns[b], layer, run
                    )
                    tail_only = scores is not None
                    if scores is None:
                        continue  # cut this batch again, at the whole network's size
                else:
                    scores = self._scores(x[b : b + 1], copies, columns[b], layer, run, tail_only)
                drops[b][:, ablated] = clean[b][:, None] - scores.T
                start += len(ablated)
        return drops / clean[..., None]

    def _chunk(self, activations: Tensor, device: torch.device, tail_only: bool | None) -> int:
        if self.batch_size is not None:
            return self.batch_size
        usual = default_batch_size(device)
        if tail_only is False:
            return usual
        per_copy = activations[0].numel() * activations.element_size()
        return max(usual, _TAIL_BYTES // max(per_copy, 1))

    def _scores(
        self,
        image: Tensor,
        copies: Tensor,
        columns: Columns,
        layer: tuple[nn.Module, str],
        run: CopyRunner,
        tail_only: bool,
    ) -> Tensor:
        """(n, K) scores with the layer's output replaced by the n ``copies``: on ``image``
        (1, C, H, W) alone when ``tail_only``, else on n copies of it."""
        n = copies.shape[0]

        def forward(inputs: Tensor) -> Any:
            with replace_output(*layer, lambda _output: copies):
                return self.module(inputs)

        source = image if tail_only else image.expand(n, *image.shape[1:])
        return scores_of(columns, run(source, forward=forward, count=n), n)

    def _probe(
        self,
        image: Tensor,
        copies: Tensor,
        activation: Tensor,
        clean: Tensor,
        columns: Columns,
        layer: tuple[nn.Module, str],
        run: CopyRunner,
    ) -> Tensor | None:
        """The scores of ``copies`` with the network before the layer run once, or ``None``
        when the model cannot run that way: one extra, unablated copy must give the clean
        scores."""
        probe = torch.cat([activation[None], copies])
        try:
            scores = self._scores(image, probe, columns, layer, run, tail_only=True)
        except (RuntimeError, GradCAMError):
            return None
        run.bar.update(-1)
        if not torch.allclose(scores[0], clean, rtol=1e-4, atol=1e-5):
            run.bar.update(-len(copies))  # they run again, with the whole network
            return None
        return scores[1:]
