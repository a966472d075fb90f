"""What every protocol is: a frozen dataclass of settings, a per-process scorer, a summary.

A protocol (:class:`Protocol`) is a frozen, picklable settings object whose settings are
checked when it is made. ``protocol.check(dataset)`` refuses a dataset the protocol cannot
score (localization on a folder without labels). ``protocol.scorer(loaded, progress)`` builds
what a process needs once (a method, randomized model copies) and returns a :data:`Scorer`
that scores a batch of decoded images into :data:`Scored` pairs, reporting its progress in
fractions of an image as it goes; ``protocol.summarize(rows)`` turns the rows, wherever they
were computed, into the report table. This module holds that contract and the small helpers
protocols share; the paper's protocols are in :mod:`gradcam.evaluate.protocols`, the table
of registered protocols in :mod:`gradcam.evaluate.registry` and the runner in
:mod:`gradcam.evaluate.runner`.

Examples:
    >>> from gradcam.evaluate import Localization
    >>> Localization(threshold=0.3).settings()["threshold"]
    0.3
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from gradcam.errors import GradCAMError
from gradcam.evaluate.datasets import Dataset, Input, Sample
from gradcam.methods import Result
from gradcam.models import LoadedModel

__all__ = [
    "Progress",
    "Protocol",
    "ProtocolResult",
    "Scored",
    "Scorer",
    "check_classes",
    "heatmaps",
    "model_input",
    "setting",
]

#: One scored image: its row of plain values, and its maps at layer resolution by name.
Scored = tuple[dict[str, Any], dict[str, np.ndarray]]
#: Scores decoded images or arrays (:data:`~gradcam.evaluate.datasets.Input`, with their
#: samples) into one :data:`Scored` per sample. The inputs are typed ``Any`` so that a scorer
#: written for photos only (``Sequence[Image.Image]``) is still a scorer: protocols that take
#: arrays say so in :attr:`Protocol.ranks`, and the others are never given any.
Scorer = Callable[[Sequence[Sample], Sequence[Any]], list[Scored]]
#: Told, as a scorer works, how much of its batch is done, in images (fractions within slow
#: images); the amounts reported for a batch add up to at most its number of images.
Progress = Callable[[float], None]


def setting(help: str, *, flag: str | None = None) -> dict[str, Any]:
    """The metadata of a protocol setting's dataclass field: its one-line help and (where the
    setting's own name would clash with another ``gradcam evaluate`` flag) its flag.

    The registry (:mod:`gradcam.evaluate.registry`) reads them, so that the CLI and the docs
    describe a setting where it is defined.

    Examples:
        >>> from dataclasses import fields
        >>> @dataclass(frozen=True)
        ... class Demo(Protocol):
        ...     steps: int = field(default=5, metadata=setting("how many steps"))
        >>> Demo().steps, fields(Demo)[0].metadata["help"]
        (5, 'how many steps')
    """
    return {"help": help, "flag": flag}


@dataclass(frozen=True)
class ProtocolResult:
    """What a protocol measured: a summary table and one row per image.

    Attributes:
        protocol: the protocol's name.
        summary: rows of the report table (one per method or setting), plain values.
        rows: one dict per image, in dataset order, with ``"index"`` (position in the
            dataset), ``"image"`` and ``"error"`` (``None`` when it worked).

    Examples:
        >>> result = ProtocolResult("demo", [], [{"index": 0, "image": "a.png", "error": "bad"}])
        >>> [row["image"] for row in result.failed]
        ['a.png']
    """

    protocol: str
    summary: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows of images that could not be evaluated."""
        return [row for row in self.rows if row["error"] is not None]


