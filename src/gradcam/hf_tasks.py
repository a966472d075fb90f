"""Hugging Face models by task: which task a saved model does, and its detectors and segmenters.

A Hugging Face folder or Hub id (``hf:DIR``, ``hf:ORG/NAME``) says what it does in its
``config.json``: ``architectures`` names the class it was saved from
(``SegformerForSemanticSegmentation``, ``DetrForObjectDetection``, ...). transformers' auto-class
tables (``MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES``, ...) tell which task each class belongs to
(:func:`architecture_task`); :func:`hf_task` reads it, :func:`check_hf_task` refuses a model
loaded for another task with one line naming its task and how to explain it, and
:func:`gradcam.task_explain.infer_task` gives ``explain --task`` its value: the model's task
when the flag is not given, checked when it is.

Detectors and segmenters are wrapped so that they give what :mod:`gradcam.tasks` reads, as
torchvision's do:

* :class:`HFDetector`: a list of dicts per image, ``"boxes"`` (N, 4) ``(x1, y1, x2, y2)`` in
  input pixels, ``"labels"`` and ``"scores"``, as transformers' ``post_process_object_detection``
  computes them (without its threshold): a softmax over the classes without the last "no object"
  class (DETR, YOLOS), or, for models without that class (Conditional and Deformable DETR), a
  sigmoid and the 100 best (query, class) pairs. The scores stay differentiable.
* :class:`HFSegmenter`: (B, C, H, W) class scores at the input's size (the logits bilinearly
  upsampled, as ``post_process_semantic_segmentation`` does); for Mask2Former-style models
  (class and mask queries) the semantic scores ``sum_q softmax(class_q)_c * sigmoid(mask_q)``.

The layer (:func:`hf_task_layer`) is the backbone's or encoder's last feature map, never the
decoder: the last module of the backbone that outputs (B, C, h, w) maps (SegFormer's last encoder
stage ``model.segformer.stages.N``, DETR's last ResNet stage, UperNet's and Mask2Former's
backbone's last stage); for YOLOS (a ViT whose detection tokens follow the patches) the last
encoder layer's input, its patch tokens laid out on the grid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradcam.errors import LayerError, ModelLoadError
from gradcam.layers import Layer
from gradcam.reshapes import Tokens

__all__ = [
    "HF_TASK_LOADERS",
    "TASK_NAMES",
    "VL_TASK_LOADERS",
    "HFDetector",
    "HFSegmenter",
    "architecture_task",
    "check_hf_task",
    "hf_task",
    "hf_task_layer",
    "read_config",
    "segmenter_loader",
]

# transformers' auto-class tables, in the order they are tried (a class listed in two belongs
# to the first: LLaVA is a captioner before it is a pretraining model) and the task of each.
_TABLES = (
    ("MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES", "detection"),
    ("MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES", "segmentation"),
    ("MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES", "segmentation"),
    ("MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES", "segmentation"),
    ("MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING_NAMES", "segmentation"),
    ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "classification"),
    ("MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES", "vqa"),
    ("MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES", "zero-shot-detection"),
    ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES", "image-text"),
    ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "captioning"),
    ("MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", "captioning"),
)

#: What each task is called in messages, and how it is explained (``None``: not yet).
TASK_NAMES: dict[str, tuple[str, str | None]] = {
    "classification": ("an image classifier", "gradcam explain (--task classification)"),
    "detection": ("an object-detection model", "--task detection"),
    "segmentation": ("a semantic-segmentation model", "--task segmentation"),
    "captioning": ("an image-captioning model", "gradcam caption IMAGE --model hf:..."),
    "vqa": ("a visual-question-answering model", "gradcam vqa IMAGE --model hf:..."),
    "image-text": ("an image-text similarity model", 'gradcam explain IMAGE --class "a prompt"'),
    "zero-shot-detection": ("a zero-shot (text-queried) detector", None),
}

#: The transformers auto class that builds each task's model from a folder.
HF_TASK_LOADERS = {
    "classification": "AutoModelForImageClassification",
    "detection": "AutoModelForObjectDetection",
    "segmentation": "AutoModelForSemanticSegmentation",
}
#: The vision-language tasks' auto classes (:mod:`gradcam.vl.hf`; not ``explain --task``).
VL_TASK_LOADERS = {
    "captioning": "AutoModelForImageTextToText",
    "vqa": "AutoModelForVisualQuestionAnswering",
    "image-text": "AutoModelForZeroShotImageClassification",
}
# Segmenters whose semantic scores come from class and mask queries (Mask2Former, MaskFormer).
_UNIVERSAL = "AutoModelForUniversalSegmentation"


def architecture_task(architecture: str) -> str | None:
    """The task of a transformers model class, from transformers' auto-class tables (``None``
    when no table lists it).

    Examples:
        >>> architecture_task("SegformerForSemanticSegmentation"), architecture_task("CLIPModel")
        ('segmentation', 'image-text')
        >>> architecture_task("DetrForObjectDetection"), architecture_task("MyNet")
        ('detection', None)
    """
    from transformers.models.auto import modeling_auto

    for table, task in _TABLES:
        for value in getattr(modeling_auto, table, {}).values():
            names = value if isinstance(value, (list, tuple)) else (value,)
            if architecture in names:
                return task
    if architecture.endswith("ImageTextRetrieval"):  # BLIP's matching head: in no table
        return "image-text"
    return None


def hf_task(config: Mapping[str, Any]) -> tuple[str | None, str]:
    """The task of a model from its ``config.json`` contents and the architecture it names:
    the first of ``architectures`` that transformers' tables list; ``(None, ...)`` when none
    does (a config without ``architectures``: it is loaded for the task asked).

    Examples:
        >>> hf_task({"architectures": ["UperNetForSemanticSegmentation"]})
        ('segmentation', 'UperNetForSemanticSegmentation')
        >>> hf_task({"model_type": "vit"})
        (None, 'vit')
    """
    names = config.get("architectures") or []
    for name in names if isinstance(names, list) else []:
        task = architecture_task(str(name))
        if task is not None:
            return task, str(name)
    return None, str(names[0] if names else config.get("model_type", "unknown"))


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: not a readable config ({exc})") from None
    return config if isinstance(config, dict) else {}


def check_hf_task(spec: str, folder: Path, task: str) -> str:
    """Refuse to load the model of ``folder`` (named ``spec``, e.g. ``"hf:DIR"``) for ``task``
    when its config says it does another; returns its architecture.

    Raises:
        ModelLoadError: one line naming the model's task and how to explain it, e.g. ``hf:seg is
            a semantic-segmentation model (SegformerForSemanticSegmentation): explain it with
            --task segmentation``.
    """
    found, architecture = hf_task(read_config(folder))
    if found is None or found == task:
        return architecture
    what, how = TASK_NAMES[found]
    advice = (
        f"explain it with {how}"
        if how is not None
        else f"gradcam explain does not take {found} models yet (the image classifiers, "
        "detectors and segmenters of transformers only)"
    )
    raise ModelLoadError(f"{spec} is {what} ({architecture}): {advice}")


class HFDetector(nn.Module):
    """A transformers object detector (DETR, YOLOS, Conditional DETR, ...) that returns
    torchvision's detections: see the module docstring.

    Attributes:
        model: the transformers model (``logits`` (B, Q, C[+1]) and ``pred_boxes`` (B, Q, 4),
            normalized ``(cx, cy, w, h)``).
        num_labels: its class count ``C`` (without "no object").
        top_k: sigmoid models: the most (query, class) pairs kept per image.
    """

    def __init__(self, model: nn.Module, num_labels: int, top_k: int = 100) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        self.top_k = top_k
        self.input_size = (0, 0)

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        self.input_size = (int(x.shape[-2]), int(x.shape[-1]))  # YOLOS's patch grid
        out = self.model(pixel_values=x)
        logits, boxes = out.logits, out.pred_boxes
        height, width = x.shape[-2:]
        center, size = boxes[..., :2], boxes[..., 2:]
        corners = torch.cat([center - size / 2, center + size / 2], dim=-1)
        corners = corners * corners.new_tensor([width, height, width, height])
        found = []
        for b in range(x.shape[0]):
            if logits.shape[-1] == self.num_labels + 1:  # a "no object" class: softmax
                scores, labels = logits[b].softmax(-1)[:, :-1].max(-1)
                found.append({"boxes": corners[b], "labels": labels, "scores": scores})
                continue
            probs = logits[b].sigmoid().flatten()
            scores, index = probs.topk(min(self.top_k, probs.numel()))
            classes = logits.shape[-1]
            found.append(
                {"boxes": corners[b][index // classes], "labels": index % classes, "scores": scores}
            )
        return found


class HFSegmenter(nn.Module):
    """A transformers semantic segmenter (SegFormer, UperNet, Mask2Former, ...) that returns
    (B, C, H, W) class scores at the input's size: see the module docstring.

    Attributes:
        model: the transformers model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(pixel_values=x)
        logits = getattr(out, "logits", None)
        if logits is None:  # class and mask queries
            classes = out.class_queries_logits.softmax(-1)[..., :-1]
            masks = out.masks_queries_logits.sigmoid()
            logits = torch.einsum("bqc,bqhw->bchw", classes, masks)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def hf_task_layer(wrapper: nn.Module, size: int = 224) -> Layer:
    """The layer to explain a wrapped transformers detector or segmenter at: the last module
    of its backbone (SegFormer's encoder) that outputs (B, C, h, w) maps, found with one
    forward pass of a blank ``size`` x ``size`` image.

    Raises:
        LayerError: the model has no backbone this rule knows (YOLOS, a ViT): give ``--layer``.
    """
    from gradcam.hooks import record_outputs

    inner = getattr(wrapper, "model", None)
    config = getattr(inner, "config", None)
    tokens = int(getattr(config, "num_detection_tokens", 0) or 0)
    if tokens and isinstance(wrapper, HFDetector):
        return _yolos_layer(wrapper, config, tokens)
    segformer = getattr(inner, "segformer", None)
    if segformer is not None and hasattr(segformer, "encoder"):  # transformers < 5
        last = len(segformer.encoder.layer_norm) - 1
        return Layer(f"model.segformer.encoder.layer_norm.{last}", reshape=Tokens(prefix=0))
    names = dict(wrapper.named_modules())
    # DETR's backbone also computes position embeddings (4-D too): its conv_encoder first.
    suffixes = (".conv_encoder", ".pixel_level_module.encoder", ".backbone", ".segformer")
    backbone = next((n for s in suffixes for n in names if n.endswith(s)), None)
    if backbone is None:
        raise LayerError(
            f"cannot choose a layer for {type(inner).__name__}: it has no convolutional "
            "backbone; give --layer (a backbone or encoder layer, never the decoder)"
        )
    with torch.no_grad(), record_outputs(wrapper) as calls:
        wrapper(torch.zeros(1, 3, size, size))
    maps = [
        c.name
        for c in calls
        if c.name.startswith(backbone + ".")
        and c.shape is not None
        and len(c.shape) == 4
        and min(c.shape[-2:]) > 1
    ]
    if not maps:
        raise LayerError(f"{backbone} outputs no (B, C, h, w) maps; give --layer")
    return Layer(maps[-1], reshape="channels-first")


