"""Finer-CAM (Zhang et al. 2025): a Grad-CAM of a class against its most similar classes."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gradcam.engine import check_input
from gradcam.errors import GradCAMError, TargetError
from gradcam.layers import LayerLike
from gradcam.methods.base import check_module
from gradcam.methods.gradcam import GradCAM
from gradcam.methods.registry import Needs, create_method, register
from gradcam.methods.results import FinerCAMResult
from gradcam.targets import TargetLike, TopK, as_logits, class_names, resolve_targets, target_list

__all__ = ["FinerCAM", "Weighting", "contrastive_scores", "nearest_classes"]

Weighting = Literal["softmax", "mean"]
_WEIGHTINGS = ("softmax", "mean")


def nearest_classes(logits: Tensor, classes: Tensor, count: int) -> Tensor:
    """The ``count`` classes whose scores are closest to each target's, nearest first.

    Args:
        logits: (B, N) class scores.
        classes: (B, K) target classes; a target is never its own reference.
        count: how many references per target (at most ``N - 1``).

    Returns:
        (B, K, count) class ids.

    Examples:
        >>> nearest_classes(torch.tensor([[5.0, 1.0, 4.5, 3.0]]), torch.tensor([[0]]), 2)
        tensor([[[2, 3]]])
    """
    scores = logits.detach()
    distances = (scores[:, None, :] - scores.gather(1, classes)[:, :, None]).abs()
    distances.scatter_(2, classes[:, :, None], math.inf)
    return distances.topk(count, dim=2, largest=False).indices


def contrastive_scores(
    logits: Tensor,
    classes: Tensor,
    references: Tensor,
    alpha: float = 1.0,
    weighting: Weighting = "softmax",
) -> Tensor:
    """Finer-CAM's objective ``y^c - alpha sum_d w_d y^d`` (B, K), differentiable in ``logits``.

    ``weighting="softmax"`` weights the references by their softmax probabilities,
    ``w_d = p_d / sum_d' p_d'`` (pytorch-grad-cam's ``FinerWeightedTarget``, whose
    ``sum_d p_d (y^c - alpha y^d) / (sum_d p_d + 1e-9)`` is the same up to its 1e-9; the
    weights are differentiated too, as there); ``"mean"`` weights them equally (torchcam).

    Args:
        logits: (B, N) class scores.
        classes: (B, K) target classes ``c``.
        references: (B, K, R) compared classes ``d``.
        alpha: the comparison strength.
        weighting: ``"softmax"`` or ``"mean"``.

    Examples:
        >>> logits = torch.tensor([[4.0, 2.0, 2.0]])
        >>> contrastive_scores(logits, torch.tensor([[0]]), torch.tensor([[[1, 2]]]))
        tensor([[2.]])
    """
    batch, count, refs = references.shape
    target = logits.gather(1, classes)
    compared = logits.gather(1, references.reshape(batch, count * refs)).view(batch, count, refs)
    if weighting == "softmax":
        weights = compared.softmax(dim=2)
    else:
        weights = torch.full_like(compared, 1.0 / refs)
    return target - alpha * (weights * compared).sum(dim=2)


def _target_count(targets: TargetLike | None) -> int:
    """How many targets per image ``targets`` asks for, knowable before the forward pass."""
    if targets is None or isinstance(targets, int):
        return 1
    if isinstance(targets, TopK):
        return targets.k
    if isinstance(targets, Tensor):
        return int(targets.shape[1]) if targets.dim() == 2 else 1  # resolving names the error
    if callable(targets):
        raise TargetError(
            "Finer-CAM compares classes: its targets must be class ids (ints, TopK, a tensor of "
            "ids), not score functions"
        )
    return len(target_list(targets))


class _Contrast:
    """The contrastive scores of one call, as K callable targets of the engine.

    Resolves the user's targets on the model output once (cached per output), then every
    column ``k`` is ``y^c - alpha sum_d w_d y^d`` for target ``k``. Keeps the classes and
    references it used for the result.
    """

    def __init__(
        self, targets: TargetLike | None, alpha: float, references: int, weighting: Weighting
    ) -> None:
        self.targets = targets
        self.alpha = alpha
        self.count = references
        self.weighting: Weighting = weighting
        self._output: Any = None
        self._scores: Tensor | None = None
        self.classes: Tensor | None = None
        self.references: Tensor | None = None
        self.names: tuple[str, ...] | None = None

    def column(self, k: int, output: Any) -> Tensor:
        """The contrastive score of target ``k`` for every image, (B,)."""
        if output is not self._output or self._scores is None:
            self._scores = self._evaluate(output)
            self._output = output
        if k >= self._scores.shape[1]:
            raise TargetError(f"{self.targets!r} asks for more classes than the model has")
        return self._scores[:, k]

    def _evaluate(self, output: Any) -> Tensor:
        logits = as_logits(output)
        batch, num_classes = logits.shape
        if num_classes < 2:
            raise TargetError("Finer-CAM needs a model with at least two classes to compare")
        classes = resolve_targets(self.targets, output, batch, names=self.names).classes
        if bool((classes < 0).any()):
            raise TargetError(
                "Finer-CAM compares classes: its targets must be class ids, not score functions"
            )
        references = nearest_classes(logits, classes, min(self.count, num_classes - 1))
        self.classes, self.references = classes.detach(), references
        return contrastive_scores(logits, classes, references, self.alpha, self.weighting)


@register(
    "finer-cam",
    title="Finer-CAM",
    kind="heatmap",
    needs=Needs(
        layer=True,
        layer_gradients=True,
        forwards="not shared: its own pass explains contrastive scores, not class scores",
    ),
    citation="Zhang et al. 2025 (arXiv:2501.11309)",
    ranks=(1, 2, 3),
)
class FinerCAM:
    """Finer-CAM (Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for
    Visual Explanation", CVPR 2025, arXiv:2501.11309).

    A Grad-CAM (or a variant: ``base``) of a contrastive score instead of the class score:
    the target's score minus the scores of the ``references`` classes closest to it,

    .. math::
        s^c = y^c - \\alpha \\sum_{d \\in D_c} w_d\\, y^d, \\qquad
        L^c = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k^{s^c} A^k\\Big)

    so that the map keeps what tells ``c`` apart from its look-alikes and drops what they
    share. ``D_c`` holds the classes whose logits are nearest to ``y^c`` (the target
    excluded). The weights ``w_d`` are the references' softmax probabilities renormalized over
    ``D_c`` (``weighting="softmax"``, pytorch-grad-cam's ``FinerWeightedTarget``; the weights
    are differentiated too, as there) or ``1 / |D_c|`` (``"mean"``, torchcam's ``FinerCAM``).
    pytorch-grad-cam's defaults are these (``alpha=1``, three references, softmax); torchcam's
    are ``alpha=0.6`` (its ``gamma``) and ``weighting="mean"``.

    pytorch-grad-cam divides by ``P + 1e-9``, with ``P = sum_d p_d`` the references' softmax
    mass, where this divides by ``P``: its score is this one times ``P / (P + 1e-9)``. The
    epsilon changes the map where ``P`` is small (a confident model: ``P`` near 1e-9 scales
    the score down and skews its gradient), so it is left out; on a random ResNet-50 the two
    maps differ by 4e-5 of their maximum. torchcam's maps are matched to float precision.

    The result's ``scores`` are the contrastive scores ``s^c``, its ``classes`` the targets
    ``c`` and its ``references`` the classes ``D_c``. One call runs one forward pass and the
    base method's backward pass on the contrastive scores (through callable targets); it does
    not share the planner's pass, whose targets are the plain class scores.

    Args:
        module: the model.
        layer: the layer ``A``, as a submodule or a dotted name; ``None`` picks the last
            convolutional feature-map layer.
        base: the registered Grad-CAM variant that makes the map (a method built on
            :class:`~gradcam.methods.gradcam.GradCAM`, e.g. ``gradcam``).
        alpha: the comparison strength (torchcam's ``gamma``); 0 gives the base method.
        references: how many similar classes to compare with (at most the classes but one).
        weighting: how the references are averaged: ``softmax`` or ``mean``.

    Examples:
        >>> result = FinerCAM(model, "features")(x, gradcam.TopK(1))
        >>> result.classes, result.references  # (B, K), (B, K, 3): the classes told apart
        (tensor([[3]]), tensor([[[4, 7, 2]]]))
        >>> [shapes.class_names[c] for c in result.references[0, 0]]  # the star's look-alikes
        ['cross', 'crescent', 'triangle']
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        base: str = "gradcam",
        alpha: float = 1.0,
        references: int = 3,
        weighting: Weighting = "softmax",
    ) -> None:
        self.module = check_module(module)
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise GradCAMError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if isinstance(references, bool) or not isinstance(references, int) or references < 1:
            raise GradCAMError(f"references must be a positive integer, got {references!r}")
        if weighting not in _WEIGHTINGS:
            raise GradCAMError(
                f"weighting must be one of {', '.join(_WEIGHTINGS)}; got {weighting!r}"
            )
        built = create_method(base, module, layer)
        if not isinstance(built, GradCAM):
            raise GradCAMError(f"base must be a Grad-CAM variant (built on GradCAM), got {base!r}")
        self.base: GradCAM = built
        self.alpha = float(alpha)
        self.references = references
        self.weighting: Weighting = weighting

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> FinerCAMResult:
        """Explain class ``targets`` (default: the top-1 class) for the batch ``x``."""
        x = check_input(x, self.module)
        count = _target_count(targets)
        contrast = _Contrast(targets, self.alpha, self.references, self.weighting)
        contrast.names = class_names(self.module)
        columns = [partial(contrast.column, k) for k in range(count)]
        result = self.base(x, columns)
        assert contrast.classes is not None and contrast.references is not None
        return FinerCAMResult(
            raw=result.raw,
            maps=result.maps,
            weights=result.weights,
            scores=result.scores,
            classes=contrast.classes,
            logits=result.logits,
            layer=result.layer,
            references=contrast.references,
        )
