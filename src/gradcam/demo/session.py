"""The web demo's callbacks as plain, typed functions: no Gradio in here.

A :class:`DemoSession` serves one model to every visitor of the page. For an uploaded photo and
a class (default: the top-1 prediction) it computes, with :func:`gradcam.explain.explain_image`
(one forward pass, one backward pass to the layer and one guided backward pass to the input):

- Grad-CAM ``L^c = ReLU(sum_k alpha_k^c A^k)`` overlaid on the photo (section 3),
- the counterfactual map, with negated gradients (section 3.3),
- Guided Backpropagation and Guided Grad-CAM, their product with the upsampled Grad-CAM
  (section 3.2),
- the localization box of section 4.1 (15% of the map's maximum, largest segment) on the photo,

at any spatial layer of the model (appendix B, Fig. 13: the maps blur and lose class
discrimination as the layer gets shallower).

Thread safety: web servers run callbacks in worker threads, and an explanation registers hooks
on the shared model for the duration of a call (and uses ``warnings.catch_warnings``, which is
process-global). Model calls are therefore serialized by one lock; decoding, hashing, rendering
and writing files run outside it, so concurrent visitors overlap everything but the model's
forward and backward passes, and each call's hooks see only its own input.
Slow methods (``many_passes`` in the registry) run on their own copy of the model under a lock
of their own, one request at a time (another is refused at once), and stop after
:data:`MAX_SLOW_PASSES` images through the model, so a Grad-CAM request never waits for them.

Caching: photos are keyed by the SHA-256 of the uploaded file's bytes. The decoded photo and its
top-5 predictions are kept per photo, and the rendered maps per (photo, layer, class), in small
LRU caches: switching back to a class or layer seen before, or asking again for the same photo,
runs no model pass at all. A class or layer not seen before needs one forward and backward pass
(about 40 ms for EfficientNet-Lite0 on a CPU), since keeping autograd graphs alive between
requests would hold far more memory than recomputing costs time.

Limits: whatever a visitor sends, the server's memory and disk stay bounded. Uploads are at
most ``max_bytes`` and are decoded at most :data:`~gradcam.images.MAX_PIXELS` pixels (larger
photos at reduced size); the caches hold a fixed number of entries; a layer sweep covers at
most :data:`MAX_SWEEP_LAYERS` layers; the download folder keeps at most ``max_folder_bytes``
of files (the least recently written go first), and is deleted by :meth:`DemoSession.close`
(which :func:`gradcam.demo.app.serve` calls when the server stops, on Ctrl-C or SIGTERM).
A folder left by a server that crashed is deleted by the next one
(:func:`clean_stale_folders`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from gradcam.dissect import Dissection, DissectionError, shipped_names
from gradcam.dissect.text import TextExplanation, text_explanations
from gradcam.errors import GradCAMError, ImageLoadError, LayerError
from gradcam.explain import Explanation, MapEntry, explain_image, map_arrays
from gradcam.fusion import folded_from
from gradcam.images import MAX_PIXELS, load_image
from gradcam.layers import spatial_layers
from gradcam.methods import CAMResult, method_spec, method_specs
from gradcam.methods.registry import DEFAULT_METHOD, GRAD_CAM
from gradcam.models import DEFAULT_MODEL, LoadedModel
from gradcam.paths import slug
from gradcam.util import LRU
from gradcam.viz import gradient_image, overlay, side_by_side

__all__ = [
    "FOLDER_PREFIX",
    "MAX_CACHE_BYTES",
    "MAX_FOLDER_BYTES",
    "MAX_NAME_CHARS",
    "MAX_SLOW_PASSES",
    "MAX_SWEEP_LAYERS",
    "METHODS",
    "SLOW_NOTE",
    "DemoSession",
    "Photo",
    "Prediction",
    "TextViews",
    "Views",
    "clean_stale_folders",
    "decode_upload",
    "default_names",
    "heatmap_choices",
    "is_slow",
    "pass_limit",
    "prune_folder",
    "requested_class",
    "upload_key",
]

#: The paper's panels (Fig. 1 and 3.3), in the page's order: method name -> panel title. The
#: first panel shows the chosen heatmap method (Grad-CAM unless another is chosen).
METHODS: dict[str, str] = {
    name: method_spec(name).title
    for name in (GRAD_CAM, "counterfactual", "guided-backprop", "guided-gradcam")
}


#: Download files kept per server, in bytes; the least recently written are deleted beyond it.
MAX_FOLDER_BYTES = 256 * 2**20

#: Gradio's uploads and outputs kept per server, in bytes (about 4.6 MB a request): its cache
#: lies in the server's own folder (:attr:`DemoSession.cache_folder`), pruned to this size
#: (least recently written first) as the download folder is, and deleted with it.
MAX_CACHE_BYTES = 256 * 2**20

#: The longest class, layer or method name read from a request, in characters.
MAX_NAME_CHARS = 200

#: The most layers a layer sweep explains (one forward and backward pass each).
MAX_SWEEP_LAYERS = 8

#: The most images one request may send through the model for a slow method (one whose
#: registry entry says ``many_passes``: Score-CAM's family, occlusion, ablation, SmoothGrad...);
#: beyond it the request stops with one line. Score-CAM at EfficientNet-Lite0's last layer
#: (1,280 channels) fits; SS-CAM there (35 x 1,280) does not.
MAX_SLOW_PASSES = 2048

#: What the page says about slow methods (next to the method's choice).
SLOW_NOTE = (
    f"Methods marked (slow) run one at a time, on their own copy of the model so that Grad-CAM "
    f"never waits for them, and stop after {MAX_SLOW_PASSES} model passes."
)

#: A server's download folder is ``<temp>/gradcam-demo-<pid>-<random>``: the process id tells a
#: later server whether the folder's owner is still running.
FOLDER_PREFIX = "gradcam-demo-"

# Files the session writes to its folder (the example scenes of the VL tabs sit in a subfolder).
_DOWNLOADS = (".npz", ".png")


def _shorter(name: str) -> str:
    """``name``, cut to :data:`MAX_NAME_CHARS` (an error message quotes it to the visitor)."""
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "..."


def _folder_owner(name: str) -> int | None:
    pid, dash, _ = name.removeprefix(FOLDER_PREFIX).partition("-")
    return int(pid) if name.startswith(FOLDER_PREFIX) and dash and pid.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_folders(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Delete the download folders of demo servers that are no longer running.

    A server deletes its folder when it stops; one that crashed (or was killed with SIGKILL)
    leaves it, with its visitors' maps. Folders are named after their server's process id
    (:data:`FOLDER_PREFIX`), so a new server can tell whose owner is gone.

    Args:
        root: where to look (default: the system's temporary folder).

    Returns:
        The folders deleted.

    Examples:
        >>> clean_stale_folders()  # nothing left by a crashed server
        []
    """
    base = Path(root if root is not None else tempfile.gettempdir())
    removed = []
    for folder in sorted(base.glob(f"{FOLDER_PREFIX}*")):
        owner = _folder_owner(folder.name)
        if owner is None or owner == os.getpid() or _running(owner) or not folder.is_dir():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def prune_folder(
    folder: str | os.PathLike[str],
    max_bytes: int,
    *,
    keep: Path | None = None,
    suffixes: tuple[str, ...] | None = None,
    recursive: bool = True,
) -> int:
    """Delete the least recently written files under ``folder`` (and its subfolders) until
    they hold at most ``max_bytes``; returns the bytes left. ``keep`` (a file just made for a
    visitor) is never deleted, nor files being written (``.tmp.`` in the name); with
    ``suffixes``, only files ending so count; ``recursive=False`` looks at ``folder``'s own
    files only. Emptied subfolders are removed.

    Examples:
        >>> for i, name in enumerate(["a/old.png", "b/new.png"]):
        ...     Path(name).parent.mkdir(exist_ok=True)
        ...     _ = Path(name).write_bytes(b"x" * 10)
        ...     os.utime(name, ns=(i, i))
        >>> prune_folder(".", 15), Path("a").exists(), Path("b/new.png").exists()
        (10, False, True)
    """
    files = []
    for parent, subfolders, names in os.walk(folder):
        if not recursive:
            subfolders.clear()
        for name in names:
            path = Path(parent, name)
            if ".tmp." in name or (suffixes is not None and not name.endswith(suffixes)):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime_ns, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total <= max_bytes:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size
            with contextlib.suppress(OSError):  # not empty, or already gone
                if path.parent != Path(folder):
                    path.parent.rmdir()
    return total