@dataclass(frozen=True)
class Protocol:
    """Base of the protocols: settings, a per-process scorer, and a summary of rows.

    Subclasses are frozen dataclasses whose fields are their settings; ``name`` is the
    protocol's name and ``needs`` what a dataset must hold for it (``"labels"``,
    ``"boxes"``, ``"masks"``). The scorer is given each sample's image as
    :func:`gradcam.evaluate.runner.decode_sample` decodes it, where the batch is scored (ahead
    of the model, in a thread); a job whose inputs are not image files defines
    ``decode(sample) -> (sample, input)`` to make them itself (a dissection's concept images,
    rendered with their label maps: :class:`gradcam.dissect.DissectPass`).
    """

    name: ClassVar[str]
    #: What the protocol scores against: ``"labels"``, and ``"boxes"`` and/or ``"masks"``.
    needs: ClassVar[tuple[str, ...]] = ()
    #: The spatial ranks of the datasets it scores (:attr:`Dataset.rank`): 2 for photos, 3
    #: for volumes and clips.
    ranks: ClassVar[tuple[int, ...]] = (2,)

    def settings(self) -> dict[str, Any]:
        """The protocol's settings as plain values (recorded with streamed results).

        Examples:
            >>> from gradcam.evaluate import Pointing
            >>> Pointing(tolerance=0).settings()["protocol"]
            'pointing'
        """
        return {"protocol": self.name, **asdict(self)}

    def check(self, dataset: Dataset) -> None:
        """Refuse a dataset this protocol cannot score, before any image is read.

        Raises:
            GradCAMError: the protocol needs labels and no image of ``dataset`` has one, or
                does not score samples of the dataset's rank (volumes, clips).

        Examples:
            >>> from pathlib import Path
            >>> from gradcam.evaluate import Localization, Sample
            >>> Localization().check(Dataset("photos", (), [Sample(Path("a.jpg"))]))
            Traceback (most recent call last):
            gradcam.errors.GradCAMError: dataset 'photos' has no labels: ...
        """
        if dataset.rank not in self.ranks:
            kinds = {2: "images", 3: "volumes and clips"}
            scored = " and ".join(kinds.get(r, f"rank-{r} arrays") for r in self.ranks)
            raise GradCAMError(
                f"{self.name} scores {scored} only; dataset {dataset.name!r} holds "
                f"{kinds.get(dataset.rank, f'rank-{dataset.rank} arrays')}: choose localization, "
                "pointing, faithfulness or sanity"
            )
        labeled = any(s.labels for s in dataset.samples)
        if "labels" in self.needs and dataset.samples and not labeled:
            raise GradCAMError(
                f"dataset {dataset.name!r} has no labels: {self.name} scores maps against "
                "annotated classes and boxes (give VOC, COCO or ImageNet-style annotations); "
                "faithfulness and sanity need no labels"
            )

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        """A function scoring batches of images with ``loaded``; built once per process.

        ``progress`` is told, as the scorer works, how many images of the batch it has done
        (fractions within slow images).
        """
        raise NotImplementedError

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The report table of the rows of all images (rows with an error are skipped)."""
        raise NotImplementedError


def no_progress(done: float) -> None:
    """A :data:`Progress` that ignores what it is told."""


def model_input(loaded: LoadedModel, item: Input) -> Tensor:
    """The model's (1, C, *spatial) input for a decoded sample: a photo through the model's
    preprocessing, an array (already in the model's layout, :func:`read_array`) as it is.

    Examples:
        >>> model_input(shapes, np.zeros((1, 8, 32, 32), np.float32)).shape
        torch.Size([1, 1, 8, 32, 32])
    """
    if isinstance(item, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))[None]
    return loaded.preprocess(item)


def heatmaps(result: Result) -> Tensor:
    """One non-negative (B, K, *spatial) heatmap per target from any method's result.

    Grad-CAM and CAM give their layer-resolution maps, occlusion its positive score drops, and
    pixel-space methods the absolute value summed over channels.

    Examples:
        >>> cam = gradcam.create_method("gradcam", model, "features")
        >>> heatmaps(cam(x, [3])).shape
        torch.Size([1, 1, 16, 16])
    """
    raw: Tensor | None = getattr(result, "raw", None)
    if raw is not None:
        return raw.clamp(min=0)
    return result.maps.abs().sum(dim=2)


def check_classes(loaded: LoadedModel, dataset: Dataset) -> None:
    """Refuse a dataset whose class list does not match the model's outputs.

    Examples:
        >>> check_classes(shapes, Dataset("two", ("cat", "dog"), []))
        Traceback (most recent call last):
        gradcam.errors.GradCAMError: dataset 'two' has 2 classes but the model has 8: ...
    """
    if dataset.class_names and len(dataset.class_names) != len(loaded.class_names):
        raise GradCAMError(
            f"dataset {dataset.name!r} has {len(dataset.class_names)} classes but the model has "
            f"{len(loaded.class_names)}: evaluate a model trained on the dataset's classes"
        )


def by_shape(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Positions of the images grouped by tensor shape, so that each group runs as one batch.

    Examples:
        >>> by_shape([torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 4, 4)])
        [[0, 2], [1]]
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(tensors):
        groups.setdefault(tuple(x.shape), []).append(i)
    return list(groups.values())


def stored(maps: Tensor) -> np.ndarray:
    """A map as the runner stores it: float32 numpy on the CPU, detached."""
    return maps.detach().float().cpu().numpy()


def finished(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of images that were scored (no ``error``)."""
    return [row for row in rows if row.get("error") is None]
