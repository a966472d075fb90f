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
  actors, each loading the model once. Ray is optional: ``pip install 'gradcam[ray]'``. A
  cluster that does not answer within ``ray_timeout`` seconds is an error, not a wait.

Local workers exit when the process that started them dies (even by SIGKILL), and an error in
a worker's setup (an unknown layer) comes back as that error. The progress bar counts images,
fractions of an image as a slow protocol's windows and steps are done (in this process and in
local workers; per batch on Ray), with a rate and an ETA.

With ``out``, the folder's ``run.json`` (the manifest) records everything that changes a row:
the protocol's settings (methods, options, layer, thresholds), the model's name, its weights
file and the file's SHA-256, and the dataset's identity; a resume with other settings is
refused with a message naming what differs.

Examples:
    >>> from gradcam.evaluate import Localization, read_synthetic
    >>> dataset = read_synthetic("bench", 4)
    >>> result = run(Localization(), ModelSpec("shapes"), dataset, out="results", progress=False)
    >>> len(result.rows), sorted(p.name for p in Path("results").iterdir())[-1]
    (4, 'summary.json')
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import hashlib
import multiprocessing
import os
import pickle
import queue as queues
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gradcam.engine import fast_layout
from gradcam.errors import GradCAMError, ImageLoadError
from gradcam.evaluate.base import Progress, Protocol, ProtocolResult, Scorer
from gradcam.evaluate.datasets import (
    LOCATION_KEYS,
    Annotation,
    Dataset,
    DatasetError,
    Input,
    Sample,
    read_array,
)
from gradcam.evaluate.store import ResultStore, make_folder, plain
from gradcam.images import MAX_PIXELS, load_image
from gradcam.models import DEFAULT_MODEL, LoadedModel, load_model

__all__ = ["ModelSpec", "manifest", "run"]