def is_slow(method: str) -> bool:
    """Whether the demo runs ``method`` in its slow lane: its registry entry says its passes
    grow with channels, samples or windows (``needs.many_passes``).

    Examples:
        >>> is_slow("gradcam"), is_slow("score-cam")
        (False, True)
    """
    return method_spec(method).needs.many_passes


@contextlib.contextmanager
def pass_limit(module: torch.nn.Module, limit: int, title: str) -> Any:
    """Count the images ``module`` sees (the batch sizes of its forward calls, and of its
    batch-norm-folded copies', :func:`gradcam.fusion.folded_from`, which perturbation methods
    make and run instead) and stop the call that takes them beyond ``limit`` with a one-line
    :class:`GradCAMError`.

    Examples:
        >>> net = torch.nn.Linear(2, 2)
        >>> with pass_limit(net, 3, "Demo"):
        ...     _ = net(torch.zeros(2, 2)); _ = net(torch.zeros(2, 2))
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: Demo needs more than 3 model passes here; the demo stops \
there: choose a faster method or a layer with fewer channels
    """
    seen = 0

    def count(called: torch.nn.Module, args: tuple[Any, ...]) -> None:
        nonlocal seen
        if called is not module and folded_from(called) is not module:
            return
        first = args[0] if args else None
        seen += first.shape[0] if isinstance(first, torch.Tensor) and first.dim() else 1
        if seen > limit:
            raise GradCAMError(
                f"{title} needs more than {limit} model passes here; the demo stops there: "
                "choose a faster method or a layer with fewer channels"
            )

    # On every module: the copies are made during the block, by the methods that run them.
    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        yield
    finally:
        handle.remove()


