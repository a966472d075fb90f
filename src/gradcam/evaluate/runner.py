"""Streaming a dataset through a protocol: in this process, in local processes, or on Ray.

Images are read, explained and scored in batches of ``batch_size``; each batch's rows (and
its maps) go to a :class:`~gradcam.evaluate.store.ResultStore` as soon as it is finished, so
memory stays bounded and an interrupted run resumes where it stopped. An image that cannot be
read, or that the model rejects, gets a row with its ``error`` and the run goes on.

Three backends run the same scoring code and give the same rows:

* in this process (``workers=1``);
* ``workers=N`` local processes, each loading the model once;
* Ray Data (``ray=True`` for a local Ray started here, or an address such as
  ``"ray://head:10001"`` / ``"auto"``): ``map_batches`` over an actor pool of ``workers``
  actors, each loading the model once. Ray is optional: ``pip install 'gradcam[ray]'``.

Example:
    >>> from gradcam.evaluate import Localization, read_synthetic, run
    >>> result = run(Localization(), ModelSpec("shapes"), dataset, out="results", workers=2)
    >>> result.summary
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import pickle
import sys
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gradcam.errors import GradCAMError, ImageLoadError
from gradcam.evaluate.datasets import Dataset, Sample
from gradcam.evaluate.protocols import Protocol, ProtocolResult, Scorer
from gradcam.evaluate.store import ResultStore, plain
from gradcam.images import load_image
from gradcam.models import DEFAULT_MODEL, LoadedModel, load_model

__all__ = ["ModelSpec", "run"]

#: A batch to score: ``(index in the dataset, sample)`` pairs.
Chunk = list[tuple[int, Sample]]
#: A scored batch: rows (with ``index``, ``image``, ``error``) and their maps.
Batch = tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model in each worker (picklable): :func:`gradcam.load_model`'s arguments."""

    name: str = DEFAULT_MODEL
    weights: str | None = None

    def load(self) -> LoadedModel:
        """Load the model; warnings (untrained weights) are left to the caller to show."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return load_model(self.name, self.weights)


def _loaded(model: LoadedModel | ModelSpec) -> LoadedModel:
    return model.load() if isinstance(model, ModelSpec) else model


def score_chunk(scorer: Scorer, chunk: Chunk) -> Batch:
    """Read and score one batch; failures become rows with an error, never lost batches."""
    rows: list[dict[str, Any]] = []
    maps: list[dict[str, np.ndarray]] = []
    readable: list[tuple[dict[str, Any], Sample, Image.Image]] = []
    for index, sample in chunk:
        row: dict[str, Any] = {"index": index, "image": str(sample.path), "error": None}
        rows.append(row)
        try:
            readable.append((row, sample, load_image(sample.path)))
        except ImageLoadError as exc:
            row["error"] = str(exc)
    found: dict[int, dict[str, np.ndarray]] = {}
    try:
        scored = scorer([s for _, s, _ in readable], [i for _, _, i in readable])
        pairs = list(zip(readable, scored, strict=True))
    except GradCAMError:
        # One bad image fails its whole batch: score them one by one to find it.
        pairs = []
        for item in readable:
            row, sample, image = item
            try:
                pairs.append((item, scorer([sample], [image])[0]))
            except GradCAMError as exc:
                row["error"] = f"{sample.path}: {exc}"
    for (row, _, _), (values, named) in pairs:
        row.update(values)
        found[row["index"]] = named
    maps = [found.get(row["index"], {}) for row in rows]
    return rows, maps


def _chunks(pending: Sequence[tuple[int, Sample]], size: int) -> list[Chunk]:
    return [list(pending[k : k + size]) for k in range(0, len(pending), size)]


def _in_process(
    protocol: Protocol, model: LoadedModel | ModelSpec, chunks: list[Chunk]
) -> Iterator[Batch]:
    scorer = protocol.scorer(_loaded(model))
    for chunk in chunks:
        yield score_chunk(scorer, chunk)


_WORKER_SCORER: Scorer | None = None


def _start_worker(protocol: Protocol, model: LoadedModel | ModelSpec, threads: int) -> None:
    global _WORKER_SCORER
    torch.set_num_threads(threads)
    _WORKER_SCORER = protocol.scorer(_loaded(model))


def _score_in_worker(chunk: Chunk) -> Batch:
    assert _WORKER_SCORER is not None, "worker was not started"
    return score_chunk(_WORKER_SCORER, chunk)


def _in_processes(
    protocol: Protocol, model: LoadedModel | ModelSpec, chunks: list[Chunk], workers: int
) -> Iterator[Batch]:
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(protocol, model, threads)
    ) as pool:
        queue = iter(chunks)
        running: set[futures.Future[Batch]] = set()
        # Two batches in flight per worker keeps them busy without holding the whole run.
        for chunk in queue:
            running.add(pool.submit(_score_in_worker, chunk))
            if len(running) >= 2 * workers:
                break
        while running:
            finished, running = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                try:
                    batch = future.result()
                except BrokenProcessPool:
                    raise GradCAMError(
                        "a worker process died (out of memory, or a script that starts workers "
                        "without an `if __name__ == '__main__':` guard); finished batches are "
                        "kept: rerun with --resume"
                    ) from None
                yield batch
                following = next(queue, None)
                if following is not None:
                    running.add(pool.submit(_score_in_worker, following))


class _RayScorer:
    """A Ray Data actor: loads the model once, then scores the batches it is given."""

    def __init__(self, protocol: Protocol, model: LoadedModel | ModelSpec) -> None:
        self.scorer = protocol.scorer(_loaded(model))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunk = [
            (int(i), pickle.loads(s)) for i, s in zip(batch["index"], batch["sample"], strict=True)
        ]
        rows, maps = score_chunk(self.scorer, chunk)
        # Rows and maps are ragged per protocol: they travel pickled, one record per image.
        records = [pickle.dumps((row, named)) for row, named in zip(rows, maps, strict=True)]
        return {"index": batch["index"], "record": np.array(records, dtype=object)}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GradCAMError(
            "--ray needs Ray Data, an optional extra: pip install 'gradcam[ray]' "
            "(or pip install 'ray[data]')"
        ) from None
    return ray


def _on_ray(
    protocol: Protocol,
    model: LoadedModel | ModelSpec,
    chunks: list[Chunk],
    workers: int,
    address: str | None,
    batch_size: int,
) -> Iterator[Batch]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        if address is None:
            # The read task needs a CPU besides the actors, or the pipeline waits forever.
            ray.init(
                num_cpus=workers + 2,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        items = [
            {"index": index, "sample": pickle.dumps(sample)}
            for chunk in chunks
            for index, sample in chunk
        ]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, len(chunks)))
        scored = dataset.map_batches(
            _RayScorer,
            fn_constructor_args=(protocol, model),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            records = [pickle.loads(r) for r in batch["record"]]
            yield [r for r, _ in records], [m for _, m in records]
    finally:
        if started:
            ray.shutdown()


def run(
    protocol: Protocol,
    model: LoadedModel | ModelSpec,
    dataset: Dataset,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    limit: int | None = None,
    batch_size: int = 8,
    workers: int = 1,
    ray: bool | str = False,
    progress: bool = True,
) -> ProtocolResult:
    """Run ``protocol`` over ``dataset`` and summarize it.

    Args:
        protocol: a :class:`~gradcam.evaluate.protocols.Protocol` (its settings).
        model: a loaded model, or a :class:`ModelSpec` that each worker loads itself.
        dataset: the images and their annotations.
        out: a run folder (see :mod:`gradcam.evaluate.store`); rows and maps stream there.
            Without it, rows are kept in memory and maps are dropped.
        resume: continue the run in ``out``, skipping finished images.
        limit: only the first ``limit`` images.
        batch_size: images per batch (a batch is the unit of work and of writing).
        workers: local processes (or Ray actors), each with its own copy of the model.
        ray: run on Ray Data: ``True`` starts a local Ray, a string is a cluster address.
        progress: show a progress bar (images/s and ETA) on stderr.

    Returns:
        The summary table and every row, in dataset order.
    """
    if batch_size < 1:
        raise GradCAMError(f"batch size must be at least 1, got {batch_size}")
    if workers < 1:
        raise GradCAMError(f"workers must be at least 1, got {workers}")
    samples = dataset.samples[:limit] if limit is not None else dataset.samples
    store = None
    if out is not None:
        spec = model if isinstance(model, ModelSpec) else ModelSpec(model.name)
        manifest = {
            **protocol.settings(),
            "dataset": dataset.name,
            "model": spec.name,
            "weights": spec.weights,
        }
        store = ResultStore(out, manifest, resume=resume)
    done = store.done if store is not None else set()
    pending = [(i, s) for i, s in enumerate(samples) if i not in done]
    chunks = _chunks(pending, batch_size)
    if ray:
        address = None if ray is True else str(ray)
        batches = _on_ray(protocol, model, chunks, workers, address, batch_size)
    elif workers > 1 and len(chunks) > 1:
        batches = _in_processes(protocol, model, chunks, workers)
    else:
        batches = _in_process(protocol, model, chunks)
    kept: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(samples),
        initial=len(samples) - len(pending),
        desc=protocol.name,
        unit="image",
        disable=not progress or len(pending) < 2,
        file=sys.stderr,
    )
    with bar:
        for rows, maps in batches:
            if store is not None:
                store.write(rows, maps)
            else:
                kept.extend(rows)
            for row in rows:
                if progress and row["error"] is not None:
                    tqdm.write(f"gradcam: error: {row['error']}", file=sys.stderr)
            bar.update(len(rows))
    if store is not None:
        wanted = set(range(len(samples)))
        rows = [r for r in store.rows() if int(r["index"]) in wanted]
    else:
        # The same form as rows read back from disk: every column in every row, lists.
        columns = list(dict.fromkeys(k for row in kept for k in row))
        rows = [
            {k: plain(row.get(k)) for k in columns}
            for row in sorted(kept, key=lambda r: int(r["index"]))
        ]
    summary = protocol.summarize(rows)
    if store is not None:
        store.finish(summary)
    return ProtocolResult(protocol.name, summary, rows)
