"""What the perturbation CAMs (Score-CAM and its variants, Ablation-CAM) share.

They weight the feature maps ``A^k`` of a layer by how the target scores change on perturbed
copies of the image (Score-CAM: the image masked by each ``A^k``; Ablation-CAM: ``A`` with one
channel zeroed), and then, like Grad-CAM, keep ``ReLU(sum_k w_k^c A^k)``. No gradients: one
clean no-grad forward pass captures ``A`` and resolves the targets, then the copies run through
the model in batches. Every target of an image is scored from the same copies, so ``K``
targets cost what one does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm import tqdm

from gradcam.engine import all_finite, check_input, eval_mode, run_in_fast_layout, spatial_size
from gradcam.errors import GradCAMError, LayerError, TargetError
from gradcam.fusion import FoldedCopy
from gradcam.hooks import capture_layer
from gradcam.layers import LayerLike
from gradcam.maps import normalize, upsample
from gradcam.methods.gradcam import LayerMethod, weighted_sum
from gradcam.methods.results import CAMResult
from gradcam.targets import (
    ResolvedTargets,
    TargetLike,
    as_logits,
    class_names,
    fixed_targets,
    resolve_targets,
)

__all__ = ["CopyRunner", "PerturbationMethod", "default_batch_size"]

Columns = Sequence[Any]
"""The fixed targets of one image (see :func:`gradcam.targets.fixed_targets`)."""


def default_batch_size(device: torch.device, pixels: int | None = None) -> int:
    """Copies per forward pass when the user gives none: 8 on the CPU, 64 on an accelerator.

    On the CPU, ResNet-50 at 224 px took 78 ms an image at batch 8 in channels-last layout
    (81 at 4, 86 at 16, 94 at 32; 85 to 129 in the default layout), one thread. Given the
    copies' ``pixels`` (H * W), smaller copies go in larger batches on the CPU, as many pixels
    a pass as 8 copies of 224 x 224 (at most 64 copies): ResNet-18's Score-CAM at 112 px took
    18 to 20 s at batch 32 against 22 to 25 s at batch 8 (256 channels, one thread, a loaded
    machine).

    Examples:
        >>> default_batch_size(torch.device("cpu"), 112 * 112)
        32
    """
    if device.type != "cpu":
        return 64
    if not pixels:
        return 8
    return max(8, min(64, 8 * (224 * 224) // pixels))


class CopyRunner:
    """Runs batches of perturbed copies through the model and counts them on a progress bar.

    The copies go channels-last on the CPU where the model accepts it
    (:func:`gradcam.engine.fast_layout`): 1.2 to 1.8 times faster no-grad passes. Whole-model
    passes run ``inference`` instead of the model when it is given: a copy with its batch
    norms folded (:func:`gradcam.fusion.fold_batch_norms`), checked against the model first.
    """

    def __init__(
        self, module: nn.Module, bar: tqdm[Any], inference: nn.Module | None = None
    ) -> None:
        self.module = module
        self.bar = bar
        self.inference = inference

    def __call__(
        self,
        inputs: Tensor,
        *,
        forward: Callable[[Tensor], Any] | None = None,
        count: int | None = None,
    ) -> Any:
        """The output of ``forward`` (default: the model) on ``inputs``, (n, C, H, W); the bar
        advances by ``count`` copies (default: n)."""
        if forward is None:
            forward = self.module if self.inference is None else self.inference
        output = run_in_fast_layout(self.module, inputs, forward, fast=True)
        self.bar.update(inputs.shape[0] if count is None else count)
        return output


def scores_of(columns: Columns, output: Any, batch: int) -> Tensor:
    """(batch, K) float scores of one image's fixed targets on the output of ``batch`` copies."""
    scores = resolve_targets(list(columns), output, batch).scores
    if scores.shape[0] != batch:
        raise TargetError(
            f"the model gave {scores.shape[0]} outputs for a batch of {batch} perturbed copies"
        )
    return scores.float()


def _logits_or_none(output: object) -> Tensor | None:
    try:
        return as_logits(output).detach().float()
    except TargetError:
        return None


