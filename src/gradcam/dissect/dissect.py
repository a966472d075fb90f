"""Network Dissection (Bau et al., 2017): naming the neurons of a layer by the concepts they see.

For every channel ``k`` of a layer ``A`` and a set of concept images (:mod:`.concepts`):

1. one no-grad forward pass per batch (channels-last on the CPU) gives ``A`` at layer
   resolution; it runs on the evaluate runner (:class:`DissectPass`,
   :func:`gradcam.evaluate.runner.run`), in this process, in worker processes or on Ray, and
   streams each image's maps and label maps to ``.npz`` shards (``out/forward``), so that an
   interrupted run resumes from its finished batches and a resume with other settings is
   refused; the maps are then read back, in memory when they fit a budget (512 MB), else
   into a file on disk, and the label maps kept within what is left of the budget (past it,
   read from their shard again), so memory stays bounded however large the set;
2. ``T_k``, the top ``quantile`` (0.5%) of channel ``k``'s activations over every position
   of every image, ``P(A^k > T_k) = quantile``, is computed exactly (:mod:`.quantile`: a
   running top-``m`` per channel, ``m`` about ``quantile * N * h * w``, then linear
   interpolation between order statistics, as ``torch.quantile(A^k, 1 - quantile)``), each
   shard folded in as its maps are read back;
3. each image's map ``A^k`` is upsampled bilinearly to its segmentation's size (as NetDissect
   does; ``align_corners=False``) and thresholded, ``M_k = S^k > T_k``, and streamed into
   counts: ``I[k, c] = sum |M_k & L_c|`` over the images, ``L[c] = sum |L_c|``, and
   ``A[k, g] = sum |M_k|`` over the images annotated in ``c``'s category ``g``
   (:mod:`.counting`: in float64, only the pixels between cells of which one is above
   ``T_k``, by a compiled loop); batches are counted in as many threads as torch uses (at
   most 4);
4. ``IoU[k, c] = I[k, c] / (A[k, g(c)] + L[c] - I[k, c])``, and unit ``k`` is named after the
   concept with the highest IoU when it is above 0.05 (the paper's threshold), else unnamed.

:func:`dissect` returns a :class:`Dissection`, and with ``out`` writes ``names.parquet`` (one
row per unit), ``iou.npy`` and ``dissection.json``; an interrupted run resumes from its
finished batches (and the IoU pass from its last checkpoint). :func:`load_dissection` reads
it back.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from numpy.lib.format import open_memmap
from PIL import Image
from torch import Tensor, nn

from gradcam.checks import check_number
from gradcam.dissect.concepts import Concept, ConceptSet
from gradcam.dissect.counting import Counts
from gradcam.dissect.quantile import QUANTILE, TopValues
from gradcam.engine import run_in_fast_layout
from gradcam.errors import GradCAMError, LayerError
from gradcam.evaluate.base import (
    Progress,
    Protocol,
    ProtocolResult,
    Scored,
    Scorer,
    finished,
    no_progress,
)
from gradcam.evaluate.datasets import Dataset, Sample
from gradcam.evaluate.runner import ModelSpec
from gradcam.evaluate.runner import run as run_job
from gradcam.hooks import capture_layer
from gradcam.layers import LayerLike, ResolvedLayer, resolve_layer
from gradcam.models import LoadedModel
from gradcam.outputs import output_folder, write_atomic

__all__ = [
    "IOU_THRESHOLD",
    "DissectPass",
    "Dissection",
    "DissectionError",
    "Unit",
    "dissect",
    "layer_activations",
    "load_dissection",
    "shipped_names",
]

IOU_THRESHOLD = 0.05
"""A unit is named only when its best IoU is above this (the paper, section 7, footnote 7)."""

SHIPPED_NAMES = Path(__file__).resolve().parents[1] / "data" / "lite0_names"
"""The folder of the names :func:`shipped_names` reads (``scripts/ship_lite0_names.py``)."""

_SYNC_SECONDS = 10.0  # how often finished work is recorded for a resume
_MEMORY_BUDGET = 512 * 2**20  # bytes of maps and label maps kept in memory; the rest spill
_WAVE = 8  # batches per thread between two waits of the IoU pass


class DissectionError(GradCAMError):
    """A dissection cannot be run, resumed, or used with this model and layer."""


@dataclass(frozen=True)
class Unit:
    """One channel of the dissected layer and its name.

    Attributes:
        unit: the channel index ``k``.
        name: the best concept's name when its IoU is above the threshold, else ``None``.
        category: that concept's category, else ``None``.
        iou: the best IoU over every concept.
        concept: the best concept, named or not.
        runner_up: the second-best concept.
        runner_up_iou: its IoU.
        threshold: ``T_k``.
    """

    unit: int
    name: str | None
    category: str | None
    iou: float
    concept: str
    runner_up: str
    runner_up_iou: float
    threshold: float


@dataclass(frozen=True)
class Dissection:
    """The names of a layer's units, and what they were computed from.

    Attributes:
        model: the model's name (``""`` when unknown).
        layer: the dotted layer name.
        units: one :class:`Unit` per channel, in channel order.
        concepts: the concepts, in the column order of ``iou``.
        iou: (C, N) IoU of every unit with every concept.
        source: the concept set's ``source``.
        images: how many concept images were used.
        quantile: the top quantile of ``T_k``.
        iou_threshold: the naming threshold.

    Examples:
        >>> from gradcam import load_model
        >>> from gradcam.dissect import generated_concepts
        >>> found = dissect(load_model("shapes"), generated_concepts(50, size=64))
        >>> found.layer, found.iou.shape, found.images  # 128 units, 25 concepts, 50 images
        ('features', (128, 25), 50)
        >>> found.units[20].name, round(found.units[20].iou, 3), found.units[0].name
        ('ring', 0.212, None)
    """

    model: str
    layer: str
    units: tuple[Unit, ...]
    concepts: tuple[Concept, ...]
    iou: np.ndarray = field(repr=False, compare=False)
    source: str = ""
    images: int = 0
    quantile: float = QUANTILE
    iou_threshold: float = IOU_THRESHOLD

    @property
    def channels(self) -> int:
        """The number of units of the layer."""
        return len(self.units)

    def named(self) -> list[Unit]:
        """The units that have a name, best IoU first."""
        return sorted((u for u in self.units if u.name), key=lambda u: -u.iou)

    def check(self, layer: str, channels: int, model: str | None = None) -> None:
        """Raise :class:`DissectionError` unless these names are for ``layer`` with
        ``channels`` units (and for ``model``, when both names are known)."""
        if model and self.model and model != self.model:
            raise DissectionError(
                f"the neuron names are for model {self.model!r}, not {model!r}: dissect this "
                "model's layer first (gradcam dissect)"
            )
        if layer != self.layer or channels != self.channels:
            raise DissectionError(
                f"the neuron names are for layer {self.layer!r} with {self.channels} units, not "
                f"{layer!r} with {channels}: dissect that layer, or explain {self.layer!r}"
            )

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write ``names.parquet``, ``iou.npy`` and ``dissection.json`` to ``folder``."""
        out = output_folder(folder)
        columns = [f.name for f in Unit.__dataclass_fields__.values()]
        table = pa.table({k: [getattr(u, k) for u in self.units] for k in columns})
        iou = self.iou.astype(np.float32)

        def save_iou(tmp: Path) -> None:
            with tmp.open("wb") as handle:  # a handle: np.save would add ".npy" to the name
                np.save(handle, iou)

        # Each file is whole or absent; names.parquet, the one load_dissection looks for
        # first, is written last.
        write_atomic(out / "iou.npy", save_iou)
        meta = {
            "model": self.model,
            "layer": self.layer,
            "channels": self.channels,
            "source": self.source,
            "images": self.images,
            "quantile": self.quantile,
            "iou_threshold": self.iou_threshold,
            "concepts": [[c.name, c.category] for c in self.concepts],
        }
        _write_json(out / "dissection.json", meta)
        write_atomic(out / "names.parquet", lambda tmp: pq.write_table(table, tmp))