def _yolos_layer(wrapper: HFDetector, config: Any, tokens: int) -> Layer:
    """YOLOS: the last encoder layer's input (its attention mixes the patches into the
    detection tokens; the final norm's patch tokens reach no score), read as the patch grid
    between the class token and the ``tokens`` detection tokens."""
    from gradcam.reshapes import tokens_to_maps

    layers = int(config.num_hidden_layers)
    patch = int(config.patch_size)
    names = dict(wrapper.named_modules())
    name = next(
        (
            f"{root}.{layers - 1}.layernorm_before"
            for root in ("model.vit.encoder.layer", "model.vit.layers")
            if f"{root}.{layers - 1}.layernorm_before" in names
        ),
        None,
    )
    if name is None:
        raise LayerError(
            f"cannot find YOLOS's last encoder layer in {type(wrapper.model).__name__}"
        )

    def patches(output: Tensor) -> Tensor:
        height, width = wrapper.input_size
        return tokens_to_maps(output[:, :-tokens], 1, (height // patch, width // patch))

    return Layer(name, reshape=patches)


def segmenter_loader(config: Mapping[str, Any]) -> str:
    """The auto class that builds a segmenter of ``config``: the semantic one, or the
    universal one for class-and-mask-query models (Mask2Former, MaskFormer).

    Examples:
        >>> segmenter_loader({"architectures": ["Mask2FormerForUniversalSegmentation"]})
        'AutoModelForUniversalSegmentation'
    """
    names = config.get("architectures") or []
    if any(str(n).endswith("UniversalSegmentation") for n in names):
        return _UNIVERSAL
    return HF_TASK_LOADERS["segmentation"]
