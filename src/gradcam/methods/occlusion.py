"""Occlusion sensitivity (Zeiler and Fergus 2014), the reference of section 5.3."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from tqdm import tqdm

from gradcam.engine import check_input, eval_mode, run_in_fast_layout
from gradcam.errors import GradCAMError, TargetError
from gradcam.fusion import FoldedCopy
from gradcam.maps import normalize
from gradcam.methods.perturbation import CopyRunner, scores_of
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import OcclusionResult
from gradcam.targets import TargetLike, as_logits, class_names, fixed_targets, resolve_targets

__all__ = ["Occlusion", "window_starts"]


Sides = int | tuple[int, int] | tuple[int, int, int]

#: The names of the spatial axes, by rank, for messages.
_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def _pair(value: Sides, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) not in (2, 3) or not all(isinstance(v, int) and v > 0 for v in pair):
        raise GradCAMError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair[-2], pair[-1]


def _sides(value: Sides, name: str, rank: int) -> tuple[int, ...]:
    """``value`` per axis of a ``rank``-D input: an int on every axis, or one per axis."""
    sides = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(sides) != rank:
        raise GradCAMError(
            f"{name} {value!r} gives {len(sides)} sides, and the input has {rank} spatial "
            f"axes ({', '.join(_AXES[rank])}): give an int or {rank} of them"
        )
    return sides


def _logits_or_none(output: object) -> Tensor | None:
    try:
        return as_logits(output).detach().float()
    except TargetError:
        return None


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one side: ``0, s, 2s, ...`` until the side is covered.

    ``ceil((size - window) / stride) + 1`` windows (as Captum's Occlusion); the last one may
    reach past the edge and is clipped, so every pixel is covered at least once.
    """
    if window >= size:
        return [0]
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


