"""``gradcam explain --data PATH``: explain every image of a dataset on the evaluate runner.

A dataset (anything :func:`gradcam.evaluate.datasets.open_dataset` reads: a folder of
photos, ImageNet, VOC, COCO, ``synthetic``, ``photos``) is explained the way
``gradcam evaluate`` scores one: in batches (images of one size share one forward pass and one
batched backward pass for all their classes and every gradient method, through
:func:`gradcam.methods.planner.explain_built`), with rows streamed to Parquet and maps to
``.npz`` shards in ``out``, ``resume`` that refuses other settings, worker processes and Ray
(:func:`gradcam.evaluate.runner.run`). :class:`ExplainData` is the job: a
:class:`~gradcam.evaluate.base.Protocol` that is not an evaluation, so it is not listed among
``gradcam evaluate``'s protocols.

A row holds the explained ``classes`` (best first), their ``names`` and ``scores`` (``y^c``
before softmax); the maps are each method's layer-resolution map per class, stored as
``<index>/<method>`` (``(K, h, w)``; pixel-space methods ``(K, C, H, W)``) and read back with
:func:`gradcam.evaluate.read_maps`.

Examples:
    >>> from gradcam.evaluate import read_maps, read_synthetic
    >>> result = explain_dataset(shapes, read_synthetic("bench", 3), top_k=2, out="run")
    >>> len(result.rows), result.rows[0]["classes"].__len__()
    (3, 2)
    >>> read_maps("run", 0)["gradcam"].shape
    (2, 16, 16)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image

from gradcam.errors import GradCAMError
from gradcam.evaluate.base import (
    Progress,
    Protocol,
    ProtocolResult,
    Scored,
    Scorer,
    by_shape,
    finished,
    no_progress,
    setting,
    stored,
)
from gradcam.evaluate.datasets import Dataset, Sample
from gradcam.evaluate.runner import ModelSpec, run
from gradcam.methods import DEFAULT_METHOD, create
from gradcam.methods.planner import explain_built
from gradcam.methods.registry import check_method
from gradcam.models import LoadedModel
from gradcam.targets import TargetLike, TopK

__all__ = ["ExplainData", "explain_dataset"]


@dataclass(frozen=True)
class ExplainData(Protocol):
    """Explain each image of a dataset for its top-``top_k`` classes, or for ``classes``."""

    name: ClassVar[str] = "explain"
    methods: tuple[str, ...] = field(
        default=(DEFAULT_METHOD,), metadata=setting("the explanation methods")
    )
    top_k: int = field(default=1, metadata=setting("explain the top K classes"))
    classes: tuple[int, ...] = field(
        default=(), metadata=setting("explain these classes instead (ids)")
    )
    layer: str | None = field(
        default=None, metadata=setting("the layer to explain (default: the model's)")
    )
    options: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata=setting("each method's options, by method")
    )

    def __post_init__(self) -> None:
        if not self.methods:
            raise GradCAMError("give at least one method")
        for method in self.methods:
            check_method(method, self.options.get(method))
        if not self.classes and not 1 <= self.top_k <= 100:
            raise GradCAMError(f"--top-k must be between 1 and 100, got {self.top_k}")

    def check(self, dataset: Dataset) -> None:
        """Any dataset can be explained: no labels are needed."""

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        tell = progress or no_progress
        layer = self.layer or loaded.default_layer
        built = {
            m: create(m, loaded.module, layer, **self.options.get(m, {})) for m in self.methods
        }
        names = loaded.class_names
        given = torch.tensor(self.classes, dtype=torch.long)

        def score(samples: Sequence[Sample], images: Sequence[Image.Image]) -> list[Scored]:
            xs = [loaded.preprocess(image) for image in images]
            scored: list[Scored] = [({}, {})] * len(xs)
            for group in by_shape(xs):
                x = torch.cat([xs[i] for i in group])
                # The given classes for every image: a (B, K) tensor, never read as one per image.
                wanted: TargetLike = (
                    given.expand(len(group), -1) if self.classes else TopK(self.top_k)
                )
                results = explain_built(built, loaded.module, x, wanted)
                first = next(iter(results.values()))
                # Layer-resolution maps where the method has them, else its pixel-space maps.
                arrays = {m: stored(_layer_maps(r)) for m, r in results.items()}
                for j, i in enumerate(group):
                    classes = [int(c) for c in first.classes[j].tolist()]
                    row = {
                        "classes": classes,
                        "names": [names[c] if 0 <= c < len(names) else str(c) for c in classes],
                        "scores": [float(s) for s in first.scores[j].tolist()],
                    }
                    scored[i] = (row, {m: a[j] for m, a in arrays.items()})
                tell(len(group))
            return scored

        return score

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        return [
            {
                "images": len(done),
                "failed": len(rows) - len(done),
                "methods": ", ".join(self.methods),
                "classes per image": len(done[0]["classes"]) if done else 0,
            }
        ]


def _layer_maps(result: Any) -> torch.Tensor:
    raw: torch.Tensor | None = getattr(result, "raw", None)
    return raw if raw is not None else result.maps


def explain_dataset(
    model: LoadedModel | ModelSpec,
    dataset: Dataset,
    *,
    methods: Sequence[str] = (DEFAULT_METHOD,),
    top_k: int = 1,
    classes: Sequence[int] = (),
    layer: str | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    limit: int | None = None,
    batch_size: int = 8,
    workers: int = 1,
    ray: bool | str = False,
    ray_timeout: float = 30.0,
    progress: bool | Progress = False,
) -> ProtocolResult:
    """Explain every image of ``dataset`` with ``methods`` on the evaluate runner.

    Args:
        model: a loaded model, or a :class:`~gradcam.evaluate.runner.ModelSpec` that each
            worker loads itself.
        dataset: the images.
        methods: registry names; gradient methods share one forward and backward pass.
        top_k: explain each image's top ``top_k`` classes (when ``classes`` is empty).
        classes: explain these class ids for every image instead.
        layer: a dotted layer name (default: the model's).
        options: each method's options, by method.
        out, resume, limit, batch_size, workers, ray, ray_timeout, progress: as for
            :func:`gradcam.evaluate.runner.run`.

    Returns:
        One summary row and one row per image (``classes``, ``names``, ``scores``).

    Raises:
        GradCAMError: a bad method, option, layer, ``top_k`` or output folder, before any
            image is explained.
    """
    job = ExplainData(
        methods=tuple(methods),
        top_k=top_k,
        classes=tuple(int(c) for c in classes),
        layer=layer,
        options=dict(options or {}),
    )
    return run(
        job,
        model,
        dataset,
        out=out,
        resume=resume,
        limit=limit,
        batch_size=batch_size,
        workers=workers,
        ray=ray,
        ray_timeout=ray_timeout,
        progress=progress,
    )
