"""``gradcam explain --task detection|segmentation``: a map per detection or per class region.

For each photo, a detector's detections (best first, at least ``--min-score``, at most
``--top-k``, only ``--class`` classes when given) are each explained by Grad-CAM with
:class:`~gradcam.tasks.DetectionScore` (its score plus its box's IoU with itself, matched again
in the forward pass) and drawn as an overlay with the box; a segmenter's classes (``--class``,
else the ``--top-k`` largest predicted regions) are explained with
:class:`~gradcam.tasks.SegmentationScore` over the predicted region. Each photo gets a folder
with one PNG per detection or class and a ``summary.json``.

Models are torchvision's detection and segmentation architectures by name (``--model
fasterrcnn_resnet50_fpn``, ``retinanet_resnet50_fpn``, ``fcos_resnet50_fpn``, ``ssd300_vgg16``,
``deeplabv3_resnet50``, ``fcn_resnet50``, ``lraspp_mobilenet_v3_large``, ...) with their
``DEFAULT`` torchvision weights from torch's hub cache (:mod:`gradcam.weights`), ``--weights``
a weights name of the architecture, a local state-dict file, or ``random``; class names are
those of torchvision's weights for the architecture (COCO, or PASCAL VOC for segmentation)
when the class count fits. Hugging Face detectors and segmenters (``--model hf:DIR`` or
``hf:ORG/NAME``: DETR, YOLOS, Conditional DETR, SegFormer, UperNet, Mask2Former) are wrapped by
:mod:`gradcam.hf_tasks` to give the same outputs, with their own preprocessing, ``id2label`` and
layer; a model of another task is refused in one line.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from torch import nn

from gradcam.errors import GradCAMError, ImageLoadError, LayerError, ModelLoadError
from gradcam.images import Preprocess, load_image
from gradcam.layers import Layer
from gradcam.outputs import output_folder, write_atomic
from gradcam.paths import slug
from gradcam.targets import class_index, register_class_names
from gradcam.util import warnings_as_messages

__all__ = ["TASKS", "TaskModel", "explain_task", "infer_task", "load_task_model"]

#: The values of ``explain --task``.
TASKS = ("classification", "detection", "segmentation")

# Detectors normalize inside the model; segmenters take ImageNet-normalized inputs.
_PREPROCESS = {
    "detection": Preprocess(512, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    "segmentation": Preprocess(520),
}


@dataclass(frozen=True)
class TaskModel:
    """A detector or segmenter ready to explain.

    Attributes:
        name: the torchvision architecture, or the ``hf:`` name.
        task: ``"detection"`` or ``"segmentation"``.
        module: the model, in eval mode.
        class_names: one name per class.
        pretrained: ``False`` when the weights are random.
        preprocess: the model's own preprocessing (a Hugging Face folder's), or ``None`` for
            the task's default.
        layer: the layer to explain by default, or ``None`` for
            :func:`gradcam.tasks.task_layer`.
    """

    name: str
    task: str
    module: nn.Module
    class_names: tuple[str, ...]
    pretrained: bool
    preprocess: Preprocess | None = None
    layer: Layer | None = None


def infer_task(model: str | None, task: str | None) -> str:
    """``explain --task``: ``task`` when given, checked against an ``hf:`` model's config
    (a mismatch is one line); else the ``hf:`` model's task; else ``"classification"``.

    Raises:
        ModelLoadError: an ``hf:`` model whose task differs from ``task``, or whose task
            gradcam explain does not take.

    Examples:
        >>> infer_task("resnet50", None), infer_task(None, "detection")
        ('classification', 'detection')
    """
    from gradcam.hf_tasks import HF_TASK_LOADERS, check_hf_task, hf_task, read_config
    from gradcam.models import HF_PREFIX, hf_folder

    if model is None or not model.startswith(HF_PREFIX):
        return task or "classification"
    folder = hf_folder(model.removeprefix(HF_PREFIX), weights=False)
    found, _ = hf_task(read_config(folder))
    if task is None:
        task = found if found in HF_TASK_LOADERS else "classification"
    check_hf_task(model, folder, task)
    return task


def _architectures(task: str) -> list[str]:
    package = (
        torchvision.models.detection if task == "detection" else torchvision.models.segmentation
    )
    return sorted(torchvision.models.list_models(module=package))


def _categories(name: str, count: int) -> tuple[str, ...]:
    """The class names of torchvision's weights for ``name`` (metadata only, no download)."""
    try:
        for weights in torchvision.models.get_model_weights(name):
            names = weights.meta.get("categories")
            if names is not None and len(names) == count:
                return tuple(str(n) for n in names)
    except (ValueError, KeyError):
        pass
    return tuple(f"class {i}" for i in range(count))


