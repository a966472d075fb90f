"""Network Dissection (Bau et al., 2017): naming the neurons of a layer by the concepts they see.

For every channel ``k`` of a layer ``A`` and a set of concept images (:mod:`.concepts`):

1. one no-grad forward pass per batch (channels-last on the CPU) keeps ``A`` at layer
   resolution, and each image's label maps: in memory when they fit a budget (512 MB) and
   nothing is to be resumed, else the maps go to a file on disk and the labels are read
   again, so memory stays bounded however large the set;
2. ``T_k``, the top ``quantile`` (0.5%) of channel ``k``'s activations over every position
   of every image, ``P(A^k > T_k) = quantile``, is computed exactly (:mod:`.quantile`: a
   running top-``m`` per channel, ``m`` about ``quantile * N * h * w``, then linear
   interpolation between order statistics, as ``torch.quantile(A^k, 1 - quantile)``), each
   batch folded in as its maps are stored;
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
finished batches. :func:`load_dissection` reads it back.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from gradcam.hooks import capture_layer
from gradcam.layers import LayerLike, ResolvedLayer, resolve_layer
from gradcam.models import LoadedModel
from gradcam.outputs import output_folder, write_atomic

__all__ = [
    "IOU_THRESHOLD",
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
    """The concept images' label maps, kept from the forward pass so that the IoU pass need not
    read or render them again, within a memory budget: past it, they are read again.

    Concept ids are stored in the smallest integer type that holds them (uint8 for up to 255
    concepts): a 128 px image's three label maps take 48 KB.
    """

    def __init__(self, concepts: ConceptSet, budget: int) -> None:
        self.concepts = concepts
        self.budget = budget
        self.reserved = 0  # bytes of maps held in memory, set once their size is known
        self.kept: dict[int, tuple[tuple[int, np.ndarray], ...]] = {}
        self.bytes = 0
        self.dtype = np.min_scalar_type(len(concepts.concepts))

    def image(self, index: int) -> Image.Image:
        """The photo of image ``index``; its labels are kept while they fit the budget."""
        if self.reserved + self.bytes >= self.budget:
            return self.concepts.image(index)
        sample = self.concepts[index]
        layers = tuple((c, ids.astype(self.dtype, copy=False)) for c, ids in sample.layers)
        self.kept[index] = layers
        self.bytes += sum(ids.nbytes for _, ids in layers)
        return sample.image

    def layers(self, index: int) -> tuple[tuple[int, np.ndarray], ...]:
        """The label maps of image ``index``, kept or read again; each is handed out once."""
        kept = self.kept.pop(index, None)
        if kept is None:
            return self.concepts[index].layers
        self.bytes -= sum(ids.nbytes for _, ids in kept)
        return kept


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


def dissect(
    model: LoadedModel | nn.Module,
    concepts: ConceptSet,
    layer: LayerLike | None = None,
    *,
    preprocess: Callable[[Image.Image], Tensor] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    batch_size: int = 16,
    quantile: float = QUANTILE,
    iou_threshold: float = IOU_THRESHOLD,
    progress: bool = False,
    model_name: str | None = None,
) -> Dissection:
    """Name every unit of ``layer`` by the concept its top activations overlap most.

    See the module docstring for the algorithm (Bau et al.'s Network Dissection: ``T_k`` at
    the top ``quantile``, bilinear upsampling to the masks, IoU over the whole set, a name
    when the best IoU > ``iou_threshold``).

    Args:
        model: a :class:`~gradcam.LoadedModel` (its ``preprocess``, ``default_layer`` and
            ``name`` are used) or a module.
        concepts: from :func:`~gradcam.dissect.read_broden` or
            :func:`~gradcam.dissect.generated_concepts`.
        layer: the layer to dissect; ``None``: the loaded model's default layer.
        preprocess: image to (1, 3, H, W) input; default: the loaded model's, or for a module
            the pixels scaled to [0, 1].
        out: a folder for the results (``names.parquet``, ``iou.npy``, ``dissection.json``)
            and the run's working files; ``None``: a temporary folder, removed afterwards.
        resume: continue the interrupted run in ``out`` (with the same settings).
        batch_size: images per forward pass.
        progress: show progress bars on stderr.
        model_name: stored with the names, to check them later (default: the loaded model's).

    Raises:
        LayerError: the layer has no spatial output.
        DissectionError: an empty concept set, ``out`` already holds another run, bad sizes.

    Examples:
        >>> from gradcam import load_model
        >>> from gradcam.dissect import generated_concepts
        >>> found = dissect(load_model("shapes"), generated_concepts(50, size=64), out="names")
        >>> [(u.unit, u.name) for u in found.named()[:3]]
        [(20, 'ring'), (53, 'ring'), (32, 'ring')]
        >>> sorted(os.listdir("names"))
        ['dissection.json', 'iou.npy', 'names.parquet', 'run.json']
    """
    if len(concepts) == 0:
        raise DissectionError(f"the concept set {concepts.source} has no images")
    if batch_size < 1:
        raise DissectionError(f"batch size must be at least 1, got {batch_size}")
    if not 0.0 < quantile < 1.0:
        raise DissectionError(f"the quantile must be in (0, 1), got {quantile}")
    # An IoU is in [0, 1]: a threshold outside names every unit or none.
    check_number("iou_threshold", iou_threshold, 0, 1, high_open=True)
    if isinstance(model, LoadedModel):
        module, name = model.module, model.name if model_name is None else model_name
        prep = preprocess or model.preprocess
        chosen: LayerLike = model.default_layer if layer is None else layer
    else:
        if layer is None:
            raise DissectionError("pass the layer to dissect for a plain module")
        module, name, prep, chosen = model, model_name or "", preprocess or _to_tensor, layer
    resolved = resolve_layer(module, chosen)
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
    try:
        return _run(
            module, resolved, prep, concepts, folder, settings, resume, batch_size,
            iou_threshold, progress, temporary,
        )  # fmt: skip
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


def _forward_pass(
    module: nn.Module,
    layer: ResolvedLayer,
    prep: Callable[[Image.Image], Tensor],
    labels: _Labels,
    acts: np.ndarray | None,
    acts_path: Path,
    state: dict[str, int],
    state_path: Path,
    batch_size: int,
    quantile: float,
    progress: bool,
    temporary: bool,
) -> tuple[np.ndarray, Tensor]:
    """Steps 1 and 2: the layer's maps of every concept image (one no-grad forward pass per
    batch), stored in memory when they fit the budget and nothing is to be resumed, else on
    disk (``acts``: those of a resumed run); and ``T_k`` over them, each batch folded into the
    kept top values as it comes (no pass over the stored maps, no transposed copy)."""
    total = len(labels.concepts)
    top: TopValues | None = None
    with _progress(total, state["forward"], "dissect: forward", progress) as bar:
        start, synced = state["forward"], time.monotonic()
        if acts is not None:  # a resumed run's stored maps
            top = TopValues(acts.shape[1], total * math.prod(acts.shape[2:]), quantile)
            for i in range(0, start, batch_size):
                top.add(acts[i : min(i + batch_size, start)])
        while start < total:
            stop = min(start + batch_size, total)
            inputs = [prep(labels.image(i)) for i in range(start, stop)]
            if any(t.shape != inputs[0].shape for t in inputs):
                raise DissectionError(
                    f"concept images {start}..{stop - 1} preprocess to different sizes: make the "
                    "concept images one size"
                )
            maps = _layer_maps(module, layer, torch.cat(inputs))
            if not math.isfinite(float(maps.sum())):  # NaN and inf, cheaper than isfinite()
                raise DissectionError(
                    f"layer {layer.name!r} gives activations that are not finite (NaN or inf) for "
                    f"concept images {start}..{stop - 1}: check the model"
                )
            if acts is None:
                shape = (total, *maps.shape[1:])
                labels.reserved = 4 * math.prod(shape)
                if temporary and labels.reserved <= _MEMORY_BUDGET:
                    acts = np.empty(shape, dtype=np.float32)
                else:
                    labels.reserved = 0
                    acts = open_memmap(acts_path, mode="w+", dtype=np.float32, shape=shape)
                top = TopValues(shape[1], total * math.prod(shape[2:]), quantile)
            if tuple(maps.shape[1:]) != acts.shape[1:]:
                raise DissectionError(
                    f"layer {layer.name!r} gives maps {tuple(maps.shape[1:])} for concept image "
                    f"{start}, {acts.shape[1:]} before: make the concept images one size"
                )
            acts[start:stop] = maps.numpy()
            assert top is not None
            top.add(acts[start:stop])
            # Syncing the file is slow: record finished batches every few seconds, and at the end.
            if isinstance(acts, np.memmap) and (
                stop == total or time.monotonic() - synced > _SYNC_SECONDS
            ):
                acts.flush()
                state["forward"] = stop
                _write_json(state_path, state)
                synced = time.monotonic()
            bar.update(stop - start)
            start = stop
    assert acts is not None and top is not None
    return acts, top.quantile()


def _run(
    module: nn.Module,
    layer: ResolvedLayer,
    prep: Callable[[Image.Image], Tensor],
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
    state = {"forward": 0, "iou": 0}
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
            return load_dissection(folder)
        state = json.loads(state_path.read_text())
    _write_json(run_path, settings)
    total = len(concepts)
    acts: np.ndarray | None = open_memmap(acts_path, mode="r+") if state["forward"] else None
    labels = _Labels(concepts, _MEMORY_BUDGET)

    acts, thresholds = _forward_pass(
        module, layer, prep, labels, acts, acts_path, state, state_path, batch_size,
        float(settings["quantile"]), progress, temporary,
    )  # fmt: skip
    channels = acts.shape[1]

    # 3. The IoU counts, streamed; checkpointed so that a killed run resumes.
    counts = Counts.zeros(channels, len(concepts.concepts), len(concepts.categories))
    if state["iou"] and counts_path.is_file():
        with np.load(counts_path) as saved:
            counts = Counts(saved["intersection"], saved["activated"], saved["labelled"])
    else:
        state["iou"] = 0
    # Batches are counted by a few threads at once (the compiled count releases the GIL),
    # each into its own counts, folded together at checkpoints and at the end.
    workers = _iou_workers()
    partials = [counts.empty_like() for _ in range(workers)]
    stored, limits = acts, thresholds.double().numpy()

    def count(begins: list[int], samples: list[list[Any]], into: Counts) -> None:
        for begin, batch in zip(begins, samples, strict=True):
            block = np.asarray(stored[begin : begin + len(batch)])
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
    acts = None  # closes the file before it is removed
    for path in (acts_path, counts_path, state_path):
        path.unlink(missing_ok=True)
    return result