def load_dissection(folder: str | os.PathLike[str]) -> Dissection:
    """Read the names that :func:`dissect` (or ``gradcam dissect``) wrote to ``folder``.

    Raises:
        DissectionError: the folder does not hold a finished dissection.

    Examples:
        >>> from gradcam import load_model
        >>> from gradcam.dissect import generated_concepts
        >>> _ = dissect(load_model("shapes"), generated_concepts(50, size=64), out="names")
        >>> names = load_dissection("names")
        >>> names.model, names.layer, names.named()[0].name
        ('shapes', 'features', 'ring')
    """
    root = Path(folder)
    meta_path = root / "dissection.json"
    if not meta_path.is_file() or not (root / "names.parquet").is_file():
        raise DissectionError(
            f"{root} holds no neuron names (dissection.json, names.parquet): run gradcam "
            "dissect --out there first"
        )
    try:
        meta = json.loads(meta_path.read_text())
        rows = pq.read_table(root / "names.parquet").to_pylist()
        iou = np.load(root / "iou.npy")
        units = tuple(Unit(**row) for row in rows)
        concepts = tuple(Concept(str(n), str(c)) for n, c in meta["concepts"])
        result = Dissection(
            str(meta["model"]),
            str(meta["layer"]),
            units,
            concepts,
            iou,
            str(meta["source"]),
            int(meta["images"]),
            float(meta["quantile"]),
            float(meta["iou_threshold"]),
        )
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowInvalid) as exc:
        raise DissectionError(f"{root}: unreadable neuron names ({exc})") from None
    if len(units) != int(meta.get("channels", -1)) or iou.shape != (len(units), len(concepts)):
        raise DissectionError(f"{root}: the neuron names are incomplete")
    return result


