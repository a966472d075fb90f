"""Deep Feature Factorization (Collins et al. 2018): concepts found by non-negative matrix
factorization of a layer's features, and the concept that best explains each target."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gradcam.engine import check_input, spatial_size
from gradcam.errors import GradCAMError, TargetError
from gradcam.layers import LayerLike, resolve_layer
from gradcam.maps import normalize, upsample
from gradcam.methods.activation import layer_pass
from gradcam.methods.gradcam import LayerMethod
from gradcam.methods.registry import Needs, check_rank, register
from gradcam.methods.results import CAMResult
from gradcam.targets import TargetLike

__all__ = [
    "ConceptResult",
    "DeepFeatureFactorization",
    "Factorization",
    "factorize_features",
    "nmf",
]


def _sweep(w: Tensor, hht: Tensor, xht: Tensor) -> Tensor:
    """One cyclic coordinate-descent pass over the columns of ``w`` (in place) for
    ``min |X - W H|^2`` with ``W >= 0``; returns the sum of |projected gradient| it met."""
    violation = w.new_zeros(())
    for t in range(w.shape[1]):
        grad = w @ hht[:, t] - xht[:, t]
        column = w[:, t]
        violation += torch.where(column == 0, grad.clamp(max=0), grad).abs().sum()
        if hht[t, t] != 0:
            w[:, t] = (column - grad / hht[t, t]).clamp(min=0)
    return violation


def nmf(
    x: Tensor, n: int, *, max_iter: int = 200, tol: float = 1e-4, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Non-negative matrix factorization ``x ~ W H`` of an (m, p) non-negative matrix:
    ``W`` (m, n) and ``H`` (n, p), both non-negative, minimizing ``|x - W H|_F^2``.

    Cyclic coordinate descent (HALS; Cichocki and Phan 2009) alternating ``W`` then ``H``,
    from a random start ``|N(0, 1)| sqrt(mean(x) / n)`` drawn with numpy's
    ``RandomState(seed)`` (``H`` first, then ``W``), stopping when the summed projected
    gradient of a pass falls to ``tol`` times that of the first pass, or after ``max_iter``
    passes. This is scikit-learn's ``NMF(init="random", solver="cd", random_state=seed)``, which
    pytorch-grad-cam's Deep Feature Factorization uses, run in the dtype of ``x``.

    Examples:
        >>> w, h = nmf(torch.tensor([[1.0, 2.0], [2.0, 4.0]]), 1)
        >>> (w @ h).round(decimals=3)
        tensor([[1., 2.],
                [2., 4.]])
    """
    m, p = x.shape
    rng = np.random.RandomState(seed)
    scale = torch.sqrt(x.mean() / n)
    h = torch.from_numpy(rng.standard_normal((n, p))).to(x).mul(scale).abs()
    w = torch.from_numpy(rng.standard_normal((m, n))).to(x).mul(scale).abs()
    ht = h.T.contiguous()
    first = 0.0
    for step in range(max_iter):
        violation = float(_sweep(w, ht.T @ ht, x @ ht) + _sweep(ht, w.T @ w, x.T @ w))
        if step == 0:
            first = violation
        if first == 0 or violation / first <= tol:
            break
    return w, ht.T.contiguous()


@dataclass(frozen=True)
class Factorization:
    """A batch's features factorized into concepts, ``A - o ~ W H``.

    Attributes:
        basis: (n, C) ``W^T``, the concepts' non-negative directions in feature space.
        offset: (C,) ``o``, each channel's minimum over the batch (zero after a ReLU).
        maps: (B, n, h, w) ``H``, how much of each concept each position holds.
    """

    basis: Tensor
    offset: Tensor
    maps: Tensor

    @property
    def embeddings(self) -> Tensor:
        """(n, C) the concepts in feature space, ``W^T + o`` (pytorch-grad-cam's concepts)."""
        return self.basis + self.offset