def heatmap_choices() -> list[str]:
    """The methods the first panel can show: Grad-CAM, then every registered heatmap method
    that is not already a panel of its own.

    Examples:
        >>> heatmap_choices()[:2]
        ['gradcam', 'cam']
    """
    fixed = list(METHODS)[1:]
    return [s.name for s in method_specs() if s.kind == "heatmap" and s.name not in fixed]


@dataclass(frozen=True)
class Prediction:
    """One of the model's top classes for a photo: ``score`` is ``y^c``, before softmax."""

    class_id: int
    name: str
    score: float
    probability: float


@dataclass(frozen=True)
class Photo:
    """An uploaded photo, decoded safely.

    Attributes:
        key: SHA-256 of the file's bytes (the cache key).
        image: the full-size RGB photo the model sees (through the model's preprocessing).
        display: the photo shown on the page, at most ``max_side`` pixels on its longer side.
    """

    key: str
    image: Image.Image
    display: Image.Image


@dataclass(frozen=True)
class Views:
    """Everything the page shows for one photo, class and layer.

    Attributes:
        photo: the photo.
        predictions: the model's top-5 classes for it.
        class_id, class_name, score: the explained class and its score ``y^c``.
        layer: the dotted name of the layer ``A``.
        method: the heatmap method of the first panel (``"gradcam"`` by default).
        box: the localization box of that method's map, ``(x0, y0, x1, y1)`` in photo pixels.
        pictures: panel title -> picture at display size, in the page's order: the photo with
            the box, the chosen method's map, then the other entries of :data:`METHODS`.
        explanation: the maps themselves (see :func:`gradcam.explain.explain_image`).
        seconds: time spent computing these views (0 when they came from the cache).
        cached: whether they came from the cache.
    """

    photo: Photo
    predictions: tuple[Prediction, ...]
    class_id: int
    class_name: str
    score: float
    layer: str
    method: str
    box: tuple[int, int, int, int]
    pictures: dict[str, Image.Image]
    explanation: Explanation
    seconds: float
    cached: bool = False


@dataclass(frozen=True)
class TextViews:
    """The textual explanation of one photo's class (section 7 of the paper, Fig. 9).

    Attributes:
        text: the top-5 positive and bottom-5 negative units by Grad-CAM's ``alpha_k^c``
            with their names (:class:`~gradcam.dissect.text.TextExplanation`).
        pictures: ``(caption, picture)`` for each named unit, positive ones first: its
            activation map ``A^k`` over the photo, at display size.
        seconds: time spent computing them (0 when they came from the cache).
        cached: whether they came from the cache.
    """

    text: TextExplanation
    pictures: tuple[tuple[str, Image.Image], ...]
    seconds: float
    cached: bool = False


def default_names(loaded: LoadedModel) -> Dissection | None:
    """The shipped neuron names (:func:`gradcam.dissect.shipped_names`) when ``loaded`` is
    the model they name (EfficientNet-Lite0 with its weights), else ``None``: other models
    have no names until a user dissects them. :class:`DemoSession` also checks the layer and
    its number of units, and leaves out names that do not fit.

    Examples:
        >>> default_names(lite0).layer
        '_head_act'
        >>> default_names(shapes) is None
        True
    """
    if loaded.name != DEFAULT_MODEL or not loaded.pretrained:  # random weights: other units
        return None
    return shipped_names()