@functools.cache
def shipped_names() -> Dissection:
    """The names of the embedded EfficientNet-Lite0's Grad-CAM layer, shipped with gradcam.

    ``_head_act`` (1280 units) of ``gradcam.load_model()``, dissected once on the generated
    concept set (``generated_concepts(400)``, seed 0) by ``scripts/ship_lite0_names.py``
    (13 s on an idle 2-core CPU) and stored in :data:`SHIPPED_NAMES` (167 KB); read once per
    process. The concept set is a small stand-in for Broden: only colour, texture and shape
    detectors get names, so most units stay unnamed. The web demo's textual explanations use
    them (:meth:`gradcam.demo.DemoSession.text_explanation`).

    Raises:
        DissectionError: the shipped files are missing or unreadable (a broken install).

    Examples:
        >>> names = shipped_names()
        >>> names.model, names.layer, names.channels, len(names.named())
        ('efficientnet_lite0', '_head_act', 1280, 214)
    """
    return load_dissection(SHIPPED_NAMES)


# ---------------------------------------------------------------------------------------------
# Activations


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    flags = [m.training for m in module.modules()]
    try:
        module.eval()
        yield
    finally:
        for m, flag in zip(module.modules(), flags, strict=True):
            m.training = flag


def layer_activations(module: nn.Module, layer: ResolvedLayer, x: Tensor) -> Tensor:
    """The layer's feature maps (B, C, h, w) for ``x``: one no-grad forward pass, eval mode.

    On the CPU the pass takes channels-last input where the model accepts it
    (:func:`gradcam.engine.run_in_fast_layout`), as the perturbation methods' copies do: no
    gradient is taken, and the maps equal the usual layout's to float rounding.

    Raises:
        LayerError: the layer does not run, or its output has no spatial maps (h * w > 1).

    Examples:
        >>> from gradcam import load_model
        >>> shapes = load_model("shapes")
        >>> layer = resolve_layer(shapes.module, "features.final_relu")
        >>> layer_activations(shapes.module, layer, torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 128, 16, 16])
    """
    return _layer_maps(module, layer, x).contiguous()


def _layer_maps(module: nn.Module, layer: ResolvedLayer, x: Tensor) -> Tensor:
    """:func:`layer_activations` in the layout the pass gave (channels-last on the CPU):
    dissection copies them once, into its store."""

    def forward(batch: Tensor) -> Tensor | None:
        # detach=False: the default turns grad mode on after the layer, to record the rest of
        # the network for a backward pass, which a dissection never runs.
        with capture_layer(layer.module, layer.name, detach=False) as seen:
            module(batch)
        return seen.output

    with _eval_mode(module), torch.no_grad():
        output = run_in_fast_layout(module, x, forward, fast=True)
    if output is None:
        raise LayerError(f"layer {layer.name!r} did not run in the forward pass")
    input_size = (int(x.shape[-2]), int(x.shape[-1]))
    maps = layer.view(module, tuple(output.shape), input_size)(output.detach())
    if maps.dim() != 4 or maps.shape[2] * maps.shape[3] < 2:
        raise LayerError(
            f"layer {layer.name!r} outputs {tuple(output.shape)}, not spatial feature maps "
            "(B, C, h, w) with h * w > 1: choose a convolutional layer to dissect"
        )
    return maps.float()