def factorize_features(
    activations: Tensor, n: int, *, max_iter: int = 200, tol: float = 1e-4, seed: int = 0
) -> Factorization:
    """Deep Feature Factorization of a batch's (B, C, h, w) features into ``n`` concepts.

    The (C, B*h*w) matrix ``A`` of every image's feature vectors, shifted per channel by its
    minimum ``o`` so that it is non-negative, is factorized as ``A - o ~ W H`` (:func:`nmf`).
    The factorization is joint: the concepts are shared by the images of the batch.

    Examples:
        >>> found = factorize_features(torch.rand(2, 16, 7, 7), 3)
        >>> found.embeddings.shape, found.maps.shape
        (torch.Size([3, 16]), torch.Size([2, 3, 7, 7]))
    """
    batch, channels, h, w = activations.shape
    matrix = activations.transpose(0, 1).reshape(channels, -1)
    offset = matrix.amin(dim=1, keepdim=True)
    basis, coefficients = nmf(matrix - offset, n, max_iter=max_iter, tol=tol, seed=seed)
    return Factorization(
        basis=basis.T.contiguous(),
        offset=offset[:, 0],
        maps=coefficients.reshape(n, batch, h, w).transpose(0, 1).contiguous(),
    )


@dataclass(frozen=True)
class ConceptResult(CAMResult):
    """Deep Feature Factorization: every concept, and per target the concept that contributes
    most to its score.

    Attributes:
        raw: (B, K, h, w) the map of the concept chosen for each target (``concepts`` at
            ``chosen``), non-negative.
        maps: (B, K, H, W) ``raw`` upsampled and normalized, like every heatmap.
        weights: ``None``.
        concepts: (B, n, h, w) every concept's map ``H``, unnormalized.
        embeddings: (n, C) the concepts in the layer's feature space (``W^T + o``).
        concept_scores: (n, N) the model's head applied to each embedding, as pytorch-grad-cam
            labels concepts (``computation_on_concepts``).
        contributions: (B, K, n) each concept's share of each target's score:
            ``(w_c . W_j) mean_ij H_j``, with ``w_c`` the head's weights of class ``c``.
        chosen: (B, K) the concept with the largest contribution, per target.
    """

    concepts: Tensor
    embeddings: Tensor
    concept_scores: Tensor
    contributions: Tensor
    chosen: Tensor