@register(
    "occlusion",
    title="Occlusion",
    ranks=(1, 2, 3),
    kind="heatmap",
    needs=Needs(forwards="one per window position, in batches", many_passes=True),
    citation="Zeiler and Fergus 2014",
)
class Occlusion:
    """Occlusion sensitivity: how much each target score drops when a window is masked.

    A ``window`` slides over the image with ``stride``; every position is replaced by
    ``baseline`` in all channels and the model re-scored. On a signal the window is a segment,
    on a volume or clip a box (an int ``window`` is a cube), sliding along every axis alike.
    Each pixel gets the mean drop
    ``y^c(x) - y^c(x with the window masked)`` over the windows that cover it, so the map has
    the input's size; windows at the right and bottom edges are clipped to the image (the
    image is, in effect, padded). Positive values mark evidence for the target. The paper uses
    35 x 35 windows (supplement 5.1).

    Runs under ``no_grad``, the occluded copies in batches of ``batch_size``, with a progress
    bar for long runs. Costs ``B * n_windows`` forward passes (625 for 224 x 224, stride 8),
    run as the perturbation CAMs run theirs (:class:`~gradcam.methods.perturbation.CopyRunner`:
    channels-last on the CPU, through a copy with folded batch norms), and, when the copy is
    used, ``B`` more: its check on the unoccluded images, whose scores the drops are taken
    from.
    Callable targets are called with the outputs of a batch of occluded copies of one image.

    Args:
        module: the model.
        window: window height and width (int or pair), in input pixels (for a signal an int;
            for a volume or clip an int or a (depth, height, width) triple).
        stride: step between windows (int, pair or triple, as ``window``); at most the window
            size.
        baseline: value of masked pixels (in the model's input space): a number, or a tensor
            broadcastable to (C, H, W), e.g. a per-channel mean.
        batch_size: occluded copies per forward pass; ``None`` picks 4 on the CPU (measured
            fastest per image there: EfficientNet-Lite0 takes 26 ms an image at batch 4 and
            64 ms at batch 32) and 64 on an accelerator.
        progress: show a progress bar; ``None`` shows one for runs of more than 200 passes.

    Examples:
        >>> result = Occlusion(model, window=32, stride=32)(x, [3])  # 4 x 4 windows
        >>> result.raw.shape  # (B, K, H, W) mean score drops
        torch.Size([1, 1, 128, 128])
    """

    def __init__(
        self,
        module: nn.Module,
        window: Sides = 35,
        stride: Sides = 8,
        baseline: float | Tensor = 0.0,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise GradCAMError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.window = _pair(window, "window")
        self.stride = _pair(stride, "stride")
        self._given = (window, stride)
        if batch_size is not None and batch_size < 1:
            raise GradCAMError(f"batch_size must be at least 1, got {batch_size}")
        self.baseline = baseline
        self.batch_size = batch_size
        self.progress = progress
        self.folded = FoldedCopy(module)

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``(y0, y1, x0, x1)`` of every window on a ``height`` x ``width`` input."""
        return [(y.start, y.stop, x.start, x.stop) for y, x in self.boxes((height, width))]

    def boxes(self, size: tuple[int, ...]) -> list[tuple[slice, ...]]:
        """Every window on an input of spatial ``size`` (``(L,)``, ``(H, W)``, ``(D, H, W)``),
        as one slice per axis, the last axis varying fastest.

        Examples:
            >>> Occlusion(torch.nn.Identity(), window=4, stride=4).boxes((8,))
            [(slice(0, 4, None),), (slice(4, 8, None),)]
        """
        rank = len(size)
        window, stride = self._given
        sides = _sides(window, "window", rank)
        steps = _sides(stride, "stride", rank)
        starts = []
        for length, side, step, axis in zip(size, sides, steps, _AXES[rank], strict=True):
            if step > side and side < length:
                raise GradCAMError(
                    f"stride {step} is larger than the window {side} along the {axis}: "
                    "some pixels would never be occluded"
                )
            starts.append(
                [slice(s, min(s + side, length)) for s in window_starts(length, side, step)]
            )
        return list(itertools.product(*starts))

    def _chunks(
        self, windows: list[tuple[slice, ...]], device: torch.device
    ) -> Iterator[list[tuple[slice, ...]]]:
        size = self.batch_size or (4 if device.type == "cpu" else 64)
        for start in range(0, len(windows), size):
            yield windows[start : start + size]

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> OcclusionResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module)
        batch, channels = x.shape[:2]
        size = tuple(int(n) for n in x.shape[2:])
        windows = self.boxes(size)
        baseline = torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device)
        try:
            baseline = baseline.expand(channels, *size)
        except RuntimeError:
            raise GradCAMError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to the input's "
                f"{(channels, *size)}"
            ) from None
        coverage = torch.zeros(size, device=x.device)
        for box in windows:
            coverage[box] += 1
        passes = batch * len(windows)
        show = self.progress if self.progress is not None else passes > 200
        bar = tqdm(total=passes, desc="occlusion", unit="pass", disable=not show, file=sys.stderr)
        # inference_mode(False) turns grad mode on, so no_grad comes after it.
        with torch.inference_mode(False), torch.no_grad(), eval_mode(self.module), bar:
            # Every pass in the copies' layout, so that a drop is never a difference of two
            # layouts' roundings; through the folded copy when it matches the model.
            output = run_in_fast_layout(self.module, x, self.module, fast=True)
            resolved = resolve_targets(targets, output, batch, names=class_names(self.module))
            total = torch.zeros(batch, resolved.scores.shape[1], *size, device=x.device)
            folded, reference = self.folded.checked(x, output)
            run = CopyRunner(self.module, bar, folded)
            for b in range(batch):
                columns = fixed_targets(targets, resolved.classes[b], b)
                clean = scores_of(columns, reference, batch)[b]
                for chunk in self._chunks(windows, x.device):
                    copies = x[b].expand(len(chunk), channels, *size).clone()
                    for i, box in enumerate(chunk):
                        where: tuple[slice, ...] = (slice(None), *box)
                        copies[i][where] = baseline[where]
                    drops = clean - scores_of(columns, run(copies), len(chunk))
                    for i, box in enumerate(chunk):
                        where = (slice(None), *box)
                        total[b][where] += drops[i].view(-1, *(1,) * len(size))
        raw = total / coverage
        if not bool(torch.isfinite(raw).all()):
            raise GradCAMError("the model produced NaN or infinite scores on occluded images")
        return OcclusionResult(
            maps=normalize(raw, len(size)),
            scores=resolved.scores.float(),
            classes=resolved.classes,
            logits=_logits_or_none(output),
            raw=raw,
        )