# ---------------------------------------------------------------------------------------------
# The streaming dissection


def _to_tensor(image: Image.Image) -> Tensor:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


class _Labels:
    """The concept images' label maps, as the forward pass stored them in the runner's shards,
    kept in memory from the gathering of the maps within a budget (past it, a map is read from
    its shard again) and handed to the IoU pass.

    Concept ids are stored in the smallest integer type that holds them (uint8 for up to 255
    concepts): a 128 px image's three label maps take 48 KB.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.kept: dict[int, tuple[tuple[int, np.ndarray], ...]] = {}
        self.shard: dict[int, Path] = {}
        self.bytes = 0

    def add(self, index: int, shard: Path, layers: tuple[tuple[int, np.ndarray], ...]) -> None:
        """Image ``index``'s label maps, read from ``shard``: kept while they fit."""
        self.shard[index] = shard
        size = sum(ids.nbytes for _, ids in layers)
        if self.bytes + size <= self.budget:
            self.kept[index] = layers
            self.bytes += size

    def layers(self, index: int) -> tuple[tuple[int, np.ndarray], ...]:
        """The label maps of image ``index``, kept or read again; each is handed out once."""
        kept = self.kept.pop(index, None)
        if kept is None:
            with np.load(self.shard[index]) as data:
                return _label_layers(index, data)
        self.bytes -= sum(ids.nbytes for _, ids in kept)
        return kept


def _label_layers(index: int, data: Any) -> tuple[tuple[int, np.ndarray], ...]:
    """Image ``index``'s label maps in a shard: ``<index>/labels<n>_<category>``, in ``n``'s
    order (the concept set's)."""
    prefix = f"{index}/labels"
    found = []
    for key in data.files:
        if key.startswith(prefix):
            n, _, category = key[len(prefix) :].partition("_")
            found.append((int(n), int(category), data[key]))
    return tuple((c, ids) for _, c, ids in sorted(found, key=lambda item: item[0]))


def _iou_workers() -> int:
    """Threads that count IoU batches at once: torch's thread count, at most 4 (measured on 2
    cores: the IoU pass of the shapes CNN on 200 images 29 ms with 2, 43 ms with 1)."""
    return max(1, min(torch.get_num_threads(), 4))


def _units(
    iou: np.ndarray, concepts: Sequence[Concept], thresholds: Tensor, iou_threshold: float
) -> tuple[Unit, ...]:
    units = []
    for k in range(iou.shape[0]):
        order = np.argsort(-iou[k], kind="stable")
        best = int(order[0])
        second = int(order[1]) if len(order) > 1 else best
        named = iou[k, best] > iou_threshold
        units.append(
            Unit(
                unit=k,
                name=concepts[best].name if named else None,
                category=concepts[best].category if named else None,
                iou=float(iou[k, best]),
                concept=concepts[best].name,
                runner_up=concepts[second].name,
                runner_up_iou=float(iou[k, second]),
                threshold=float(thresholds[k]),
            )
        )
    return tuple(units)


def _progress(total: int, initial: int, desc: str, show: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="image", disable=not show, file=sys.stderr
    )


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class _Stop(Exception):
    """An error of the model or the layer, not of one image, raised out of the runner (which
    would score a failing batch again image by image) so that the dissection stops at once;
    :func:`dissect` raises the error it carries."""

    def __init__(self, error: GradCAMError) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True)