def load_task_model(name: str, task: str, weights: str | None = None) -> TaskModel:
    """Build a torchvision detector or segmenter by name with its weights: ``None`` for its
    ``DEFAULT`` pretrained weights, a weights name (``"COCO_V1"``), a local state-dict file,
    or ``"random"`` (a warning says so), as :func:`gradcam.load_model` takes them.

    Raises:
        ModelLoadError: an unknown architecture (close names suggested), weights not cached
            while offline, or unusable weights.

    Examples:
        >>> load_task_model("fcos_resnet50_fpn", "detection", "random").class_names[1]
        'person'
    """
    from gradcam.models import _load_weights, _read_state_dict
    from gradcam.weights import (
        RANDOM,
        torchvision_member,
        torchvision_pretrained,
        torchvision_weight_names,
    )

    if name.startswith("hf:"):
        return _hf_task_model(name, task, weights)
    names = _architectures(task)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = (
            f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(names)}"
        )
        raise ModelLoadError(f"unknown {task} model {name!r}{hint}")
    member = torchvision_member(name, weights or "DEFAULT") if weights != RANDOM else None
    state = None
    if member is not None:
        module = torchvision_pretrained(name, member)
    elif weights is None:
        raise ModelLoadError(
            f"torchvision model {name!r} has no published weights: give --weights FILE or "
            "--weights random"
        )
    else:
        if weights != RANDOM and not os.path.isfile(weights):
            choices = ", ".join([*torchvision_weight_names(name), RANDOM])
            raise ModelLoadError(
                f"weights file {weights}: no such file, nor weights of {name} ({choices})"
            )
        state = None if weights == RANDOM else _read_state_dict(weights)
        kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None}
        if task == "segmentation" and state is not None:
            kwargs["aux_loss"] = any(k.startswith("aux_classifier.") for k in state)
        try:
            module = torchvision.models.get_model(name, **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"cannot build torchvision model {name!r}: {exc}") from None
        if state is not None:
            _load_weights(module, state, weights, name)
        else:
            warnings.warn(
                f"model {name!r} has random weights (weights='random'): its detections and "
                "maps are meaningless",
                UserWarning,
                stacklevel=2,
            )
    module.eval()
    count = int(getattr(module, "num_classes", 0)) or _head_classes(module)
    class_names = _categories(name, count)
    register_class_names(module, class_names)
    return TaskModel(name, task, module, class_names, weights != RANDOM)


def _hf_task_model(name: str, task: str, weights: str | None) -> TaskModel:
    """A Hugging Face detector or segmenter, wrapped to give what :mod:`gradcam.tasks` reads
    (:mod:`gradcam.hf_tasks`), with the layer of :func:`gradcam.hf_tasks.hf_task_layer`."""
    from gradcam.hf_tasks import HFDetector, HFSegmenter, hf_task_layer
    from gradcam.models import hf_model

    module, preprocess, complete, found = hf_model(name.removeprefix("hf:"), weights, task)
    names = found or ()
    if not complete:
        why = "weights='random'" if weights is not None else "some are missing from its folder"
        warnings.warn(
            f"model {name!r} has random weights ({why}): its {task} results and maps are "
            "meaningless",
            UserWarning,
            stacklevel=3,
        )
    wrapper: nn.Module = (
        HFDetector(module, len(names)) if task == "detection" else HFSegmenter(module)
    )
    wrapper.eval()
    register_class_names(wrapper, names)
    try:
        layer: Layer | None = hf_task_layer(wrapper, min(preprocess.size, 256))
    except LayerError:  # no backbone the rule knows (YOLOS): --layer is needed
        layer = None
    return TaskModel(name, task, wrapper, names, complete, preprocess, layer)


def _head_classes(module: nn.Module) -> int:
    """The class count of a model: its classification head's, else its last convolution's or
    linear layer's output width."""
    # RetinaNet and FCOS name it num_classes, SSD's scoring heads num_columns; their last
    # convolution is a box or centerness regressor, not the classifier.
    scorer = getattr(getattr(module, "head", None), "classification_head", None)
    for name in ("num_classes", "num_columns"):
        if isinstance(getattr(scorer, name, None), int):
            return int(getattr(scorer, name))
    heads = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    roi = getattr(getattr(module, "roi_heads", None), "box_predictor", None)
    if roi is not None and hasattr(roi, "cls_score"):
        return int(roi.cls_score.out_features)
    last = heads[-1]
    return int(last.out_channels if isinstance(last, nn.Conv2d) else last.out_features)


