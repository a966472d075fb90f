"""What to explain: the scalar scores ``y^c`` whose gradients Grad-CAM follows.

A target is anything that turns the model output into one differentiable score per image:

* an ``int`` or a list of ints: the same class ids for every image (``y^c`` = logit ``c``);
* a ``(B, K)`` integer tensor: ``K`` class ids per image;
* :class:`TopK`: the ``k`` best-scoring classes of each image;
* a callable ``f(output) -> (B,)`` tensor, or a list of them: any differentiable score of any
  output (a caption word, a VQA answer, a region of a segmentation map).

Lists may mix ints and callables. Class scores are taken before the softmax, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor

from gradcam.errors import TargetError

__all__ = [
    "ResolvedTargets",
    "TargetLike",
    "TopK",
    "as_logits",
    "fixed_targets",
    "resolve_targets",
]

ScoreFn: TypeAlias = Callable[[Any], Tensor]
TargetLike: TypeAlias = "int | Sequence[int | ScoreFn] | Tensor | TopK | ScoreFn"


@dataclass(frozen=True)
class TopK:
    """The ``k`` classes with the highest scores, per image, best first.

    Example:
        >>> cam(x, TopK(5)).classes.shape
        torch.Size([1, 5])
    """

    k: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise TargetError(f"TopK needs a positive integer k, got {self.k!r}")


@dataclass(frozen=True)
class ResolvedTargets:
    """Targets evaluated on one model output.

    Attributes:
        scores: (B, K) differentiable scores ``y^c``.
        classes: (B, K) class ids; -1 where the target was a callable.
    """

    scores: Tensor
    classes: Tensor


def as_logits(output: Any) -> Tensor:
    """Find the (B, N) class-score tensor in a model output.

    Understands a tensor, a tuple or list (first element, as torchvision's auxiliary outputs),
    a mapping with ``"logits"`` (or a single tensor value), and objects with ``.logits``
    (Hugging Face outputs).

    Raises:
        TargetError: naming the output type when no class scores are found.
    """
    found: Any = output
    if isinstance(output, Tensor):
        found = output
    elif isinstance(output, Mapping):
        tensors = [v for v in output.values() if isinstance(v, Tensor)]
        found = output.get("logits", tensors[0] if len(tensors) == 1 else None)
    elif isinstance(output, (tuple, list)) and output:
        found = output[0]
    elif hasattr(output, "logits"):
        found = output.logits
    if not isinstance(found, Tensor):
        raise TargetError(
            f"cannot find class scores in a model output of type {type(output).__name__}; "
            "return a tensor, a tuple, a dict with 'logits' or an object with .logits, "
            "or pass callable targets f(output) -> (B,) scores"
        )
    if found.dim() != 2:
        raise TargetError(
            f"class targets need (B, num_classes) scores, but the model output has shape "
            f"{tuple(found.shape)}; pass callable targets f(output) -> (B,) scores instead"
        )
    return found


def _class_ids(ids: Tensor, batch: int, num_classes: int) -> Tensor:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise TargetError(f"class id {bad} is out of range: the model has {num_classes} classes")
    return ids.expand(batch, -1)


def _call_score(fn: ScoreFn, output: Any, batch: int) -> Tensor:
    score = fn(output)
    if not isinstance(score, Tensor):
        raise TargetError(
            f"target {getattr(fn, '__name__', fn)!r} returned {type(score).__name__}, "
            f"expected a ({batch},) tensor"
        )
    if score.shape == (batch, 1):
        score = score[:, 0]
    if score.shape != (batch,):
        raise TargetError(
            f"target {getattr(fn, '__name__', fn)!r} returned shape {tuple(score.shape)}, "
            f"expected ({batch},): one score per image"
        )
    return score


def resolve_targets(targets: TargetLike | None, output: Any, batch: int) -> ResolvedTargets:
    """Evaluate ``targets`` on a model ``output`` for a batch of ``batch`` images.

    ``None`` means the top-1 class. See the module docstring for the accepted forms.

    Raises:
        TargetError: for an unknown form, a class id out of range, or a callable that does not
            return one score per image.

    Example:
        >>> logits = torch.tensor([[1.0, 3.0, 2.0]])
        >>> resolve_targets(TopK(2), logits, 1).classes
        tensor([[1, 2]])
    """
    if targets is None:
        targets = TopK(1)
    if isinstance(targets, TopK):
        logits = as_logits(output)
        k = min(targets.k, logits.shape[1])
        classes = logits.detach().topk(k, dim=1).indices
        return ResolvedTargets(logits.gather(1, classes), classes)
    if isinstance(targets, Tensor):
        if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.dim() != 2:
            raise TargetError(
                f"a tensor of targets must hold integer class ids of shape (B, K); got "
                f"{targets.dtype} of shape {tuple(targets.shape)} (use a list for the same "
                "classes for every image, or ids.unsqueeze(1) for one class per image)"
            )
        logits = as_logits(output)
        if targets.shape[0] not in (1, batch) or targets.shape[1] == 0:
            raise TargetError(
                f"targets of shape {tuple(targets.shape)} do not fit a batch of {batch} images"
            )
        classes = _class_ids(targets.to(logits.device, torch.long), batch, logits.shape[1])
        return ResolvedTargets(logits.gather(1, classes), classes)
    items: Sequence[Any] = (
        [targets] if isinstance(targets, int) or callable(targets) else list(targets)
    )
    if not items:
        raise TargetError("targets is empty: give at least one class id or score function")
    columns: list[Tensor] = []
    classes_list: list[int] = []
    logits_cache: Tensor | None = None
    for item in items:
        if isinstance(item, bool) or not (isinstance(item, int) or callable(item)):
            raise TargetError(
                f"unsupported target {item!r} of type {type(item).__name__}: use class ids, "
                "TopK(k), a (B, K) tensor of ids, or callables f(output) -> (B,) scores"
            )
        if isinstance(item, int):
            if logits_cache is None:
                logits_cache = as_logits(output)
            _class_ids(torch.tensor([[item]]), batch, logits_cache.shape[1])
            columns.append(logits_cache[:, item])
            classes_list.append(item)
        else:
            columns.append(_call_score(item, output, batch))
            classes_list.append(-1)
    scores = torch.stack(columns, dim=1)
    classes = torch.tensor(classes_list, device=scores.device).expand(batch, -1)
    return ResolvedTargets(scores, classes)


def fixed_targets(targets: TargetLike | None, classes: Tensor) -> list[int | ScoreFn]:
    """The targets of one image as a list that no longer depends on the model output.

    ``TopK``, ``None`` and tensors become the class ids they resolved to (``classes``, the row
    of :attr:`ResolvedTargets.classes` for that image); ints and callables stay as they are.
    Methods that re-run the model on altered copies of an image (occlusion) explain these.
    """
    if targets is None or isinstance(targets, (TopK, Tensor)):
        return [int(c) for c in classes.tolist()]
    if isinstance(targets, int) or callable(targets):
        return [targets]
    return list(targets)