class DissectPass(Protocol):
    """Step 1 of a dissection as a job of the evaluate runner
    (:func:`gradcam.evaluate.runner.run`): each concept image's layer maps and label maps.

    The images are the concept set's (sample ``i`` is concept image ``i``, rendered or read
    where the batch is scored, by :meth:`decode`), so the set travels to worker processes as
    its ``source`` (:attr:`~gradcam.dissect.concepts.ConceptSet.portable`). A row is empty; the
    maps of image ``i`` are ``acts`` (C, h, w) float32 and each label map ``labels<n>_<c>``
    (category ``c``, in the set's order ``n``). An error of the model or the layer (no
    spatial maps, activations that are not finite, images that preprocess to different sizes)
    stops the run.

    Examples:
        >>> from gradcam.dissect import generated_concepts
        >>> job = DissectPass(generated_concepts(4, size=64), "features")
        >>> job.settings()
        {'protocol': 'dissect', 'layer': 'features', 'concepts': 'generated:4:64:0', 'images': 4}
    """

    name: ClassVar[str] = "dissect"
    concepts: ConceptSet
    layer: str

    def settings(self) -> dict[str, Any]:
        """What changes the maps: the layer and the concept images."""
        return {
            "protocol": self.name,
            "layer": self.layer,
            "concepts": self.concepts.source,
            "images": len(self.concepts),
        }

    def check(self, dataset: Dataset) -> None:
        """The concept images need no labels of the dataset's kind."""

    def decode(self, sample: Sample) -> tuple[Sample, Any]:
        """Concept image ``int(sample.path.name)`` with its label maps."""
        return sample, self.concepts[int(sample.path.name)]

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        tell = progress or no_progress
        module, prep = loaded.module, loaded.preprocess
        layer = resolve_layer(module, self.layer)
        dtype = np.min_scalar_type(len(self.concepts.concepts))

        def score(samples: Sequence[Sample], items: Sequence[Any]) -> list[Scored]:
            if not items:  # every image of the batch failed to read: their rows say why
                return []
            first, last = int(samples[0].path.name), int(samples[-1].path.name)
            inputs = [prep(item.image) for item in items]
            if any(t.shape != inputs[0].shape for t in inputs):
                raise _Stop(
                    DissectionError(
                        f"concept images {first}..{last} preprocess to different sizes: make "
                        "the concept images one size"
                    )
                )
            try:
                maps = _layer_maps(module, layer, torch.cat(inputs))
            except GradCAMError as exc:
                raise _Stop(exc) from None
            if not math.isfinite(float(maps.sum())):  # NaN and inf, cheaper than isfinite()
                raise _Stop(
                    DissectionError(
                        f"layer {layer.name!r} gives activations that are not finite (NaN or "
                        f"inf) for concept images {first}..{last}: check the model"
                    )
                )
            arrays = maps.contiguous().numpy()
            scored: list[Scored] = []
            for j, item in enumerate(items):
                named = {"acts": arrays[j]}
                for n, (category, ids) in enumerate(item.layers):
                    named[f"labels{n}_{category}"] = ids.astype(dtype, copy=False)
                scored.append(({}, named))
            tell(len(items))
            return scored

        return score

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        return [{"images": len(done), "failed": len(rows) - len(done)}]