#: A batch to score: ``(index in the dataset, sample)`` pairs.
Chunk = list[tuple[int, Sample]]
#: A scored batch: rows (with ``index``, ``image``, ``error``) and their maps.
Batch = tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model in each worker (picklable): :func:`gradcam.load_model`'s arguments.

    Attributes:
        name: the model's name, as :func:`gradcam.load_model` takes it.
        weights: as :func:`gradcam.load_model` takes them (a state-dict file, a torchvision
            weights name, ``"random"``), or ``None`` for the model's pretrained weights.
        loaded: the model already loaded from ``name`` and ``weights`` in this process, used
            here instead of loading it again; never sent to workers (they load their own).

    Examples:
        >>> spec = ModelSpec("shapes")
        >>> spec.identity()["model"]
        'shapes'
    """

    name: str = DEFAULT_MODEL
    weights: str | None = None
    loaded: LoadedModel | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "loaded": None}

    def load(self) -> LoadedModel:
        """Load the model; warnings (untrained weights) are left to the caller to show."""
        if self.loaded is not None:
            return self.loaded
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return load_model(self.name, self.weights)

    def identity(self) -> dict[str, Any]:
        """What the rows depend on: the name, the weights file and its SHA-256.

        Raises:
            GradCAMError: the weights file cannot be read.
        """
        digest = None
        # "random" and torchvision weights names ("IMAGENET1K_V2") name no file of the user's.
        if self.weights is not None and (
            Path(self.weights).is_file() or os.path.sep in self.weights
        ):
            digest = _sha256(Path(self.weights))
        return {"model": self.name, "weights": self.weights, "weights_sha256": digest}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise GradCAMError(f"weights file {path}: cannot be read ({exc.strerror})") from None
    return digest.hexdigest()


def _model_identity(model: LoadedModel | ModelSpec) -> dict[str, Any]:
    """The manifest's record of the model. A model loaded in Python has no file to name: its
    parameters and buffers are hashed instead, so that other weights are still told apart."""
    if isinstance(model, ModelSpec):
        return model.identity()
    digest = hashlib.sha256()
    for name, tensor in model.module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"model": model.name, "weights": None, "state_sha256": digest.hexdigest()}


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _dataset_identity(dataset: Dataset) -> dict[str, Any]:
    """The manifest's record of the dataset: what it is, never where it lies. Its reader's
    ``identity`` (format, split, seed, the digest of its annotations...) less the locations
    of :data:`~gradcam.evaluate.datasets.LOCATION_KEYS`, and always its name, size and a hash
    of each sample's file name, file size in bytes, labels and boxes, so that data that
    changed is not resumed into, and the same data in another folder is."""
    digest = hashlib.sha256()
    for sample in dataset.samples:
        boxes = [(a.class_id, a.box) for a in sample.annotations]
        size = _file_size(sample.path)
        digest.update(repr((sample.path.name, size, sample.labels, boxes)).encode())
    identity = getattr(dataset, "identity", None)
    content = {k: v for k, v in (identity or {}).items() if k not in LOCATION_KEYS}
    return {
        **content,
        "name": dataset.name,
        "images": len(dataset.samples),
        "samples_sha256": digest.hexdigest(),
    }


def _dataset_location(dataset: Dataset) -> dict[str, Any]:
    """Where the dataset lies (its absolute paths), recorded in ``run.json`` for people to
    read, not compared on resume."""
    identity = getattr(dataset, "identity", None) or {}
    return {k: identity[k] for k in LOCATION_KEYS if k in identity}


def manifest(
    protocol: Protocol, model: LoadedModel | ModelSpec, dataset: Dataset
) -> dict[str, Any]:
    """Everything that changes a row of ``protocol`` on ``dataset`` with ``model``, as the
    ``run.json`` of a run folder records it.

    Examples:
        >>> from gradcam.evaluate import Localization, read_synthetic
        >>> record = manifest(Localization(), ModelSpec("shapes"), read_synthetic("bench", 2))
        >>> record["protocol"], record["weights_sha256"], record["dataset"]["images"]
        ('localization', None, 2)
    """
    return {
        **protocol.settings(),
        **_model_identity(model),
        "dataset": _dataset_identity(dataset),
    }


def _loaded(model: LoadedModel | ModelSpec) -> LoadedModel:
    return model.load() if isinstance(model, ModelSpec) else model


#: A batch read from disk: its rows (unreadable images already have their error) and the
#: decoded images with their rows and samples.
Read = tuple[list[dict[str, Any]], list[tuple[dict[str, Any], Sample, Input]]]


def _scaled(annotation: Annotation, size: tuple[int, int], sx: float, sy: float) -> Annotation:
    """One annotation in the pixels of an image decoded at ``size`` (scaled by ``sx, sy``)."""
    box, mask = annotation.box, annotation.mask
    if box is not None:
        x0, y0, x1, y1 = box
        box = (
            int(x0 * sx),
            int(y0 * sy),
            max(int(x0 * sx), min(size[0] - 1, int(np.ceil((x1 + 1) * sx)) - 1)),
            max(int(y0 * sy), min(size[1] - 1, int(np.ceil((y1 + 1) * sy)) - 1)),
        )
    if mask is not None:
        small = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(
            size, Image.Resampling.NEAREST
        )
        mask = np.asarray(small) > 127
    return replace(annotation, box=box, mask=mask)


def decode_sample(sample: Sample) -> tuple[Sample, Input]:
    """A sample's image, decoded under :data:`gradcam.images.MAX_PIXELS`, with its annotations
    in the decoded image's pixels; a ``.npz`` sample's array as it is
    (:func:`~gradcam.evaluate.datasets.read_array`).

    A photo larger than the cap (a 10 KB palette PNG can declare 9000 x 9000 pixels) is decoded
    at reduced size, as ``gradcam explain`` decodes it, and its boxes and masks, which
    annotations give in the file's pixels (``sample.size``), are scaled to match. Annotations
    whose image size is unknown keep the full decode.

    Raises:
        ImageLoadError: the file cannot be read as an image.
        DatasetError: a ``.npz`` file holds no sample array.
    """
    if sample.path.suffix == ".npz":
        return sample, read_array(sample.path)
    if sample.annotations and sample.size is None:
        return sample, load_image(sample.path)
    image = load_image(sample.path, max_pixels=MAX_PIXELS)
    if sample.size is None or image.size == tuple(sample.size):
        return sample, image
    width, height = sample.size
    if width * height <= MAX_PIXELS:  # not reduced: the annotation's size is its own business
        return sample, image
    sx, sy = image.width / width, image.height / height
    scaled = tuple(_scaled(a, image.size, sx, sy) for a in sample.annotations)
    return replace(sample, annotations=scaled, size=image.size), image


def read_chunk(
    chunk: Chunk, decode: Callable[[Sample], tuple[Sample, Any]] = decode_sample
) -> Read:
    """Decode one batch's images (``decode``: :func:`decode_sample`, or a protocol's own
    :meth:`~gradcam.evaluate.base.Protocol.decode`); an unreadable one gets a row with its
    error."""
    rows: list[dict[str, Any]] = []
    readable: list[tuple[dict[str, Any], Sample, Input]] = []
    for index, sample in chunk:
        row: dict[str, Any] = {"index": index, "image": str(sample.path), "error": None}
        rows.append(row)
        try:
            decoded, image = decode(sample)
            readable.append((row, decoded, image))
        except (ImageLoadError, DatasetError) as exc:
            row["error"] = str(exc)
    return rows, readable


def _decoder(protocol: Protocol) -> Callable[[Sample], tuple[Sample, Any]]:
    """How ``protocol``'s inputs are made from its samples: its own ``decode`` (a job whose
    inputs are not image files), else :func:`decode_sample`."""
    decode: Callable[[Sample], tuple[Sample, Any]] = getattr(protocol, "decode", decode_sample)
    return decode


def score_chunk(scorer: Scorer, chunk: Chunk | Read) -> Batch:
    """Read (unless ``chunk`` was read already) and score one batch; failures become rows
    with an error, never lost batches.

    The model runs in the CPU's fast channels-last layout (:func:`gradcam.engine.fast_layout`):
    an evaluation is a throughput job, and its maps equal ``explain``'s to float rounding.
    """
    with fast_layout():
        return _score_chunk(scorer, chunk)


def _score_chunk(scorer: Scorer, chunk: Chunk | Read) -> Batch:
    rows, readable = chunk if isinstance(chunk, tuple) else read_chunk(chunk)
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


class _Meter:
    """The progress of a run in images: whole batches written, plus the fractions that
    scorers have reported for the batches still running (keyed by their first index)."""

    def __init__(self, update: Callable[[float], Any], total: int) -> None:
        self.update = update
        self.total = total
        self.whole = 0
        self.shown = 0.0
        self.partial: dict[int, float] = {}
        self.finished: set[int] = set()

    def tick(self, key: int, done: float) -> None:
        if key in self.finished:
            return  # a worker's last report, overtaken by its batch's result
        self.partial[key] = self.partial.get(key, 0.0) + done
        self._show()

    def finish(self, key: int, images: int) -> None:
        # The batch counts as its images, whatever its scorer reported on the way.
        self.finished.add(key)
        self.partial.pop(key, None)
        self.whole += images
        self._show()

    def _show(self) -> None:
        # Rounded and capped so that float sums never pass the total.
        now = min(float(self.total), round(self.whole + sum(self.partial.values()), 6))
        if now != self.shown:
            self.update(now - self.shown)
            self.shown = now


def _key(chunk: Chunk) -> int:
    return chunk[0][0]


def _in_process(
    protocol: Protocol, model: LoadedModel | ModelSpec, chunks: list[Chunk], meter: _Meter
) -> Iterator[tuple[int, Batch]]:
    current = [0]
    scorer = protocol.scorer(_loaded(model), lambda done: meter.tick(current[0], done))
    decode = _decoder(protocol)
    # The next batch is decoded in a thread while this one is scored (decoders release the
    # GIL), so reading images is off the model's critical path.
    with futures.ThreadPoolExecutor(1, thread_name_prefix="gradcam-decode") as decoder:
        ahead = decoder.submit(read_chunk, chunks[0], decode) if chunks else None
        for k, chunk in enumerate(chunks):
            assert ahead is not None
            read = ahead.result()
            following = k + 1 < len(chunks)
            ahead = decoder.submit(read_chunk, chunks[k + 1], decode) if following else None
            current[0] = _key(chunk)
            yield current[0], score_chunk(scorer, read)


_WORKER_SCORER: Scorer | None = None
_WORKER_DECODE: Callable[[Sample], tuple[Sample, Any]] = decode_sample
_WORKER_ERROR: GradCAMError | None = None
_WORKER_CHUNK = 0


def _exit_with(parent: int) -> None:
    """Exit this worker as soon as ``parent`` is gone (its pid then changes to a reaper's):
    a pool's workers block on a pipe that a killed parent never closes, so they would live on.
    Polling works everywhere; Linux's PR_SET_PDEATHSIG fires when the parent's *thread* ends."""
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process has that pid now
        return True
    return True


def _exit_without(driver: int) -> None:
    """Exit this Ray actor as soon as the process that started its local cluster, ``driver``,
    is gone (``kill -9`` runs no ``ray.shutdown()``; the actor's parent is Ray's, not the
    driver, so :func:`_exit_with` cannot tell)."""
    while _alive(driver):
        time.sleep(0.5)
    os._exit(1)


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (the disposition survives ``exec``, and
    Python keeps an ignored SIGINT ignored): a Ctrl-C reaches the whole process group, and a
    worker still importing torch would print its own KeyboardInterrupt traceback. The parent
    alone handles it, and stops the workers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Reporter:
    """A worker's :data:`Progress`: sends ``(chunk key, images)`` to the parent, at most
    five times a second, so that the bar moves without flooding the queue."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.pending = 0.0
        self.sent = 0.0

    def __call__(self, done: float) -> None:
        self.pending += done
        if time.monotonic() - self.sent >= 0.2:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.channel.put((_WORKER_CHUNK, self.pending))
            self.pending = 0.0
        self.sent = time.monotonic()


_WORKER_REPORTER: _Reporter | None = None


def _start_worker(
    protocol: Protocol, model: LoadedModel | ModelSpec, threads: int, parent: int, channel: Any
) -> None:
    global _WORKER_SCORER, _WORKER_ERROR, _WORKER_REPORTER, _WORKER_DECODE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C (and stops us)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    _WORKER_REPORTER = _Reporter(channel)
    _WORKER_DECODE = _decoder(protocol)
    try:
        _WORKER_SCORER = protocol.scorer(_loaded(model), _WORKER_REPORTER)
    except GradCAMError as exc:
        # Raised here it would break the pool and read as a crash: keep it for the first batch.
        _WORKER_ERROR = exc


def _score_in_worker(chunk: Chunk) -> Batch:
    global _WORKER_CHUNK
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    assert _WORKER_SCORER is not None and _WORKER_REPORTER is not None, "worker was not started"
    _WORKER_CHUNK = _key(chunk)
    try:
        return score_chunk(_WORKER_SCORER, read_chunk(chunk, _WORKER_DECODE))
    finally:
        # Leftovers belong to this batch: sent before its result, so that they are not
        # counted after the batch is (the parent drains the queue before each result).
        _WORKER_REPORTER.flush()


def _drain(channel: Any, meter: _Meter) -> None:
    while True:
        try:
            key, done = channel.get_nowait()
        except queues.Empty:
            return
        meter.tick(key, done)


def _in_processes(
    protocol: Protocol,
    model: LoadedModel | ModelSpec,
    chunks: list[Chunk],
    workers: int,
    meter: _Meter,
) -> Iterator[tuple[int, Batch]]:
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    channel = context.Queue()
    initargs = (protocol, model, threads, os.getpid(), channel)
    with futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=initargs
    ) as pool:
        try:
            yield from _score_in_pool(pool, chunks, workers, channel, meter)
        except BaseException:  # Ctrl-C, or an error: the workers ignore SIGINT, so stop them
            _stop_workers(pool)
            raise
    channel.close()