def _summary_name(class_names: tuple[str, ...], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class {label}"


def explain_task(
    images: Sequence[str | Path],
    folders: Sequence[Path],
    *,
    model: str,
    task: str,
    weights: str | None = None,
    layer: str | None = None,
    classes: Sequence[int | str] | None = None,
    top_k: int = 5,
    min_score: float = 0.5,
) -> int:
    """Explain each photo of ``images`` with a detector's or a segmenter's Grad-CAM maps, writing
    its results into its folder of ``folders``; returns the exit status (1 if an image failed,
    reported on one line each, the others still explained).

    Args:
        images: photo files.
        folders: one output folder per photo.
        model: a torchvision detector or segmenter name, or ``hf:DIR`` / ``hf:ORG/NAME``.
        task: ``"detection"`` or ``"segmentation"``.
        weights: a local state-dict file, or ``None``.
        layer: a dotted layer name (default: :func:`gradcam.tasks.task_layer`).
        classes: only these classes (ids or names); default: every detection, or the
            ``top_k`` largest predicted regions.
        top_k: at most this many detections or classes per photo.
        min_score: detection: explain detections scoring at least this.

    Raises:
        GradCAMError: a bad ``top_k``, ``min_score``, model, class or layer, before any photo.
    """
    from gradcam.methods import GradCAM
    from gradcam.tasks import task_layer

    if top_k < 1:
        raise GradCAMError(f"--top-k must be at least 1, got {top_k}")
    if not 0.0 <= min_score <= 1.0:
        raise GradCAMError(f"--min-score must be in [0, 1], got {min_score}")
    with warnings_as_messages():
        loaded = load_task_model(model, task, weights)
    wanted = None if not classes else {class_index(loaded.class_names, c) for c in classes}
    chosen = Layer(layer, "channels-first") if layer else loaded.layer or task_layer(loaded.module)
    cam = GradCAM(loaded.module, chosen)
    failures = 0
    for path, folder in zip(images, folders, strict=True):
        try:
            photo = load_image(path)
        except ImageLoadError as exc:
            failures += 1
            print(f"gradcam: error: {exc}", file=sys.stderr)
            continue
        x = (loaded.preprocess or _PREPROCESS[task])(photo)
        output_folder(folder)
        explain = _detections if task == "detection" else _regions
        entries = explain(loaded, cam, photo, x, folder, wanted, top_k, min_score)
        summary = {
            "source": str(path),
            "model": model,
            "task": task,
            "layer": str(chosen.module),
            "explained": entries,
        }
        _write_summary(folder / "summary.json", summary)
        names = ", ".join(e["name"] for e in entries) or f"no {task} results"
        print(f"{path}: {names} -> {folder}")
    done = len(folders) - failures
    where = Path(folders[0]).parent if folders else Path()
    print(f"explained {done} of {len(folders)} images; results in {where}", file=sys.stderr)
    return 1 if failures else 0


def _write_summary(path: Path, summary: dict[str, Any]) -> None:
    text = json.dumps(summary, indent=2) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _save_overlay(picture: Image.Image, folder: Path, index: int, name: str) -> str:
    """Write one class's overlay as ``NN_<name>.png`` in ``folder``; returns the file name."""
    file = f"{index:02d}_{slug(name, fallback='class')}.png"
    write_atomic(folder / file, lambda tmp: picture.save(tmp, format="PNG"))
    return file


def _detections(
    loaded: TaskModel,
    cam: Any,
    photo: Image.Image,
    x: torch.Tensor,
    folder: Path,
    wanted: set[int] | None,
    top_k: int,
    min_score: float,
) -> list[dict[str, Any]]:
    """Explain the photo's best ``top_k`` detections scoring ``min_score`` or more (of the
    ``wanted`` classes): one overlay each, with its box in the photo's pixels."""
    from gradcam.tasks import DetectionScore, detect, detector_maps
    from gradcam.viz import overlay

    found = [
        d
        for d in detect(loaded.module, x)[0]
        if d.score >= min_score and (wanted is None or d.label in wanted)
    ][:top_k]
    if not found:
        return []
    maps = detector_maps(loaded.module, x, cam(x, [DetectionScore.of(d) for d in found]).raw)
    scale = photo.width / x.shape[-1], photo.height / x.shape[-2]
    entries: list[dict[str, Any]] = []
    for i, d in enumerate(found):
        x0, y0, x1, y1 = (round(v * scale[k % 2]) for k, v in enumerate(d.box[:4]))
        box = (x0, y0, x1, y1)
        name = _summary_name(loaded.class_names, d.label)
        file = _save_overlay(overlay(photo, maps[0, i], box=box), folder, i, name)
        entries.append({"class": d.label, "name": name, "score": d.score, "box": box, "file": file})
    return entries


def _regions(
    loaded: TaskModel,
    cam: Any,
    photo: Image.Image,
    x: torch.Tensor,
    folder: Path,
    wanted: set[int] | None,
    top_k: int,
    min_score: float,
) -> list[dict[str, Any]]:
    """Explain the ``wanted`` classes, else the ``top_k`` largest predicted regions: one
    overlay each, with the class's share of the pixels (``min_score`` is unused)."""
    from gradcam.tasks import SegmentationScore, segmentation_logits
    from gradcam.viz import overlay

    with torch.no_grad():
        predicted = segmentation_logits(loaded.module(x)).argmax(dim=1)[0]
    areas = torch.bincount(predicted.flatten(), minlength=len(loaded.class_names))
    present = [int(c) for c in areas.argsort(descending=True) if int(areas[c]) > 0]
    classes = sorted(wanted) if wanted is not None else present[:top_k]
    result = cam(x, [SegmentationScore(c) for c in classes])
    entries: list[dict[str, Any]] = []
    for i, c in enumerate(classes):
        name = _summary_name(loaded.class_names, c)
        file = _save_overlay(overlay(photo, result.maps[0, i]), folder, i, name)
        share = float(areas[c]) / predicted.numel()
        entries.append({"class": c, "name": name, "area": share, "file": file})
    return entries