def dissect(
    model: LoadedModel | ModelSpec | nn.Module,
    concepts: ConceptSet,
    layer: LayerLike | None = None,
    *,
    preprocess: Callable[[Image.Image], Tensor] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    limit: int | None = None,
    batch_size: int = 16,
    workers: int = 1,
    ray: bool | str = False,
    ray_timeout: float = 30.0,
    quantile: float = QUANTILE,
    iou_threshold: float = IOU_THRESHOLD,
    progress: bool = False,
    model_name: str | None = None,
) -> Dissection:
    """Name every unit of ``layer`` by the concept its top activations overlap most.

    See the module docstring for the algorithm (Bau et al.'s Network Dissection: ``T_k`` at
    the top ``quantile``, bilinear upsampling to the masks, IoU over the whole set, a name
    when the best IoU > ``iou_threshold``). The per-image pass runs on the evaluate runner
    (:class:`DissectPass`, :func:`gradcam.evaluate.runner.run`): batched, its maps streamed
    to ``.npz`` shards under ``out/forward``, in worker processes or on Ray; then ``T_k`` and
    the IoU counts are computed from the shards here.

    Args:
        model: a :class:`~gradcam.LoadedModel` (its ``preprocess``, ``default_layer`` and
            ``name`` are used), a :class:`~gradcam.evaluate.runner.ModelSpec` (each worker
            loads its own copy; give ``loaded=`` to reuse one loaded here) or a module.
        concepts: from :func:`~gradcam.dissect.read_broden` or
            :func:`~gradcam.dissect.generated_concepts` (a set built by hand runs in this
            process, or on Ray).
        layer: the layer to dissect; ``None``: the loaded model's default layer.
        preprocess: image to (1, 3, H, W) input; default: the loaded model's, or for a module
            the pixels scaled to [0, 1].
        out: a folder for the results (``names.parquet``, ``iou.npy``, ``dissection.json``)
            and the run's working files; ``None``: a temporary folder, removed afterwards.
        resume: continue the interrupted run in ``out`` (with the same settings: refused,
            naming the difference, otherwise).
        limit: only the first ``limit`` concept images.
        batch_size: images per forward pass (and per shard).
        workers: local processes (or Ray actors) for the forward pass, each with its own copy
            of the model.
        ray: run the forward pass on Ray Data: ``True`` starts a local Ray, a string is a
            cluster address (``pip install 'gradcam[ray]'``).
        ray_timeout: seconds to wait for the Ray cluster at ``ray``'s address to answer.
        progress: show progress bars on stderr (images, with a rate).
        model_name: stored with the names, to check them later (default: the loaded model's).

    Raises:
        LayerError: the layer has no spatial output.
        DissectionError: an empty concept set, ``out`` already holds another run, bad sizes,
            bad settings.

    Examples:
        >>> from gradcam import load_model
        >>> from gradcam.dissect import generated_concepts
        >>> found = dissect(load_model("shapes"), generated_concepts(50, size=64), out="names")
        >>> [(u.unit, u.name) for u in found.named()[:3]]
        [(20, 'ring'), (53, 'ring'), (32, 'ring')]
        >>> sorted(os.listdir("names"))
        ['dissection.json', 'iou.npy', 'names.parquet', 'run.json']
    """
    if limit is not None:
        if limit < 1:
            raise DissectionError(f"limit must be at least 1 image, got {limit}")
        concepts = replace(concepts, length=min(limit, len(concepts)))
    if len(concepts) == 0:
        raise DissectionError(f"the concept set {concepts.source} has no images")
    if batch_size < 1:
        raise DissectionError(f"batch size must be at least 1, got {batch_size}")
    if workers < 1:
        raise DissectionError(f"workers must be at least 1, got {workers}")
    if not 0.0 < quantile < 1.0:
        raise DissectionError(f"the quantile must be in (0, 1), got {quantile}")
    # An IoU is in [0, 1]: a threshold outside names every unit or none.
    check_number("iou_threshold", iou_threshold, 0, 1, high_open=True)
    if workers > 1 and not ray and not concepts.portable:
        raise DissectionError(
            "a concept set built by hand cannot go to worker processes: read it with "
            "read_concepts, read_broden or generated_concepts, or run with workers=1"
        )
    runner_model: LoadedModel | ModelSpec
    if isinstance(model, ModelSpec):
        if preprocess is not None:
            raise DissectionError(
                "preprocess= applies to a loaded model or a module: a ModelSpec's workers "
                "preprocess as the model does"
            )
        loaded = model.load()
        runner_model = replace(model, loaded=loaded)
    elif isinstance(model, LoadedModel):
        given: Any = preprocess  # any image-to-tensor function, as for a module
        loaded = model if given is None else replace(model, preprocess=given)
        runner_model = loaded
    else:
        if layer is None:
            raise DissectionError("pass the layer to dissect for a plain module")
        prep: Any = preprocess or _to_tensor
        loaded = LoadedModel(model_name or "", model, prep, (), "", True)
        runner_model = loaded
    name = loaded.name if model_name is None else model_name
    chosen: LayerLike = loaded.default_layer if layer is None else layer
    resolved = resolve_layer(loaded.module, chosen)
    settings = {
        "model": name,
        "layer": resolved.name,
        "source": concepts.source,
        "images": len(concepts),
        "quantile": quantile,
    }
    temporary = out is None
    # ``out`` is checked before any pass: a file, or a folder under one, is one line.
    folder = (
        Path(tempfile.mkdtemp(prefix="gradcam-dissect-")) if out is None else output_folder(out)
    )
    job = DissectPass(concepts, resolved.name)
    forward = functools.partial(
        run_job,
        job,
        runner_model,
        batch_size=batch_size,
        workers=workers,
        ray=ray,
        ray_timeout=ray_timeout,
        progress=progress,
    )
    try:
        return _run(forward, resolved, concepts, folder, settings, resume, batch_size,
                    iou_threshold, progress, temporary)  # fmt: skip
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


