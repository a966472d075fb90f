"""How a model's confidence moves when an image is edited by its map: ROAD, confidence change,
drop and increase in confidence, and ARCC.

These are the perturbation metrics pytorch-grad-cam 1.5.7 ships, written once here for
gradcam's maps (``result.maps``: (B, K, H, W) in [0, 1] at input size), served by the
``road`` and ``confidence`` protocols of ``gradcam evaluate`` and by
:mod:`gradcam.compat.pytorch_grad_cam.metrics`. Every function is batched: one forward pass
per edited copy of the batch, never one per image.

A class's score is its logit, or with ``softmax=True`` its probability (pytorch-grad-cam's
``ClassifierOutputTarget`` and ``ClassifierOutputSoftmaxTarget``). For an image ``x`` with map
``M`` and an edited copy ``x'``, the confidence change is ``s(x') - s(x)``.

* **ROAD** (Rong et al., *A Consistent and Efficient Evaluation Strategy for Attribution
  Methods*, ICML 2022): remove a share of the pixels and fill them by noisy linear imputation
  (:func:`noisy_linear_imputation`). Most relevant first (MoRF) at percentile ``p`` removes the
  pixels with ``M >= percentile_p(M)`` (the top ``100 - p`` %: a faithful map drops the score
  most); least relevant first (LeRF) removes those with ``1 - M >= percentile_p(1 - M)`` (the
  bottom ``100 - p`` %: a faithful map keeps the score). Each is averaged over percentiles;
  ``combined = (LeRF - MoRF) / 2``, higher is better.
* **Confidence change** of the image multiplied by its map, ``x' = x * M``; the **drop in
  confidence** is ``max(-change, 0)`` (lower is better) and the **increase in confidence**
  ``[change > 0]`` (the share of images whose score rose: higher is better).
* **ARCC** (pytorch-grad-cam 1.5.7): the harmonic mean of coherency (the Pearson correlation of
  the map with the map of ``x * M``, mapped to [0, 1] as ``(r + 1) / 2``), simplicity
  (``1 - complexity``, complexity being the mean of ``|M|``) and ROAD
  (``clip(2 * combined, 0, 1)`` over percentiles 20, 40, 60, 80), each with an ``1e-8`` guard:
  ``3 / (1 / coherency + 1 / (1 - complexity) + 1 / road)``.

Examples:
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> x, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
    >>> confidence_change(net, x, maps, [0, 1]).shape
    torch.Size([2])
    >>> road(net, x, maps, [0, 1], percentiles=(50,)).keys()
    dict_keys(['morf', 'lerf', 'combined'])
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from gradcam.errors import GradCAMError
from gradcam.evaluate.base import (
    Progress,
    Protocol,
    Scored,
    Scorer,
    finished,
    no_progress,
    setting,
)
from gradcam.evaluate.datasets import Sample
from gradcam.evaluate.registry import register_protocol
from gradcam.methods import create
from gradcam.methods.registry import GRAD_CAM, check_method
from gradcam.models import LoadedModel
from gradcam.targets import as_logits

__all__ = [
    "ROAD_PERCENTILES",
    "ARCCScores",
    "Confidence",
    "Road",
    "arcc",
    "arcc_of",
    "class_scores",
    "coherency",
    "complexity",
    "confidence_change",
    "drop_in_confidence",
    "increase_in_confidence",
    "noisy_linear_imputation",
    "removal_mask",
    "road",
]

#: pytorch-grad-cam's and the ROAD paper's percentiles.
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: ARCC's ROAD percentiles (pytorch-grad-cam 1.5.7).
ARCC_PERCENTILES = (20, 40, 60, 80)

# ROAD's imputation: a removed pixel is the weighted mean of its 8 neighbours, 1/6 for the four
# that share an edge and 1/12 for the diagonals (those outside the image left out).
_NEIGHBOURS = (
    (-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
    (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12),
)  # fmt: skip
_EPS = 1e-8

Classes = Sequence[int] | Tensor | Sequence[Callable[[Any], Any]]
"""One class id per image, or one per-image target per image: a callable of that image's
model output (pytorch-grad-cam's ``ClassifierOutputTarget(c)``), as
:mod:`gradcam.compat.pytorch_grad_cam.metrics` passes them."""
_Ids = Tensor | list[Callable[[Any], Any]]


def class_scores(model: nn.Module, x: Tensor, classes: _Ids, softmax: bool = False) -> Tensor:
    """Each image's score, (B,) on the CPU: its class's logit (``softmax``: probability), or
    its per-image target called on its model output (``classes`` a list of callables).

    Examples:
        >>> x = torch.arange(4.0).view(2, 2, 1, 1)
        >>> class_scores(torch.nn.Flatten(), x, torch.tensor([1, 0]))
        tensor([1., 2.])
    """
    with torch.no_grad():
        output = model(x)
        if isinstance(classes, list):
            if softmax:
                output = as_logits(output).float().softmax(dim=1)
            # pytorch-grad-cam's convention: each target called on its image's output.
            return torch.stack(
                [
                    torch.as_tensor(t(row)).float().reshape(())
                    for t, row in zip(classes, output, strict=True)
                ]
            ).cpu()
        logits = as_logits(output).float()
    if softmax:
        logits = logits.softmax(dim=1)
    return logits.gather(1, classes.view(-1, 1).to(logits.device)).squeeze(1).cpu()


def _check(x: Tensor, maps: Tensor, classes: Classes) -> tuple[Tensor, _Ids]:
    """Maps as (B, H, W) float on the input's device, classes as a (B,) long tensor (or the
    list of per-image targets)."""
    maps = torch.as_tensor(maps)
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if x.dim() != 4 or maps.shape != (x.shape[0], *x.shape[-2:]):
        raise GradCAMError(
            f"maps must be (B, H, W) of the input's batch and size {tuple(x.shape)}, got "
            f"{tuple(maps.shape)}"
        )
    if not bool(torch.isfinite(maps).all()):
        raise GradCAMError("maps hold NaN or infinite values")
    ids: _Ids
    if isinstance(classes, Sequence) and classes and all(callable(c) for c in classes):
        ids = [c for c in classes if callable(c)]
        count = len(ids)
    else:
        ids = torch.as_tensor(classes, dtype=torch.long).flatten()
        count = ids.numel()
    if count != x.shape[0]:
        raise GradCAMError(f"give one class per image: {x.shape[0]} images, {count} classes")
    return maps.to(x.device, torch.float32), ids


def removal_mask(map2d: Tensor, percentile: float, *, most_relevant_first: bool) -> Tensor:
    """The pixels ROAD removes at ``percentile``: ``M >= percentile(M)`` most relevant first,
    ``1 - M >= percentile(1 - M)`` least relevant first (numpy's linear percentile).

    Examples:
        >>> m = torch.arange(10.0).view(2, 5) / 9
        >>> removal_mask(m, 80, most_relevant_first=True).sum().item()
        2
        >>> removal_mask(m, 80, most_relevant_first=False).sum().item()
        2
    """
    if not 0 <= percentile <= 100:
        raise GradCAMError(f"a percentile must be between 0 and 100, got {percentile}")
    values = map2d.detach().double().cpu().numpy()
    if not most_relevant_first:
        values = 1.0 - values
    return torch.from_numpy(values >= np.percentile(values, percentile))


def noisy_linear_imputation(
    image: Tensor, removed: Tensor, *, noise: float = 0.01, generator: torch.Generator | None = None
) -> Tensor:
    """ROAD's noisy linear imputation of the ``removed`` pixels of a (C, H, W) image.

    Each removed pixel ``i`` takes the weighted mean of its in-image neighbours ``N(i)``,
    ``x_i = sum_j w_ij x_j / sum_j w_ij`` (``w`` 1/6 across an edge, 1/12 across a corner),
    where a removed neighbour is itself unknown: one sparse linear system for all of them, per
    channel; then Gaussian noise of standard deviation ``noise`` is added to the filled
    pixels. Kept pixels are returned as they were. With no pixel kept there is nothing to
    interpolate from: every pixel is set to 0 (the dataset mean after normalization), plus
    the noise.

    Examples:
        >>> image = torch.tensor([[[1.0, 2.0, 3.0]]])
        >>> noisy_linear_imputation(image, torch.tensor([[False, True, False]]), noise=0.0)
        tensor([[[1., 2., 3.]]])
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    removed = removed.cpu().bool()
    flat = image.detach().cpu().double().reshape(channels, -1)
    gone = removed.flatten().numpy()
    where = np.flatnonzero(gone)
    out = flat.clone()
    if where.size == 0:
        return image.clone()
    if where.size == gone.size:
        out.zero_()
    else:
        var = np.full(gone.size, -1, dtype=np.int64)
        var[where] = np.arange(where.size)
        rows_, cols_ = np.divmod(where, width)
        diag = np.zeros(where.size)
        rhs = np.zeros((where.size, channels))
        pos_i: list[np.ndarray] = []
        pos_j: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        values = flat.numpy()
        for dy, dx, w in _NEIGHBOURS:
            r, c = rows_ + dy, cols_ + dx
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            eq = np.flatnonzero(inside)
            neighbour = r[inside] * width + c[inside]
            diag[eq] += w
            unknown = gone[neighbour]
            pos_i.append(eq[unknown])
            pos_j.append(var[neighbour[unknown]])
            vals.append(np.full(int(unknown.sum()), -w))
            rhs[eq[~unknown]] += w * values[:, neighbour[~unknown]].T
        system = coo_matrix(
            (
                np.concatenate([diag, *vals]),
                (
                    np.concatenate([np.arange(where.size), *pos_i]),
                    np.concatenate([np.arange(where.size), *pos_j]),
                ),
            ),
            shape=(where.size, where.size),
        ).tocsc()
        solved = np.asarray(spsolve(system, rhs)).reshape(where.size, channels)
        out[:, where] = torch.from_numpy(solved.T.copy())
    if noise:
        out[:, where] += noise * torch.randn(
            channels, where.size, generator=generator, dtype=torch.float64
        )
    return out.reshape(channels, height, width).to(image.dtype).to(image.device)


def confidence_change(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    classes: Classes,
    *,
    softmax: bool = False,
    edit: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """``s(x') - s(x)`` per image for the class of each image: ``x' = edit(x, maps)``, by
    default ``x * M`` (pytorch-grad-cam's ``CamMultImageConfidenceChange``).

    Args:
        model: the classifier.
        x: (B, C, H, W) inputs, as the model takes them.
        maps: (B, H, W) maps at input size (one per image: the class's map).
        classes: one class id per image.
        softmax: score probabilities instead of logits.
        edit: the edit ``(x, maps) -> x'``.

    Returns:
        A (B,) float tensor.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x = torch.ones(1, 1, 2, 2)
        >>> with torch.no_grad():
        ...     _ = net[1].weight.fill_(1.0); _ = net[1].bias.zero_()
        >>> confidence_change(net, x, torch.full((1, 2, 2), 0.5), [0])
        tensor([-2.])
    """
    maps, ids = _check(x, maps, classes)
    edited = edit(x, maps) if edit is not None else x * maps.unsqueeze(1)
    return class_scores(model, edited, ids, softmax) - class_scores(model, x, ids, softmax)


def drop_in_confidence(
    model: nn.Module, x: Tensor, maps: Tensor, classes: Classes, *, softmax: bool = False
) -> Tensor:
    """``max(s(x) - s(x * M), 0)`` per image (pytorch-grad-cam's ``DropInConfidence``)."""
    return (-confidence_change(model, x, maps, classes, softmax=softmax)).clamp(min=0)


def increase_in_confidence(
    model: nn.Module, x: Tensor, maps: Tensor, classes: Classes, *, softmax: bool = False
) -> Tensor:
    """``1.0`` where ``s(x * M) > s(x)``, else ``0.0`` (``IncreaseInConfidence``)."""
    return (confidence_change(model, x, maps, classes, softmax=softmax) > 0).float()


def road(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    classes: Classes,
    *,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = 0.01,
    softmax: bool = True,
    seed: int = 0,
) -> dict[str, Tensor]:
    """ROAD's MoRF and LeRF confidence changes, each averaged over ``percentiles``, and their
    combination ``(LeRF - MoRF) / 2``, per image (see the module docstring).

    The imputation noise is drawn from a generator seeded with ``seed``, so a call is
    repeatable; ``noise=0`` makes it exact.

    Returns:
        ``{"morf": (B,), "lerf": (B,), "combined": (B,)}``.
    """
    maps, ids = _check(x, maps, classes)
    if not percentiles:
        raise GradCAMError("ROAD needs at least one percentile")
    if not (noise >= 0 and np.isfinite(noise)):
        raise GradCAMError(f"noise must be a finite number at least 0, got {noise}")
    generator = torch.Generator().manual_seed(seed)
    base = class_scores(model, x, ids, softmax)
    means = {}
    for key, most in (("morf", True), ("lerf", False)):
        changes = []
        for p in percentiles:
            edited = torch.stack(
                [
                    noisy_linear_imputation(
                        x[b],
                        removal_mask(maps[b], p, most_relevant_first=most),
                        noise=noise,
                        generator=generator,
                    )
                    for b in range(x.shape[0])
                ]
            )
            changes.append(class_scores(model, edited, ids, softmax) - base)
        means[key] = torch.stack(changes).mean(dim=0)
    return {**means, "combined": (means["lerf"] - means["morf"]) / 2}


def complexity(maps: Tensor) -> Tensor:
    """The mean of ``|M|`` over each map's pixels: 0 for an empty map, 1 for a full one.

    Examples:
        >>> complexity(torch.tensor([[[0.0, 1.0], [0.5, 0.5]]]))
        tensor([0.5000])
    """
    return torch.as_tensor(maps).flatten(1).abs().mean(dim=1).float()


def coherency(maps: Tensor, again: Tensor) -> Tensor:
    """``(r + 1) / 2`` per image, ``r`` the Pearson correlation of each map with ``again``
    (the map of ``x * M``), ``1e-8`` guarding constant maps.

    Examples:
        >>> m = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])
        >>> coherency(m, m).item(), round(coherency(m, 1 - m).item(), 6)
        (1.0, 0.0)
    """
    a = torch.as_tensor(maps).flatten(1).double()
    b = torch.as_tensor(again).flatten(1).double()
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    n = a.shape[1] - 1
    r = (
        (a * b).sum(1)
        / n
        / ((a.square().sum(1) / n).sqrt() * (b.square().sum(1) / n).sqrt() + _EPS)
    )
    return ((r + 1) / 2).float()


@dataclass(frozen=True)
class ARCCScores:
    """ARCC and its three parts, per image, each (B,)."""

    arcc: Tensor
    coherency: Tensor
    complexity: Tensor
    road: Tensor


def arcc(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    classes: Classes,
    explain: Callable[[Tensor, Tensor], Tensor],
    *,
    percentiles: Sequence[float] = ARCC_PERCENTILES,
    noise: float = 0.01,
    softmax: bool = True,
    seed: int = 0,
) -> ARCCScores:
    """ARCC: the harmonic mean of coherency, ``1 - complexity`` and ROAD (module docstring).

    Args:
        explain: ``explain(x', classes) -> (B, H, W)`` maps of the same method for the edited
            images ``x' = x * M``.
    """
    maps, ids = _check(x, maps, classes)
    coherent = coherency(maps, explain(x * maps.unsqueeze(1), ids))  # type: ignore[arg-type]
    scores = road(
        model, x, maps, ids, percentiles=percentiles, noise=noise, softmax=softmax, seed=seed
    )
    return arcc_of(coherent, complexity(maps), scores["combined"])


def arcc_of(coherent: Tensor, complex_: Tensor, combined: Tensor) -> ARCCScores:
    """ARCC from its parts: coherency, complexity and ROAD's ``combined``, each (B,).

    .. math::
        \\mathrm{ARCC} = \frac{3}{1 / (c + \\epsilon) + 1 / (1 - k + \\epsilon)
        + 1 / (\\mathrm{clip}(2 r, 0, 1) + \\epsilon)}, \\qquad \\epsilon = 10^{-8}

    Examples:
        >>> one = torch.ones(1)
        >>> round(arcc_of(one, 0 * one, one / 2).arcc.item(), 6)
        1.0
    """
    faithful = (2 * combined).clamp(0, 1)
    harmonic = 3 / (1 / (coherent + _EPS) + 1 / (1 - complex_ + _EPS) + 1 / (faithful + _EPS))
    return ARCCScores(harmonic, coherent, complex_, faithful)


class _Explainers:
    """Each method built once per process; the top-1 class and each method's input-size maps."""

    def __init__(
        self, loaded: LoadedModel, methods: Sequence[str], options: dict[str, dict[str, Any]]
    ) -> None:
        self.module = loaded.module
        self.built = {
            m: create(m, loaded.module, loaded.default_layer, **options.get(m, {})) for m in methods
        }

    def top1(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            top: Tensor = as_logits(self.module(x)).argmax(dim=1).cpu()
        return top

    def maps(self, method: str, x: Tensor, classes: Tensor) -> Tensor:
        return _input_maps(self.built[method](x, classes.view(-1, 1)), x)


def _seed(sample: Sample) -> int:
    """The imputation noise's seed for an image: its file name's, the same in any process."""
    return zlib.crc32(sample.path.name.encode("utf-8", "surrogatepass"))


def _input_maps(result: Any, x: Tensor) -> Tensor:
    """A method's (B, H, W) map in [0, 1] at input size, whatever its kind."""
    maps: Tensor = result.maps[:, 0]
    if maps.dim() == 4:  # pixel space: (B, C, H, W) gradients
        maps = maps.abs().sum(dim=1)
        top = maps.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)
        maps = maps / top
    return maps.float().to(x.device)


def _means(rows: Sequence[dict[str, Any]], method: str, keys: Sequence[str]) -> dict[str, float]:
    return {
        k: round(float(np.mean([r[method][k] for r in rows])), 4) if rows else float("nan")
        for k in keys
    }


#: The per-method columns of each protocol's rows and summary, declared once.
ROAD_COLUMNS = ("morf", "lerf", "combined")
CONFIDENCE_COLUMNS = ("change", "drop", "increase", "complexity", "coherency", "arcc")


@dataclass(frozen=True)
class _EditProtocol(Protocol):
    """What ``road`` and ``confidence`` share: the top-1 class of each image, each method's
    input-size map for it, one score dict per method, and means per method."""

    columns: ClassVar[tuple[str, ...]] = ()
    methods: tuple[str, ...] = field(
        default=(GRAD_CAM, "guided-gradcam"), metadata=setting("the explanation methods")
    )
    noise: float = field(default=0.01, metadata=setting("ROAD's imputation noise (0: none)"))
    softmax: bool = field(default=True, metadata=setting("score probabilities, not logits"))
    options: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=setting("each method's options, by method")
    )

    def __post_init__(self) -> None:
        for method in self.methods:
            check_method(method, self.options.get(method))
        if not (self.noise >= 0 and np.isfinite(self.noise)):
            raise GradCAMError(f"noise must be a finite number at least 0, got {self.noise}")

    def _score(
        self, explainers: _Explainers, x: Tensor, maps: Tensor, classes: Tensor, method: str,
        seed: int,
    ) -> dict[str, float]:  # fmt: skip
        raise NotImplementedError

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        tell = progress or no_progress
        explainers = _Explainers(loaded, self.methods, self.options)

        def one(sample: Sample, image: Image.Image) -> Scored:
            x = loaded.preprocess(image)
            classes = explainers.top1(x)
            found = {m: explainers.maps(m, x, classes) for m in self.methods}
            row: dict[str, Any] = {"class": int(classes[0])}
            for name, maps in found.items():
                row[name] = self._score(explainers, x, maps, classes, name, _seed(sample))
            tell(1)
            return row, {m: found[m][0].cpu().numpy() for m in found}

        return lambda samples, images: [one(s, i) for s, i in zip(samples, images, strict=True)]

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        return [
            {"method": m, "images": len(done), **_means(done, m, self.columns)}
            for m in self.methods
        ]


@register_protocol(
    title="ROAD: remove and debias, most and least relevant first",
    citation="Rong et al., ICML 2022; pytorch-grad-cam's metrics.road",
    summary=("method", "images", *ROAD_COLUMNS),
)
@dataclass(frozen=True)
class Road(_EditProtocol):
    """ROAD for the top-1 class of each image: the mean confidence change when the most (MoRF,
    lower is better) or least (LeRF, higher is better) relevant pixels are removed and filled
    by noisy linear imputation, over ``percentiles``; ``combined = (LeRF - MoRF) / 2``, higher
    is better. Needs no labels."""

    name: ClassVar[str] = "road"
    columns: ClassVar[tuple[str, ...]] = ROAD_COLUMNS
    percentiles: tuple[int, ...] = field(
        default=ROAD_PERCENTILES, metadata=setting("the percentiles of the map removed at")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.percentiles or not all(0 < p < 100 for p in self.percentiles):
            raise GradCAMError(f"percentiles must be between 0 and 100, got {self.percentiles}")

    def _score(
        self, explainers: _Explainers, x: Tensor, maps: Tensor, classes: Tensor, method: str,
        seed: int,
    ) -> dict[str, float]:  # fmt: skip
        scores = road(
            explainers.module, x, maps, classes, percentiles=self.percentiles, noise=self.noise,
            softmax=self.softmax, seed=seed,
        )  # fmt: skip
        return {k: float(v[0]) for k, v in scores.items()}


@register_protocol(
    title="confidence change, drop and increase in confidence, and ARCC",
    citation="pytorch-grad-cam's metrics.cam_mult_image and metrics.arcc",
    summary=("method", "images", *CONFIDENCE_COLUMNS),
)
@dataclass(frozen=True)
class Confidence(_EditProtocol):
    """For the top-1 class of each image, the confidence change when the image is multiplied by
    its map (``s(x * M) - s(x)``), the drop (``max(-change, 0)``, lower is better) and increase
    (the share of images whose score rose, higher is better) in confidence, and ARCC with its
    parts (complexity, coherency; higher ARCC is better). Needs no labels."""

    name: ClassVar[str] = "confidence"
    columns: ClassVar[tuple[str, ...]] = CONFIDENCE_COLUMNS

    def _score(
        self, explainers: _Explainers, x: Tensor, maps: Tensor, classes: Tensor, method: str,
        seed: int,
    ) -> dict[str, float]:  # fmt: skip
        module = explainers.module
        change = float(confidence_change(module, x, maps, classes, softmax=self.softmax)[0])

        def again(edited: Tensor, ids: Tensor) -> Tensor:
            return explainers.maps(method, edited, ids)

        parts = arcc(
            module, x, maps, classes, again, noise=self.noise, softmax=self.softmax, seed=seed
        )
        return {
            "change": change,
            "drop": max(-change, 0.0),
            "increase": float(change > 0),
            "complexity": float(parts.complexity[0]),
            "coherency": float(parts.coherency[0]),
            "arcc": float(parts.arcc[0]),
        }