def requested_class(loaded: LoadedModel, class_name: str | int | None) -> int | None:
    """The class id a visitor asked for by name or id; ``None`` (the top-1) for none or blank.

    Raises:
        GradCAMError: a name longer than :data:`MAX_NAME_CHARS` (matching it against every
            class name costs its length); no or several matching classes
            (:class:`~gradcam.errors.TargetError`).

    Examples:
        >>> [requested_class(shapes, asked) for asked in ("star", " ", 7, None)]
        [3, None, 7, None]
    """
    if class_name is None or not str(class_name).strip():
        return None
    text = str(class_name)
    if len(text) > MAX_NAME_CHARS:
        raise GradCAMError(
            f"a class name of {len(text)} characters: at most {MAX_NAME_CHARS} are read"
        )
    return loaded.class_index(class_name)


def _scaled_box(
    box: tuple[int, int, int, int], size: tuple[int, int], display: tuple[int, int]
) -> tuple[int, int, int, int]:
    sx, sy = display[0] / size[0], display[1] / size[1]
    x0, y0, x1, y1 = box
    return round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)


def upload_key(
    path: str | os.PathLike[str] | None, max_bytes: int, missing: str
) -> tuple[str, str]:
    """``(path, SHA-256 of its bytes)`` of an uploaded file, the key of the upload caches.

    Raises:
        ImageLoadError: ``missing`` when no file is given; no such file; larger than
            ``max_bytes`` (the message names the upload, not the server's temporary path).
    """
    if path is None or not os.fspath(path):
        raise ImageLoadError(missing)
    name = os.fspath(path)
    shown = os.path.basename(name)
    try:
        size = os.path.getsize(name)
    except OSError:
        raise ImageLoadError(f"{shown}: no such file") from None
    if size > max_bytes:
        limit = max_bytes / 2**20
        raise ImageLoadError(f"{shown}: file too large ({size / 2**20:.1f} MB > {limit:g} MB)")
    with open(name, "rb") as file:
        return name, hashlib.sha256(file.read()).hexdigest()


def decode_upload(name: str) -> Image.Image:
    """:func:`gradcam.load_image` of an upload, its errors naming the upload only.

    Photos above :data:`~gradcam.images.MAX_PIXELS` are decoded at reduced size.

    Raises:
        ImageLoadError: not an image, corrupt, or a decompression bomb.
    """
    try:
        return load_image(name, max_pixels=MAX_PIXELS)
    except ImageLoadError as exc:
        # The server's temporary path means nothing to the visitor: name the upload only.
        raise ImageLoadError(str(exc).replace(name, os.path.basename(name))) from None