def _samples(concepts: ConceptSet) -> Dataset:
    """The concept images as the runner's dataset: sample ``i`` names image ``i``."""
    samples = [Sample(Path(f"{i:07d}")) for i in range(len(concepts))]
    identity = {"format": "concepts", "source": concepts.source, "count": len(concepts)}
    return Dataset("concepts", (), samples, identity=identity)


def _gather(
    maps: Path,
    total: int,
    layer: ResolvedLayer,
    labels: _Labels,
    counted: int,
    quantile: float,
    spill: Path,
) -> tuple[np.ndarray, Tensor]:
    """Steps 1 and 2 from the runner's shards: every concept image's maps, in memory when
    they fit the budget, else in a file on disk (``spill``), each image's label maps handed to
    ``labels``; and ``T_k``, each shard folded into the kept top values as it is read."""
    acts: np.ndarray | None = None
    top: TopValues | None = None
    seen = 0
    for shard in sorted(maps.glob("part-*.npz")):
        with np.load(shard) as data:
            indices = sorted({int(k.partition("/")[0]) for k in data.files})
            for index in indices:
                block = data[f"{index}/acts"]
                if acts is None:
                    shape = (total, *block.shape)
                    reserved = 4 * math.prod(shape)
                    if reserved <= _MEMORY_BUDGET:
                        # The maps and the kept label maps share the budget.
                        labels.budget = max(0, labels.budget - reserved)
                        acts = np.empty(shape, dtype=np.float32)
                    else:
                        acts = open_memmap(spill, mode="w+", dtype=np.float32, shape=shape)
                    top = TopValues(shape[1], total * math.prod(shape[2:]), quantile)
                if block.shape != acts.shape[1:]:
                    raise DissectionError(
                        f"layer {layer.name!r} gives maps {block.shape} for concept image "
                        f"{index}, {acts.shape[1:]} before: make the concept images one size"
                    )
                acts[index] = block
                if index >= counted:  # the IoU pass of a resumed run starts at ``counted``
                    labels.add(index, shard, _label_layers(index, data))
            assert top is not None and acts is not None
            top.add(np.stack([acts[i] for i in indices]))
            seen += len(indices)
    if acts is None or top is None or seen != total:
        raise DissectionError(f"{maps}: the forward pass's maps are incomplete")
    return acts, top.quantile()


def _resume_state(folder: Path, settings: dict[str, Any], resume: bool) -> dict[str, int] | None:
    """The progress to continue from in ``folder`` (``{"iou": 0}`` for a new run), or ``None``
    when it holds a finished dissection to load; refuses a run without ``resume`` or with other
    ``settings``."""
    run_path, state_path = folder / "run.json", folder / "progress.json"
    state = {"iou": 0}
    if state_path.is_file() or (folder / "names.parquet").is_file():
        if not resume:
            raise DissectionError(
                f"{folder} already holds a dissection: pass --resume (resume=True) to continue "
                "it, or choose another output folder"
            )
        before = json.loads(run_path.read_text()) if run_path.is_file() else {}
        if before != settings:
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings[k])
            raise DissectionError(
                f"{folder} holds a dissection with other settings ({', '.join(changed)} differ): "
                "resume with the same settings, or choose another output folder"
            )
        if (folder / "names.parquet").is_file() and not state_path.is_file():
            return None
        state = {"iou": 0, **json.loads(state_path.read_text())}
    return state