def _stop_workers(pool: futures.ProcessPoolExecutor) -> None:
    """Terminate ``pool``'s workers now rather than wait for their batches."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)


def _score_in_pool(
    pool: futures.ProcessPoolExecutor,
    chunks: list[Chunk],
    workers: int,
    channel: Any,
    meter: _Meter,
) -> Iterator[tuple[int, Batch]]:
    queue = iter(chunks)
    running: dict[futures.Future[Batch], Chunk] = {}
    # Two batches in flight per worker keeps them busy without holding the whole run.
    with _workers_ignore_sigint():  # the first submissions start every worker
        for chunk in queue:
            running[pool.submit(_score_in_worker, chunk)] = chunk
            if len(running) >= 2 * workers:
                break
    while running:
        finished, _ = futures.wait(running, timeout=0.25, return_when=futures.FIRST_COMPLETED)
        _drain(channel, meter)
        for future in finished:
            chunk = running.pop(future)
            try:
                batch = future.result()
            except BrokenProcessPool:
                raise GradCAMError(
                    "a worker process died (out of memory, or a script that starts workers "
                    "without an `if __name__ == '__main__':` guard); finished batches are "
                    "kept: rerun with --resume"
                ) from None
            yield _key(chunk), batch
            following = next(queue, None)
            if following is not None:
                running[pool.submit(_score_in_worker, following)] = following


class _RayScorer:
    """A Ray Data actor: loads the model once, then scores the batches it is given. With
    ``driver``, the pid of the process that started a local cluster, it exits when that
    process is gone, however it ended (:func:`_exit_without`)."""

    def __init__(
        self, protocol: Protocol, model: LoadedModel | ModelSpec, driver: int | None = None
    ) -> None:
        if driver is not None:
            threading.Thread(target=_exit_without, args=(driver,), daemon=True).start()
        self.scorer = protocol.scorer(_loaded(model))  # progress: per batch, in the driver
        self.decode = _decoder(protocol)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunk = [
            (int(i), pickle.loads(s)) for i, s in zip(batch["index"], batch["sample"], strict=True)
        ]
        rows, maps = score_chunk(self.scorer, read_chunk(chunk, self.decode))
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


def _check_reachable(address: str, timeout: float) -> None:
    """Refuse a Ray address whose host does not accept a connection within ``timeout``
    seconds: ``ray.init`` would retry it for minutes with only warnings."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise GradCAMError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise GradCAMError(
            f"cannot reach the Ray cluster at {address} within {timeout:g} s ({reason}): "
            "check the address, or run without --ray"
        ) from None