class DemoSession:
    """One model served to every visitor: the page's callbacks, usable without a web server.

    Args:
        loaded: the model, from :func:`gradcam.load_model`.
        cache_size: photos kept in memory (decoded at full size, with their top-5).
        views_size: rendered views kept, per (photo, layer, class): each holds its maps at input
            resolution and five pictures at display size, about 5 to 20 MB.
        max_side: longest side of the pictures shown, in pixels (the model always sees the
            full photo through its own preprocessing, as ``gradcam explain`` does).
        max_bytes: largest file accepted, in bytes.
        folder: where download files are written (default: a new temporary folder, deleted by
            :meth:`close`).
        max_folder_bytes: download files kept in ``folder``, in bytes; beyond it the least
            recently written are deleted.
        sweeps_size: layer sweeps kept, per (photo, class): each holds a picture per layer at
            display size.
        names: neuron names of the model's layer for the textual explanations
            (:meth:`text_explanation`); default: :func:`default_names` (the shipped names for
            the embedded model, else none).

    Examples:
        >>> from gradcam.synthetic import make_scene
        >>> make_scene(0, shapes=["star"]).image.save("star.png")  # a synthetic photo: one star
        >>> session = DemoSession(gradcam.load_model("shapes"))
        >>> views = session.explain("star.png")               # top-1 class, default layer
        >>> views.class_name, views.layer, views.box
        ('star', 'features', (62, 0, 113, 49))
        >>> list(views.pictures)
        ['Localization', 'Grad-CAM', 'Counterfactual', 'Guided Backprop', 'Guided Grad-CAM']
        >>> session.explain("star.png").cached                # the same request: no model pass
        True
        >>> views = session.explain("star.png", "cross", method="score-cam")
        >>> views.pictures["Score-CAM"].save("cross.png")
        >>> session.close()                                   # deletes the download folder
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        cache_size: int = 8,
        views_size: int = 32,
        max_side: int = 1024,
        max_bytes: int = 20 * 1024 * 1024,
        folder: str | os.PathLike[str] | None = None,
        max_folder_bytes: int = MAX_FOLDER_BYTES,
        sweeps_size: int = 8,
        names: Dissection | None = None,
    ) -> None:
        self.loaded = loaded
        self.max_side = max_side
        self.max_bytes = max_bytes
        self.max_folder_bytes = max_folder_bytes
        self._owns_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._folder_lock = threading.Lock()
        size = loaded.preprocess.size
        probe = torch.zeros(1, 3, size, size)
        #: ``(name, (C, h, w))`` of every layer usable as ``A``, shallowest first.
        self.layers: list[tuple[str, tuple[int, ...]]] = [
            (name, shape[1:]) for name, shape in spatial_layers(loaded.module, probe)
        ]
        self._layer_names = {name for name, _ in self.layers}
        self._model_lock = threading.Lock()
        # Slow methods run one at a time on their own copy of the model (made on first use),
        # so that they never hold the lock that Grad-CAM requests wait for.
        self._slow_lock = threading.Lock()
        self._slow_model: LoadedModel | None = None
        self._cache_lock = threading.Lock()
        self._photos: LRU[str, Photo] = LRU(cache_size)
        self._predictions: LRU[str, tuple[Prediction, ...]] = LRU(cache_size)
        self._views: LRU[tuple[str, str, int, str], Views] = LRU(views_size)
        self._sweeps: LRU[tuple[str, int], list[tuple[str, Image.Image]]] = LRU(sweeps_size)
        #: The neuron names of the textual explanations (``None``: the page has no such panel).
        self.names = default_names(loaded) if names is None else names
        problem = None if self.names is None else self._names_problem(self.names)
        if problem is not None and names is not None:
            raise DissectionError(problem)
        if problem is not None:  # the default names, for another build of the model
            self.names = None
        self._texts: LRU[tuple[str, int], TextViews] = LRU(views_size)

    def _names_problem(self, names: Dissection) -> str | None:
        """Why ``names`` do not fit the model (its name, layer, units), or ``None``."""
        if names.model and names.model != self.loaded.name:
            return f"the neuron names are for model {names.model!r}, not {self.loaded.name!r}"
        shape = dict(self.layers).get(names.layer)
        if shape is None or shape[0] != names.channels:
            has = "no such spatial layer" if shape is None else f"{shape[0]} units there"
            return (
                f"the neuron names are for layer {names.layer!r} with {names.channels} units; "
                f"model {self.loaded.name!r} has {has}"
            )
        return None

    def close(self) -> None:
        """Delete the download folder if this session made it (a folder given is left)."""
        if self._owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's class names, by class id."""
        return self.loaded.class_names

    @property
    def default_layer(self) -> str:
        """The deepest spatial layer: the paper's last convolutional feature maps."""
        return self.loaded.default_layer

    def open(self, path: str | os.PathLike[str] | None) -> Photo:
        """Decode an uploaded file (EXIF-rotated, 16-bit, CMYK, RGBA, gray -> 8-bit RGB).

        Raises:
            ImageLoadError: no file, too large, not an image, corrupt, or a decompression bomb;
                the message names the file and the reason.
        """
        name, key = upload_key(path, self.max_bytes, "no photo given: upload an image file")
        with self._cache_lock:
            known = self._photos.get(key)
        if known is not None:
            return known
        image = decode_upload(name)
        display = image.copy()
        display.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        photo = Photo(key, image, display)
        with self._cache_lock:
            self._photos.put(key, photo)
        return photo

    def _class_id(self, class_name: str | int | None) -> int | None:
        return requested_class(self.loaded, class_name)

    def _method(self, method: str | None) -> str:
        name = _shorter(method or DEFAULT_METHOD)
        choices = heatmap_choices()
        if name not in choices:
            raise GradCAMError(
                f"the page shows no method {name!r}; choose from {', '.join(choices)}"
            )
        return name

    def _layer(self, layer: str | None) -> str:
        name = _shorter(layer or self.default_layer)
        if name not in self._layer_names:
            raise LayerError(f"model has no spatial layer named {name!r}")
        return name

    def explain(
        self,
        path: str | os.PathLike[str] | None,
        class_name: str | int | None = None,
        layer: str | None = None,
        method: str | None = None,
    ) -> Views:
        """All maps of one photo for one class at one layer, rendered at display size.

        Args:
            path: the uploaded file.
            class_name: a class name or id (see :meth:`LoadedModel.class_index`); ``None`` or
                ``""`` explains the top-1 prediction.
            layer: a dotted layer name from :attr:`layers`; ``None`` uses the default layer.
            method: the first panel's method, from :func:`heatmap_choices`; ``None`` is
                Grad-CAM.

        Raises:
            GradCAMError: a bad file (:class:`ImageLoadError`), an unknown class, layer or
                method.
        """
        started = time.perf_counter()
        photo = self.open(path)
        layer_name = self._layer(layer)
        method_name = self._method(method)
        class_id = self._class_id(class_name)
        with self._cache_lock:
            predictions = self._predictions.get(photo.key)
            if class_id is None and predictions:
                class_id = predictions[0].class_id
            key = None if class_id is None else (photo.key, layer_name, class_id, method_name)
            known = None if key is None else self._views.get(key)
        if known is not None:
            return replace(known, seconds=0.0, cached=True)
        run = self._explain_slow if is_slow(method_name) else self._explain_fast
        explanation = run(
            photo.image,
            methods=[method_name, *list(METHODS)[1:]],
            classes=None if class_id is None else [class_id],
            layer=layer_name,
        )
        views = self._render(photo, explanation, method_name, started)
        with self._cache_lock:
            self._predictions.put(photo.key, views.predictions)
            self._views.put((photo.key, layer_name, views.class_id, method_name), views)
        return views

    def _explain_fast(self, image: Image.Image, **request: Any) -> Explanation:
        with self._model_lock:
            return explain_image(self.loaded, image, **request)

    def _explain_slow(self, image: Image.Image, **request: Any) -> Explanation:
        """A slow method's request: refused at once while another one runs (a waiting request
        would hold one of the server's workers), stopped beyond :data:`MAX_SLOW_PASSES`."""
        title = method_spec(request["methods"][0]).title
        if not self._slow_lock.acquire(blocking=False):
            raise GradCAMError(
                f"another visitor's slow method is running and {title} is slow: slow methods run "
                "one at a time; try again in a minute, or choose a fast method such as Grad-CAM"
            )
        try:
            if self._slow_model is None:
                with self._model_lock:  # never copy the model while a request's hooks are on it
                    module = copy.deepcopy(self.loaded.module)
                self._slow_model = replace(self.loaded, module=module)
            with pass_limit(self._slow_model.module, MAX_SLOW_PASSES, title):
                return explain_image(self._slow_model, image, **request)
        finally:
            self._slow_lock.release()

    def _render(self, photo: Photo, explanation: Explanation, method: str, started: float) -> Views:
        entries: dict[str, MapEntry] = {e.method: e for e in explanation.entries}
        cam = entries[method]
        if cam.box is None:  # heatmap entries always have one; keeps the type checker honest
            raise GradCAMError(f"{method_spec(method).title} gave no localization box")
        display = photo.display
        box = _scaled_box(cam.box, photo.image.size, display.size)
        located = display.copy()
        # The box alone, on the photo, in the same green as the overlays.
        width = max(2, round(min(display.size) / 150))
        ImageDraw.Draw(located).rectangle(box, outline=(0, 255, 0), width=width)
        pictures = {"Localization": located}
        for name in [method, *list(METHODS)[1:]]:
            entry, title = entries[name], method_spec(name).title
            if entry.box is None:
                pictures[title] = gradient_image(entry.map, display.size)
            else:
                shown = _scaled_box(entry.box, photo.image.size, display.size)
                pictures[title] = overlay(display, entry.map, box=shown)
        predictions = tuple(
            Prediction(int(p["class"]), str(p["name"]), float(p["score"]), float(p["probability"]))
            for p in explanation.predictions
        )
        return Views(
            photo=photo,
            predictions=predictions,
            class_id=cam.class_id,
            class_name=cam.class_name,
            score=cam.score,
            layer=explanation.layer,
            method=method,
            box=cam.box,
            pictures=pictures,
            explanation=explanation,
            seconds=time.perf_counter() - started,
        )

    @property
    def sweep_layers(self) -> list[str]:
        """The deepest layer at each spatial resolution, shallowest first (appendix B, Fig. 13).

        These end the model's stages (for ResNets ``layer1`` to ``layer4``), up to the default
        layer, which is the last. A model with more than :data:`MAX_SWEEP_LAYERS` resolutions
        is swept at that many, evenly spaced from the first to the last.
        """
        # Layers after the default one only pool or reshape its maps: they are left out.
        last: dict[tuple[int, ...], str] = {}
        for name, shape in self.layers:
            last.pop(shape[1:], None)  # a resolution is placed by its deepest layer
            last[shape[1:]] = name
            if name == self.default_layer:
                break
        names = list(last.values())
        if len(names) <= MAX_SWEEP_LAYERS:
            return names
        step = (len(names) - 1) / (MAX_SWEEP_LAYERS - 1)
        return [names[round(i * step)] for i in range(MAX_SWEEP_LAYERS)]

    def layer_sweep(
        self, path: str | os.PathLike[str] | None, class_name: str | int | None = None
    ) -> list[tuple[str, Image.Image]]:
        """Grad-CAM of one class at each of :attr:`sweep_layers`: ``(caption, overlay)`` pairs.

        The paper's appendix B (Fig. 13): maps from shallow layers are fine-grained but not
        class-discriminative; they coarsen and localize the class as the layer deepens. One
        forward and backward pass per layer; cached per (photo, class).
        """
        photo = self.open(path)
        class_id = self._class_id(class_name)
        if class_id is None:
            class_id = self.explain(path).class_id
        with self._cache_lock:
            known = self._sweeps.get((photo.key, class_id))
        if known is not None:
            return known
        panels = []
        for layer in self.sweep_layers:
            with self._model_lock:
                found = explain_image(self.loaded, photo.image, classes=[class_id], layer=layer)
            entry = found.entries[0]
            box = (
                None
                if entry.box is None
                else _scaled_box(entry.box, photo.image.size, photo.display.size)
            )
            height, width = entry.map.shape[-2:]
            caption = f"{layer} ({height}×{width})"
            panels.append((caption, overlay(photo.display, entry.map, box=box)))
        with self._cache_lock:
            self._sweeps.put((photo.key, class_id), panels)
        return panels

    def text_explanation(
        self,
        path: str | os.PathLike[str] | None,
        class_name: str | int | None = None,
    ) -> TextViews:
        """The class's most important units by name, and each named unit's map (section 7).

        Grad-CAM's weights ``alpha_k^c = 1/Z sum_i sum_j dy^c/dA^k_ij`` (eq. 1) at the named
        layer rank its units: the top-5 positive and bottom-5 negative, with their names, IoU
        and ``alpha`` (:func:`gradcam.dissect.text.rank_neurons`). ``alpha`` is the weights of
        the Grad-CAM views of :meth:`explain` at that layer (from its cache, or computed and
        cached there: one forward and backward pass); the maps ``A^k`` come from one more
        no-grad forward pass that captures the layer, since the views keep no activations.
        Cached per (photo, class); model passes hold the session's model lock.

        Args:
            path: the uploaded file.
            class_name: a class name or id; ``None`` or ``""``: the top-1 prediction.

        Raises:
            GradCAMError: no neuron names for this model; a bad file or class.

        Examples:
            >>> session = DemoSession(lite0)
            >>> photo.save("cat_and_coffee.png")
            >>> found = session.text_explanation("cat_and_coffee.png")
            >>> print(found.text)
            espresso: positive: star (unit 1269, IoU 0.06); negative: crescent (unit 795, IoU 0.06)
            >>> len(found.pictures), found.pictures[0][0]
            (2, '+5 star (unit 1269, IoU 0.06), α 0.0012')
            >>> session.close()
        """
        started = time.perf_counter()
        names = self.names
        if names is None:
            raise GradCAMError(
                f"no neuron names for model {self.loaded.name!r}: textual explanations are "
                f"shown for the embedded {DEFAULT_MODEL} only"
            )
        views = self.explain(path, class_name, names.layer)
        key = (views.photo.key, views.class_id)
        with self._cache_lock:
            known = self._texts.get(key)
        if known is not None:
            return replace(known, seconds=0.0, cached=True)
        result = views.explanation.results[GRAD_CAM]
        assert isinstance(result, CAMResult)  # explain()'s first method is Grad-CAM
        with self._model_lock:
            text = text_explanations(self.loaded, views.explanation.input, result, names)[0]
        display = views.photo.display
        pictures = []
        for sign, side in (("+", text.positive), ("−", text.negative)):
            for i, unit in enumerate(side, start=1):
                if unit.name is not None:
                    caption = f"{sign}{i} {unit.label()}, α {unit.alpha:.2g}"
                    pictures.append((caption, overlay(display, unit.activation)))
        found = TextViews(text, tuple(pictures), time.perf_counter() - started)
        with self._cache_lock:
            self._texts.put(key, found)
        return found

    def text_summary(self, found: TextViews) -> str:
        """Markdown for a textual explanation: the sentence (the paper's Fig. 9 form), then
        a table of the ten ranked units (named or not) and how long it took."""
        text = found.text
        where = "from the cache" if found.cached else f"in {found.seconds * 1000:.0f} ms"
        rows = [
            f"**{text.sentence()}**",
            "",
            "| rank | unit | name | IoU | α |",
            "|---|---|---|---|---|",
        ]
        for sign, side in (("+", text.positive), ("−", text.negative)):
            for i, unit in enumerate(side, start=1):
                name = unit.name or f"(unnamed; best: {unit.concept})"
                rows.append(
                    f"| {sign}{i} | {unit.unit} | {name} | {unit.iou:.3f} | {unit.alpha:.3g} |"
                )
        rows += ["", f"Layer `{text.layer}`; computed {where}."]
        return "\n".join(rows)

    def _stem(self, views: Views) -> str:
        layer = slug(views.layer, fallback="layer")
        who = f"{views.class_id}-{slug(views.class_name, fallback='class')}"
        method = views.method.replace("+", "p")
        return f"{method}_{views.photo.key[:12]}_{who}_{layer}"

    def write_maps(self, views: Views) -> Path:
        """Write the maps as ``.npz`` (numpy arrays, no pickles) and return its path.

        Keys: ``input`` (the preprocessed (1, 3, H, W) tensor), ``classes`` (the class id),
        ``layer``, ``box`` (the first panel's box in photo pixels); per method, under the keys
        of :func:`gradcam.explain.npz_key`: heatmaps' ``raw`` (h, w) at layer resolution and
        ``maps`` (H, W) upsampled to the input and in [0, 1] (Grad-CAM's without a prefix,
        e.g. ``counterfactual_maps``); ``guided_backprop_maps`` and ``guided_gradcam_maps``
        (3, H, W) in pixel space, unnormalized.
        """
        path = self.folder / f"{self._stem(views)}.npz"
        if self._reuse(path):
            return path
        arrays: dict[str, Any] = {
            "input": views.explanation.input.numpy(),
            "classes": np.array([views.class_id]),
            "layer": np.array(views.layer),
            "box": np.array(views.box),
        }
        arrays |= map_arrays(views.explanation.results, target=0)
        # Written under a temporary name first, so a concurrent reader never sees half a file.
        # Uncompressed: gradients are noise to zlib (4.2 instead of 6.6 MB) and 50x slower.
        partial = path.with_suffix(f".{threading.get_ident()}.tmp.npz")
        np.savez(partial, **arrays)
        os.replace(partial, path)
        self._prune(path)
        return path

    def write_figure(self, views: Views) -> Path:
        """Write the panels side by side as one PNG (the paper's Fig. 1 layout), return its path."""
        path = self.folder / f"{self._stem(views)}.png"
        if self._reuse(path):
            return path
        titled = [
            (f"{title}: {views.class_name}" if title != "Localization" else title, picture)
            for title, picture in views.pictures.items()
        ]
        partial = path.with_suffix(f".{threading.get_ident()}.tmp.png")
        # Fast zlib level: a third of the default's time for a slightly larger file.
        side_by_side([("Photo", views.photo.display), *titled]).save(partial, compress_level=1)
        os.replace(partial, path)
        self._prune(path)
        return path

    def _reuse(self, path: Path) -> bool:
        """Whether ``path`` is already written; if so it becomes the most recently used."""
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        return True

    def _prune(self, written: Path) -> None:
        """Delete the least recently written download files beyond ``max_folder_bytes``;
        ``written``, the file just made for a visitor, is kept."""
        with self._folder_lock:
            # Only the top level: Gradio's cache and the example scenes lie in subfolders.
            prune_folder(
                self.folder,
                self.max_folder_bytes,
                keep=written,
                suffixes=_DOWNLOADS,
                recursive=False,
            )

    @property
    def cache_folder(self) -> Path:
        """Where :func:`gradcam.demo.app.serve` keeps Gradio's uploads and outputs: inside
        this session's folder, so that :meth:`close` (or the next server, after a crash)
        deletes them, and :meth:`prune_cache` bounds them."""
        return self.folder / "gradio"

    def prune_cache(self) -> int:
        """Bound :attr:`cache_folder` to :data:`MAX_CACHE_BYTES` (least recently written files
        first; a visitor whose upload went must upload it again); returns the bytes left."""
        with self._folder_lock:
            return prune_folder(self.cache_folder, MAX_CACHE_BYTES)

    def summary(self, views: Views) -> str:
        """One line of Markdown describing the views: class, score, layer, box, time."""
        cam = next(e for e in views.explanation.entries if e.method == views.method)
        height, width = cam.map.shape[-2:]
        where = "from the cache" if views.cached else f"in {views.seconds * 1000:.0f} ms"
        x0, y0, x1, y1 = views.box
        return (
            f"**{views.class_name}** (class {views.class_id}, score {views.score:.2f}): "
            f"{method_spec(views.method).title} at layer `{views.layer}` ({height}×{width} map); "
            f"box ({x0}, {y0})–({x1}, {y1}); computed {where}."
        )