def _count_iou(
    acts: np.ndarray,
    thresholds: Tensor,
    labels: _Labels,
    concepts: ConceptSet,
    state: dict[str, int],
    folder: Path,
    batch_size: int,
    progress: bool,
) -> Counts:
    """Count each unit's intersections with each concept over the concept images, from
    ``state["iou"]`` on, a few threads at once; checkpointed to ``counts.npz`` and
    ``progress.json`` in ``folder`` so that a killed run resumes."""
    counts_path, state_path = folder / "counts.npz", folder / "progress.json"
    total = len(concepts)
    counts = Counts.zeros(acts.shape[1], len(concepts.concepts), len(concepts.categories))
    if state["iou"] and counts_path.is_file():
        with np.load(counts_path) as saved:
            counts = Counts(saved["intersection"], saved["activated"], saved["labelled"])
    else:
        state["iou"] = 0
    # Batches are counted by a few threads at once (the compiled count releases the GIL),
    # each into its own counts, folded together at checkpoints and at the end.
    workers = _iou_workers()
    partials = [counts.empty_like() for _ in range(workers)]
    limits = thresholds.double().numpy()

    def count(begins: list[int], samples: list[list[Any]], into: Counts) -> None:
        for begin, batch in zip(begins, samples, strict=True):
            block = np.asarray(acts[begin : begin + len(batch)])
            into.add(block, limits, batch, first=begin)

    synced = time.monotonic()
    with (
        _progress(total, state["iou"], "dissect: IoU", progress) as bar,
        ThreadPoolExecutor(workers) as pool,
    ):
        starts = list(range(state["iou"], total, batch_size))
        # Waves of up to _WAVE batches per thread: a wave ends with a wait for every thread.
        for wave in range(0, len(starts), workers * _WAVE):
            begins = starts[wave : wave + workers * _WAVE]
            # The labels are fetched here: _Labels is not shared between threads.
            samples = [
                [labels.layers(i) for i in range(b, min(b + batch_size, total))] for b in begins
            ]
            jobs = [
                pool.submit(count, begins[j::workers], samples[j::workers], partials[j])
                for j in range(min(workers, len(begins)))
            ]
            for job in jobs:
                job.result()
            stop = min(begins[-1] + batch_size, total)
            bar.update(stop - begins[0])
            if stop < total and time.monotonic() - synced > _SYNC_SECONDS:
                for partial in partials:
                    counts.fold(partial)
                partial_path = folder / "counts.partial.npz"
                np.savez(
                    partial_path,
                    intersection=counts.intersection,
                    activated=counts.activated,
                    labelled=counts.labelled,
                )
                os.replace(partial_path, counts_path)
                state["iou"] = stop
                _write_json(state_path, state)
                synced = time.monotonic()
    for partial in partials:
        counts.fold(partial)

    return counts


def _run(
    forward: Callable[..., ProtocolResult],
    layer: ResolvedLayer,
    concepts: ConceptSet,
    folder: Path,
    settings: dict[str, Any],
    resume: bool,
    batch_size: int,
    iou_threshold: float,
    progress: bool,
    temporary: bool,
) -> Dissection:
    folder.mkdir(parents=True, exist_ok=True)
    run_path, state_path = folder / "run.json", folder / "progress.json"
    acts_path, counts_path = folder / "activations.npy", folder / "counts.npz"
    state = _resume_state(folder, settings, resume)
    if state is None:
        return load_dissection(folder)
    _write_json(run_path, settings)
    _write_json(state_path, state)  # from here on the folder holds a run to resume
    total = len(concepts)

    # 1. The per-image pass, on the runner: maps and label maps to shards in forward/.
    try:
        passed = forward(_samples(concepts), out=folder / "forward", resume=resume)
    except _Stop as halted:
        raise halted.error from None
    if passed.failed:
        row = passed.failed[0]
        raise DissectionError(f"concept image {int(row['index'])}: {row['error']}")
    labels = _Labels(_MEMORY_BUDGET)
    acts, thresholds = _gather(
        folder / "forward" / "maps", total, layer, labels, state["iou"],
        float(settings["quantile"]), acts_path,
    )  # fmt: skip

    # 3. The IoU counts, streamed; checkpointed so that a killed run resumes.
    counts = _count_iou(acts, thresholds, labels, concepts, state, folder, batch_size, progress)
    iou = counts.iou(concepts.category_of())
    units = _units(iou, concepts.concepts, thresholds, iou_threshold)
    result = Dissection(
        str(settings["model"]),
        layer.name,
        units,
        concepts.concepts,
        iou,
        concepts.source,
        total,
        float(settings["quantile"]),
        iou_threshold,
    )
    if not temporary:
        result.save(folder)
    del acts  # the last reference: closes the file before it is removed
    for path in (acts_path, counts_path, state_path):
        path.unlink(missing_ok=True)
    shutil.rmtree(folder / "forward", ignore_errors=True)
    return result