@register(
    "dff",
    title="Deep Feature Factorization",
    kind="heatmap",
    needs=Needs(layer=True, forwards="one no-grad forward pass"),
    citation="Collins et al. 2018, ECCV",
)
class DeepFeatureFactorization(LayerMethod):
    """Deep Feature Factorization (Collins, Achanta and Suesstrunk, "Deep Feature
    Factorization for Concept Discovery", ECCV 2018).

    The layer's features of the whole batch, a non-negative (C, B*h*w) matrix ``A`` (shifted
    by each channel's minimum ``o`` where needed), are factorized into ``n_concepts``
    concepts, ``A - o ~ W H`` with ``W, H >= 0`` (:func:`factorize_features`): column ``W_j``
    is concept ``j`` in feature space, and row ``H_j`` its map, where it is in each image.

    DFF finds concepts, not classes. To give each target a heatmap, as every method does, the
    concepts are read through the model's head, a linear layer ``y^c = w_c . GAP(A) + b_c`` on
    the global average of ``A``. On the factorization, ``GAP(A) = sum_j W_j mean(H_j) + o``,
    so concept ``j`` contributes ``(w_c . W_j) mean(H_j)`` to ``y^c``; each target's map is
    the map ``H_j`` of the concept that contributes most. The result also holds every
    concept's map, its embedding ``W_j + o`` and the head's scores of that embedding
    (pytorch-grad-cam's labels of a concept). Class targets only; models without such a head
    get a clear error (the factorization alone is :func:`factorize_features`).

    Costs one no-grad forward pass and the factorization (at most ``max_iter`` passes). The
    concepts are shared by the images of a batch: a batch's result differs from the results
    of its images one at a time, by design.

    Args:
        module: the model.
        layer: the layer ``A`` (default: the last convolutional feature maps).
        n_concepts: the number of concepts ``n``.
        head: the linear head (module or dotted name); ``None`` finds the last ``nn.Linear``
            whose input is the global average of ``A``.
        max_iter: the most coordinate-descent passes of the factorization.
        tol: stop when a pass's projected gradient falls to this fraction of the first's.
        seed: the seed of the factorization's random start (numpy's ``RandomState``).

    Examples:
        >>> result = DeepFeatureFactorization(model, n_concepts=5)(x, gradcam.TopK(2))
        >>> result.concepts.shape, result.chosen  # (B, n, h, w); the concept of each class
        (torch.Size([1, 5, 16, 16]), tensor([[0, 0]]))
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        *,
        n_concepts: int = 5,
        head: nn.Module | str | None = None,
        max_iter: int = 200,
        tol: float = 1e-4,
        seed: int = 0,
    ) -> None:
        for name, value in (("n_concepts", n_concepts), ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GradCAMError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(tol, (int, float)) or not tol >= 0:
            raise GradCAMError(f"tol must be a non-negative number, got {tol!r}")
        super().__init__(module, layer)
        self._head = None if head is None else resolve_layer(module, head)
        if self._head is not None and not isinstance(self._head[0], nn.Linear):
            raise GradCAMError(f"head {self._head[1]!r} is not an nn.Linear layer")
        self.n_concepts = n_concepts
        self.max_iter = max_iter
        self.tol = float(tol)
        self.seed = seed

    def _candidates(self) -> list[tuple[nn.Module, str]]:
        if self._head is not None:
            return [(self._head[0], self._head[1])]
        return [(m, n) for n, m in self.module.named_modules() if isinstance(m, nn.Linear)]

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> ConceptResult:
        """Explain class ``targets`` (default: the top-1 class) for the batch ``x``."""
        x = check_input(x, self.module)
        check_rank(
            self,
            x,
            "its concepts are factorized over (h, w) maps; use Grad-CAM or "
            "Eigen-CAM, which explain signals and volumes",
        )
        candidates = self._candidates()
        found = layer_pass(self.module, self.layer_for(x), x, targets, watch=candidates)
        if bool((found.classes < 0).any()):
            raise TargetError("Deep Feature Factorization explains class ids only")
        activations = found.activations.float()
        pooled = activations.mean(dim=(2, 3))
        heads = [
            module
            for (module, _), seen in zip(candidates, found.inputs, strict=True)
            if isinstance(module, nn.Linear)
            and seen is not None
            and seen.shape == pooled.shape
            and torch.allclose(seen.float(), pooled, rtol=1e-3, atol=1e-5)
        ]
        if not heads:
            raise GradCAMError(
                f"Deep Feature Factorization reads its concepts through a linear head on the "
                f"global average of {found.layer!r}, and this model has none (name it with "
                "head=...; or factorize the features with factorize_features)"
            )
        head = heads[-1]
        found_concepts = factorize_features(
            activations, self.n_concepts, max_iter=self.max_iter, tol=self.tol, seed=self.seed
        )
        concepts, embeddings = found_concepts.maps, found_concepts.embeddings
        weight = head.weight.detach().float()
        bias = None if head.bias is None else head.bias.detach().float()
        concept_scores = torch.nn.functional.linear(embeddings, weight, bias)
        # (w_c . W_j) * mean(H_j): (B, K, n)
        per_unit = weight[found.classes] @ found_concepts.basis.T
        contributions = per_unit * concepts.mean(dim=(2, 3)).unsqueeze(1)
        chosen = contributions.argmax(dim=2)
        index = chosen[:, :, None, None].expand(-1, -1, *concepts.shape[-2:])
        raw = concepts.gather(1, index)
        return ConceptResult(
            raw=raw,
            maps=normalize(upsample(raw, spatial_size(x)), x.dim() - 2),
            weights=None,
            scores=found.scores,
            classes=found.classes,
            logits=found.logits,
            layer=found.layer,
            concepts=concepts,
            embeddings=embeddings,
            concept_scores=concept_scores,
            contributions=contributions,
            chosen=chosen,
        )
