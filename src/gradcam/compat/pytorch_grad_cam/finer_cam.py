"""pytorch-grad-cam's ``pytorch_grad_cam.finer_cam``: Finer-CAM's contrastive score
(gradcam's :mod:`gradcam.methods.finer_cam`) explained by the base class's registry method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gradcam.compat.pytorch_grad_cam.base_cam import BaseCAM, _as_targets
from gradcam.compat.pytorch_grad_cam.grad_cam import GradCAM
from gradcam.errors import TargetError
from gradcam.methods.finer_cam import contrastive_scores, nearest_classes
from gradcam.targets import as_logits

__all__ = ["DEFAULT_COMPARISON_CATEGORIES", "FinerCAM"]

DEFAULT_COMPARISON_CATEGORIES = (1, 2, 3)
"""pytorch-grad-cam's default ranks of the compared classes (0 is the target itself)."""


class _Contrastive:
    """The score of every image's top class (or of ``target_idx``) against the classes at
    ``ranks`` in the order of nearness of their logits (rank 0: the class itself), weighted by
    their softmax probabilities (:func:`~gradcam.methods.finer_cam.contrastive_scores`); a
    callable target of gradcam's methods: ``(B, N)`` output to ``(B,)`` scores."""

    def __init__(self, alpha: float, ranks: Sequence[int] | None, target_idx: int | None) -> None:
        self.alpha = alpha
        self.ranks = ranks
        self.target_idx = target_idx

    def __call__(self, output: Any) -> Tensor:
        logits = as_logits(output)
        batch, num_classes = logits.shape
        if self.ranks is None:
            ranks = list(DEFAULT_COMPARISON_CATEGORIES[: max(num_classes - 1, 0)])
        else:
            ranks = [int(r) for r in self.ranks if r < num_classes]
        if not ranks or min(ranks) < 0:
            raise TargetError(
                f"FinerCAM needs comparison_categories between 0 and {num_classes - 1} (ranks of "
                f"the classes nearest the target; the model has {num_classes} classes), got "
                f"{self.ranks!r}"
            )
        if self.target_idx is None:
            classes = logits.detach().argmax(dim=1, keepdim=True)
        else:
            classes = torch.full((batch, 1), int(self.target_idx), device=logits.device)
        nearest = nearest_classes(logits, classes, max(max(ranks), 1))
        ranked = torch.cat([classes[:, :, None], nearest], dim=2)
        references = ranked[:, :, ranks]
        return contrastive_scores(logits, classes, references, self.alpha, "softmax")[:, 0]


class FinerCAM:
    """Finer-CAM with pytorch-grad-cam's interface: ``FinerCAM(model, target_layers,
    reshape_transform=None, base_method=GradCAM)``, called as ``cam(input_tensor,
    targets=None, eigen_smooth=False, alpha=1, comparison_categories=None, target_idx=None)``.

    With ``targets=None`` each image's map explains
    ``s = y^c - alpha sum_d w_d y^d`` (:class:`gradcam.methods.finer_cam.FinerCAM`'s score),
    ``c`` its top class (or ``target_idx``) and ``d`` the classes at ranks
    ``comparison_categories`` (default 1, 2, 3) when the classes are sorted by
    ``|y^d - y^c|``, ``w_d`` their softmax probabilities renormalized; the base class
    (a class of this package) computes the map with its registry method, in the same forward
    pass. Given ``targets`` (such as ``FinerWeightedTarget``), it is the base class's call.
    pytorch-grad-cam divides by ``sum_d p_d + 1e-9`` where this divides by ``sum_d p_d``
    (see :class:`gradcam.methods.finer_cam.FinerCAM`).

    Examples:
        >>> from gradcam.compat.pytorch_grad_cam import FinerCAM
        >>> with FinerCAM(model, [model.features]) as cam:
        ...     grayscale = cam(x, alpha=0.6)
        >>> grayscale.shape
        (1, 128, 128)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Any], Any] | None = None,
        base_method: type[BaseCAM] = GradCAM,
    ) -> None:
        self.base_cam = base_method(model, target_layers, reshape_transform)

    def forward(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Any], Any]] | None = None,
        eigen_smooth: bool = False,
        alpha: float = 1,
        comparison_categories: Sequence[int] | None = None,
        target_idx: int | None = None,
    ) -> np.ndarray:
        """The (B, H, W) float32 maps in [0, 1] (see the class docstring)."""
        chosen: list[Any] | None = _as_targets(targets)
        if chosen is None:
            chosen = [_Contrastive(float(alpha), comparison_categories, target_idx)]
        return self.base_cam._forward(input_tensor, chosen, eigen_smooth).cpu().numpy()

    def __call__(
        self,
        input_tensor: Tensor,
        targets: Sequence[Callable[[Any], Any]] | None = None,
        eigen_smooth: bool = False,
        alpha: float = 1,
        comparison_categories: Sequence[int] | None = None,
        target_idx: int | None = None,
    ) -> np.ndarray:
        """:meth:`forward`."""
        return self.forward(
            input_tensor, targets, eigen_smooth, alpha, comparison_categories, target_idx
        )

    def __enter__(self) -> FinerCAM:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