class PerturbationMethod(LayerMethod):
    """Base of the CAMs whose channel weights come from forward passes of perturbed copies.

    Subclasses implement :meth:`channel_weights`; ``__call__`` runs the clean forward pass,
    resolves the targets, and builds ``ReLU(sum_k w_k^c A^k)`` into a
    :class:`~gradcam.methods.results.CAMResult`.
    """

    #: Whether the method writes into the layer's output itself (then a token or channels-last
    #: layer cannot be used: the change would have to be reshaped back).
    channels_first_only: ClassVar[bool] = False
    #: Whether its copies run the whole model (then they run a copy with folded batch norms).
    whole_model_copies: ClassVar[bool] = False

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise GradCAMError(f"batch_size must be at least 1, got {batch_size}")
        super().__init__(module, layer)
        self.batch_size = batch_size
        self.progress = progress
        self.folded = FoldedCopy(self.module)

    def inference_copy(self, x: Tensor, output: object) -> nn.Module | None:
        """The model with its batch norms folded, checked on ``x`` against the model's
        ``output`` (:meth:`gradcam.fusion.FoldedCopy.checked`; this method's own copy, kept
        in ``folded``), or ``None``: the model runs its own passes."""
        return self.folded.checked(x, output)[0]

    def passes(self, activations: Tensor) -> int:
        """How many copies :meth:`channel_weights` will run, for the progress bar."""
        return activations.shape[0] * activations.shape[1]

    def channel_weights(
        self,
        x: Tensor,
        activations: Tensor,
        resolved: ResolvedTargets,
        columns: Sequence[Columns],
        run: CopyRunner,
    ) -> Tensor:
        """The (B, K, C) weights ``w_k^c`` of the feature maps.

        Args:
            x: the (B, C_in, H, W) checked input.
            activations: ``A``, (B, C, h, w), from the clean forward pass.
            resolved: the targets on the clean forward pass: scores ``y^c`` (B, K) and classes.
            columns: per image, its targets fixed to the classes they resolved to.
            run: runs batches of copies through the model (no-grad, eval mode).
        """
        raise NotImplementedError

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> CAMResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module)
        resolved_layer = self.layer_for(x)
        layer, layer_name = resolved_layer.module, resolved_layer.name
        with ExitStack() as stack:
            # inference_mode(False) turns grad mode on, so no_grad comes after it.
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.no_grad())
            stack.enter_context(eval_mode(self.module))
            with capture_layer(layer, layer_name, detach=False) as capture:
                output = self.module(x)
            if capture.output is None:
                raise LayerError(f"layer {layer_name!r} did not run during the forward pass")
            raw = capture.output
            view = resolved_layer.view(self.module, tuple(raw.shape), spatial_size(x))
            if self.channels_first_only and view.kind != "channels-first":
                raise LayerError(
                    f"{type(self).__name__} changes channels of the layer's (B, C, h, w) output, "
                    f"and {layer_name!r} outputs {tuple(raw.shape)} (read as {view.kind}): "
                    "choose a convolutional layer"
                )
            activations = view(raw)
            resolved = resolve_targets(targets, output, x.shape[0], names=class_names(self.module))
            if not all_finite(resolved.scores):
                raise GradCAMError("the model produced NaN or infinite target scores")
            columns = [fixed_targets(targets, resolved.classes[b], b) for b in range(x.shape[0])]
            total = self.passes(activations)
            show = self.progress if self.progress is not None else total > 200
            bar = stack.enter_context(
                tqdm(
                    total=total,
                    desc=type(self).__name__,
                    unit="pass",
                    disable=not show,
                    file=sys.stderr,
                )
            )
            inference = self.inference_copy(x, output) if self.whole_model_copies else None
            run = CopyRunner(self.module, bar, inference)
            weights = self.channel_weights(x, activations, resolved, columns, run)
        if not all_finite(weights):
            raise GradCAMError(
                f"{type(self).__name__} weights are NaN or infinite (non-finite scores of the "
                "perturbed copies)"
            )
        raw = torch.relu(weighted_sum(weights, activations.float()))
        return CAMResult(
            raw=raw,
            maps=normalize(upsample(raw, spatial_size(x)), x.dim() - 2),
            weights=weights,
            scores=resolved.scores.detach().float(),
            classes=resolved.classes,
            logits=_logits_or_none(output),
            layer=layer_name,
        )