def _connect(ray: Any, address: str, timeout: float) -> None:
    """``ray.init`` at ``address``, given up after ``timeout`` seconds: a host that accepts
    connections but is not a Ray head makes it retry for minutes. The attempt goes on in a
    daemon thread, which does not keep the process alive."""
    outcome: list[Exception | None] = []

    def connect() -> None:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, name="gradcam-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise GradCAMError(
            f"the Ray cluster at {address} did not answer within {timeout:g} s: check the "
            "address (a Ray head's GCS port, or ray://HOST:10001), or run without --ray"
        )
    if outcome[0] is not None:
        reason = str(outcome[0]).strip().splitlines()[0] if str(outcome[0]).strip() else ""
        raise GradCAMError(
            f"cannot connect to the Ray cluster at {address}: {reason or type(outcome[0]).__name__}"
        )


def _start_reaper() -> subprocess.Popen[bytes] | None:
    """Start :mod:`gradcam.evaluate.reaper` for this process (Linux): the local Ray cluster's
    processes then go with it even after ``kill -9``. In a session of its own, so that a
    Ctrl-C to this process group does not stop it."""
    if not Path("/proc/self/stat").exists():
        return None
    script = Path(__file__).with_name("reaper.py")
    return subprocess.Popen(
        [sys.executable, str(script), str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _on_ray(
    protocol: Protocol,
    model: LoadedModel | ModelSpec,
    chunks: list[Chunk],
    workers: int,
    address: str | None,
    batch_size: int,
    timeout: float,
) -> Iterator[tuple[int, Batch]]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None:
        _check_reachable(address, timeout)
    ray = _import_ray()
    started = False
    reaper = None
    if not ray.is_initialized():
        if address is None:
            # The read task needs a CPU besides the actors, or the pipeline waits forever.
            ray.init(
                num_cpus=workers + 2,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            reaper = _start_reaper()
        else:
            _connect(ray, address, timeout)
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
            # A cluster started here goes with this process, even after kill -9.
            fn_constructor_args=(protocol, model, os.getpid() if address is None else None),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            records = [pickle.loads(r) for r in batch["record"]]
            rows = [r for r, _ in records]
            # Ray regroups records freely: the batch's key is its first image's.
            yield int(rows[0]["index"]), (rows, [m for _, m in records])
    finally:
        if started:
            ray.shutdown()
        if reaper is not None:
            reaper.kill()
            reaper.wait()


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
    ray_timeout: float = 30.0,
    progress: bool | Progress = True,
) -> ProtocolResult:
    """Run ``protocol`` over ``dataset`` and summarize it.

    Args:
        protocol: a :class:`~gradcam.evaluate.protocols.Protocol` (its settings).
        model: a loaded model, or a :class:`ModelSpec` that each worker loads itself (give
            a spec, with ``loaded=`` to reuse a model loaded here, so that the manifest names
            the weights file and its hash).
        dataset: the images and their annotations.
        out: a run folder (see :mod:`gradcam.evaluate.store`); rows and maps stream there,
            and its ``run.json`` records everything that changes a row (see :func:`manifest`).
            Without it, rows are kept in memory and maps are dropped.
        resume: continue the run in ``out``, skipping finished images; refused, naming the
            difference, when the manifest differs.
        limit: only the first ``limit`` images (at least 1).
        batch_size: images per batch (a batch is the unit of work and of writing).
        workers: local processes (or Ray actors), each with its own copy of the model.
        ray: run on Ray Data: ``True`` starts a local Ray, a string is a cluster address.
        ray_timeout: seconds to wait for a Ray cluster at ``ray``'s address to answer.
        progress: show a progress bar (images, with fractions of slow images; rate and ETA)
            on stderr; or a function told how many images were done each time some are.

    Returns:
        The summary table and every row, in dataset order.

    Raises:
        GradCAMError: bad settings, a dataset the protocol cannot score, an output folder
            that cannot be written or holds another run, an unreachable Ray cluster, or an
            error in a worker's setup (such as an unknown layer).

    Examples:
        >>> from gradcam.evaluate import Localization, read_synthetic
        >>> dataset = read_synthetic("bench", 4)
        >>> result = run(Localization(), ModelSpec("shapes"), dataset, limit=2, progress=False)
        >>> [row["index"] for row in result.rows], result.failed
        ([0, 1], [])
    """
    if batch_size < 1:
        raise GradCAMError(f"batch size must be at least 1, got {batch_size}")
    if workers < 1:
        raise GradCAMError(f"workers must be at least 1, got {workers}")
    if limit is not None and limit < 1:
        raise GradCAMError(f"limit must be at least 1 image, got {limit}")
    if not ray_timeout > 0:
        raise GradCAMError(f"ray timeout must be a positive number of seconds, got {ray_timeout}")
    protocol.check(dataset)
    samples = dataset.samples[:limit] if limit is not None else dataset.samples
    store = None
    if out is not None:
        store = ResultStore(
            make_folder(out),
            manifest(protocol, model, dataset),
            resume=resume,
            where={"dataset": _dataset_location(dataset)},
        )
    done = store.done if store is not None else set()
    pending = [(i, s) for i, s in enumerate(samples) if i not in done]
    chunks = _chunks(pending, batch_size)
    kept: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(samples),
        initial=len(samples) - len(pending),
        desc=protocol.name,
        unit="image",
        disable=progress is not True or not pending,
        file=sys.stderr,
        # Counts are fractional within slow images: one decimal, and the rate and ETA.
        bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]",
    )
    meter = _Meter(progress if callable(progress) else bar.update, len(pending))
    if ray:
        address = None if ray is True else str(ray)
        batches = _on_ray(protocol, model, chunks, workers, address, batch_size, ray_timeout)
    elif workers > 1 and len(chunks) > 1:
        batches = _in_processes(protocol, model, chunks, workers, meter)
    else:
        batches = _in_process(protocol, model, chunks, meter)
    with bar:
        for key, (rows, maps) in batches:
            if store is not None:
                store.write(rows, maps)
            else:
                kept.extend(rows)
            for row in rows:
                if progress is True and row["error"] is not None:
                    tqdm.write(f"gradcam: error: {row['error']}", file=sys.stderr)
            meter.finish(key, len(rows))
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
