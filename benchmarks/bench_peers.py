"""Side-by-side benchmark: gradcam against Captum, torchcam and pytorch-grad-cam, in one run.

Run from the repository root after installing the ``bench`` extra (``make bench`` does both)::

    .venv/bin/python benchmarks/bench_peers.py --out BENCHMARKS.md --plot docs/bench_peers.png
    .venv/bin/python benchmarks/bench_peers.py --quick --models efficientnet_lite0  # smoke test

Every library runs on its own copy of the same model (ResNet-50, VGG-16, ViT-B/16 and Swin-T
from torchvision with random weights, the embedded EfficientNet-Lite0 with its real weights),
on the same inputs made from real photos (the bundled ``cat_and_coffee.jpg`` and matplotlib's
``grace_hopper.jpg``), with the same number of threads, at the layer gradcam picks by itself
(``GradCAM(model)``'s ``result.layer``). A separate model copy per library matters:
pytorch-grad-cam's Guided Backprop swaps the model's ``nn.ReLU`` modules (and puts back new,
non-in-place ones), and torchcam keeps its hooks on the model between calls.

The transformers' layers do not output (B, C, h, w) maps: ViT-B/16's
``encoder.layers.encoder_layer_11.ln_1`` outputs (B, 197, 768) tokens (a class token, then
14x14 patches), Swin-T's ``norm`` a channels-last (B, 7, 7, 768) map. gradcam reads both
layouts itself. pytorch-grad-cam and torchcam 0.5.0 take a ``reshape_transform`` applied to
the layer's output and to its gradient: they get pytorch-grad-cam's tutorial transforms,
written here (:func:`vit_maps`: drop the class token, 14x14 grid, channels first;
:func:`swin_maps`: channels last to first). Captum's ``LayerGradCam`` has no such argument
and averages the gradient over every axis after the second (a token's features, or a row of
Swin's map), so its model copy gets the layer wrapped in :class:`MapTap`: the same transform,
an identity module that Captum hooks, and the inverse transform (the class token put back):
the same network, with a (B, C, h, w) tensor to hook. Only the Grad-CAM cases run on them
(``TRANSFORMER_CASES``): their rectifiers are GELUs, which the peers' Guided Backprop leaves
alone.

Cases (``--cases``), at 224x224 for every model, and ``--large-cases`` at ``--large-size``
(448) for ``--large-model`` (ResNet-50):

* ``gradcam_1``: Grad-CAM of one image for its top-1 class.
* ``batch8``: a batch of 8 different crops of the photos, each for its own top-1 class.
* ``top5``: one image, its top-5 classes, each library its fastest path: gradcam
  ``TopK(5)`` (one forward, one batched backward); Captum and pytorch-grad-cam the input
  repeated 5 times with one target per copy (one batch-5 forward and backward: 2.6 times
  faster than 5 calls for Captum on ResNet-50); torchcam one forward and 5 calls with
  ``retain_graph`` (its documented multi-class path).
* ``guided_bp`` and ``guided_gradcam``: Guided Backprop and Guided Grad-CAM (torchcam has
  neither). pytorch-grad-cam's Guided Grad-CAM is its README's recipe: its Grad-CAM map times
  its Guided Backprop; Captum's ``GuidedGradCam`` is asked for bilinear upsampling, as ours.
* ``occlusion`` (``--occlusion-models``, default EfficientNet-Lite0; Captum only): window 35,
  stride 16, baseline 0, both libraries at 4 occluded copies per forward (our CPU default;
  Captum's ``perturbations_per_eval=4`` ran 2.7 times faster than its default 1).
* Reference costs on the same rounds: a no-grad forward, forward + gradient to the layer,
  forward + gradient to the input (``bench_core``'s definitions).

Every library's map goes through what a user needs to show it (upsampled bilinearly to the
input, min-max normalized per map; the timed call includes it). All cases of one model and
size run interleaved: each round runs every case once, the order rotated every round; medians
and minimums of ``--rounds`` rounds after warm-ups; ratios are peer median / gradcam median
from the same rounds (above 1: gradcam is faster).

Agreement: before timing, each case runs once per library (a warm-up) and its maps are
compared with ours after the same normalization: heatmaps min-max normalized per map,
pixel-space maps divided by their largest absolute value (Guided Grad-CAM's scale differs by
library). The table gives the largest absolute difference over all pixels of all maps.

Memory (``--memory-batches``, default 1 and 32; ``--memory-models``, default the CNNs):
Grad-CAM of one class per image, and the no-grad forward, each (model, library, batch) in a
fresh subprocess, measured as in ``bench_core``: growth of peak RSS over a baseline taken
after a small warm-up.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from bench_core import build, log, peak_rss_kib, reset_peak_rss, table, time_cases
from bench_core import make_cases as reference_cases
from PIL import Image
from torch import Tensor, nn

import gradcam

ROOT = Path(__file__).resolve().parents[1]
CNNS = ("resnet50", "vgg16", "efficientnet_lite0")
TRANSFORMERS = ("vit_b_16", "swin_t")
MODELS = (*CNNS, *TRANSFORMERS)
OURS = "gradcam"
PEERS = ("captum", "torchcam", "pytorch-grad-cam")
LIBRARIES = (OURS, *PEERS)
MODULES = {"captum": "captum", "torchcam": "torchcam", "pytorch-grad-cam": "pytorch_grad_cam"}
DISTRIBUTIONS = {"captum": "captum", "torchcam": "torchcam", "pytorch-grad-cam": "grad-cam"}
CASES = ("gradcam_1", "batch8", "top5", "guided_bp", "guided_gradcam")
# Guided Backprop is left out on the transformers: Captum and pytorch-grad-cam guide only
# nn.ReLU, so on GELU models theirs is the plain gradient (not the same computation as ours).
TRANSFORMER_CASES = ("gradcam_1", "batch8", "top5")
REFERENCES = ("forward", "fwd_grad", "fwd_grad_input")
REFERENCE_LABELS = {
    "forward": "no-grad forward",
    "fwd_grad": "forward + grad to layer",
    "fwd_grad_input": "forward + grad to input",
}
CASE_LABELS = {
    "gradcam_1": "Grad-CAM, 1 image, 1 class",
    "batch8": "Grad-CAM, batch 8, 1 class each",
    "top5": "Grad-CAM, 1 image, top-5 classes",
    "guided_bp": "Guided Backprop",
    "guided_gradcam": "Guided Grad-CAM",
    "occlusion": "Occlusion (35, stride 16)",
}
PHOTOS = (
    ROOT / "src" / "gradcam" / "data" / "cat_and_coffee.jpg",
    Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg",
)
OCCLUSION = {"window": 35, "stride": 16, "batch": 4}
MEMORY_CLASS = 281  # memory does not depend on the class
BEGIN, END = "<!-- bench_peers:begin -->", "<!-- bench_peers:end -->"

Output = object


def available(library: str) -> bool:
    """Whether a library can be imported (gradcam always can)."""
    return library == OURS or importlib.util.find_spec(MODULES[library]) is not None


def version(library: str) -> str:
    if library == OURS:
        try:
            return importlib.metadata.version("gradcam")
        except importlib.metadata.PackageNotFoundError:
            return "(source tree)"
    return importlib.metadata.version(DISTRIBUTIONS[library])


# ---------------------------------------------------------------- inputs


def photo_batch(size: int, count: int) -> Tensor:
    """``count`` different square crops of the real photos, resized to ``size``, normalized.

    Crops alternate between the photos: the centre square, then squares shifted left, right,
    up and down by a fifth of the shorter side, then their mirror images.
    """
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    photos = [gradcam.load_image(p) for p in PHOTOS]
    shifts = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
    images = []
    for i in range(count):
        photo = photos[i % len(photos)]
        k = i // len(photos)
        dx, dy = shifts[k % len(shifts)]
        side = min(photo.size)
        step = side // 5
        left = min(max((photo.width - side) // 2 + dx * step, 0), photo.width - side)
        top = min(max((photo.height - side) // 2 + dy * step, 0), photo.height - side)
        crop = photo.crop((left, top, left + side, top + side))
        crop = crop.resize((size, size), Image.Resampling.BILINEAR)
        if (k // len(shifts)) % 2:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
        images.append((array - mean) / std)
    return torch.stack(images).contiguous()


# ---------------------------------------------------------------- normalization


def minmax(maps: Tensor) -> Tensor:
    """Min-max normalize each (H, W) map (the normalization every library applies to heatmaps)."""
    return gradcam.normalize(maps.float())


def upsampled(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 1, h, w) or (N, h, w) layer-resolution maps -> (N, H, W) bilinear, min-max normalized."""
    flat = raw.reshape(-1, 1, *raw.shape[-2:]).float()
    return minmax(F.interpolate(flat, size=size, mode="bilinear", align_corners=False)[:, 0])


def by_max_abs(maps: Tensor) -> Tensor:
    """Divide each (C, H, W) pixel-space map by its largest absolute value."""
    scale = maps.abs().amax(dim=(-3, -2, -1), keepdim=True)
    return maps / torch.where(scale > 0, scale, torch.ones_like(scale))


# ---------------------------------------------------------------- models


def build_model(name: str) -> tuple[nn.Module, str]:
    """``bench_core.build``'s model and layer, with a usable head on ViT.

    torchvision initializes ViT's classifier ``heads.head`` to zeros: with random weights every
    logit is 0, every gradient too, and every library's map is all zero (the agreement pass
    would compare nothing). It gets ``nn.Linear``'s default initialization instead, seeded by
    the caller.
    """
    model, layer = build(name)
    head = getattr(getattr(model, "heads", None), "head", None)
    if isinstance(head, nn.Linear) and not bool(head.weight.any()):
        head.reset_parameters()
    return model, layer


# ---------------------------------------------------------------- transformer layers
#
# The peers' view of a transformer layer: pytorch-grad-cam's tutorial transforms (written here,
# not imported), given to pytorch-grad-cam and torchcam as ``reshape_transform``; and their
# inverses, with which Captum's model copy hands it a (B, C, h, w) tensor to hook.


def vit_maps(tokens: Tensor) -> Tensor:
    """ViT tokens (B, 1 + h*w, D) -> (B, D, h, w): class token dropped, square grid."""
    side = math.isqrt(tokens.shape[1] - 1)
    grid = tokens[:, 1:, :].reshape(tokens.shape[0], side, side, tokens.shape[2])
    return grid.permute(0, 3, 1, 2)


def vit_tokens(maps: Tensor, tokens: Tensor) -> Tensor:
    """The inverse of :func:`vit_maps`: ``tokens`` with its patch tokens taken from ``maps``."""
    return torch.cat([tokens[:, :1], maps.flatten(2).transpose(1, 2)], dim=1)


def swin_maps(maps: Tensor) -> Tensor:
    """Swin's channels-last (B, h, w, C) map -> channels first (B, C, h, w)."""
    return maps.permute(0, 3, 1, 2)


def swin_channels_last(maps: Tensor, _output: Tensor) -> Tensor:
    """The inverse of :func:`swin_maps`."""
    return maps.permute(0, 2, 3, 1)


@dataclass(frozen=True)
class Layout:
    """How a model's Grad-CAM layer output becomes (B, C, h, w) maps, and back."""

    to_maps: Callable[[Tensor], Tensor]
    from_maps: Callable[[Tensor, Tensor], Tensor]  # (maps, the layer's output) -> output
    what: str


LAYOUTS = {
    "vit_b_16": Layout(vit_maps, vit_tokens, "tokens (class token dropped, 14x14)"),
    "swin_t": Layout(swin_maps, swin_channels_last, "channels-last map (permuted)"),
}


class MapTap(nn.Module):
    """A layer whose output passes through its maps: ``maps`` is an identity Captum can hook.

    The model computes what it computed before (the inverse transform puts every element back
    where it was); Captum's ``LayerGradCam`` on ``<layer>.maps`` then sees (B, C, h, w).
    """

    def __init__(self, inner: nn.Module, layout: Layout) -> None:
        super().__init__()
        self.inner, self.layout, self.maps = inner, layout, nn.Identity()

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        output = self.inner(*args, **kwargs)
        return self.layout.from_maps(self.maps(self.layout.to_maps(output)), output)


def tapped(model: nn.Module, layer: str, layout: Layout) -> str:
    """Wrap ``model``'s ``layer`` in a :class:`MapTap` (in place); the name of its ``maps``."""
    parent, _, child = layer.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, child, MapTap(owner.get_submodule(child), layout))
    return f"{layer}.maps"


# ---------------------------------------------------------------- libraries
#
# Each adapter holds its library's objects for one model copy and exposes the same calls.
# Every call returns the library's user-visible result: heatmaps upsampled and normalized
# (as a tensor or a numpy array), pixel-space maps as the library returns them.


class Adapter:
    """One library on one model copy; a method left as ``None`` is a case it cannot run."""

    name = ""

    def cam(self, x: Tensor, classes: list[int]) -> Output:
        """Grad-CAM of image ``i`` for class ``classes[i]``."""
        raise NotImplementedError

    def top5(self, x: Tensor, classes: list[int]) -> Output:
        """Grad-CAM of the single image ``x`` for its top-5 classes (``classes``)."""
        raise NotImplementedError

    guided_bp: Callable[[Tensor, int], Output] | None = None
    guided_gradcam: Callable[[Tensor, int], Output] | None = None
    occlusion: Callable[[Tensor, int], Output] | None = None


class Ours(Adapter):
    name = OURS

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.gradcam = gradcam.GradCAM(model, layer)
        self.gb = gradcam.GuidedBackprop(model)
        self.ggc = gradcam.GuidedGradCAM(model, layer)
        self.occ = gradcam.Occlusion(
            model,
            window=OCCLUSION["window"],
            stride=OCCLUSION["stride"],
            baseline=0.0,
            batch_size=OCCLUSION["batch"],
            progress=False,
        )
        self.guided_bp = lambda x, c: self.gb(x, [c]).maps[:, 0]
        self.guided_gradcam = lambda x, c: self.ggc(x, [c]).maps[:, 0]
        self.occlusion = lambda x, c: self.occ(x, [c]).raw[:, 0]

    def cam(self, x: Tensor, classes: list[int]) -> Output:
        return self.gradcam(x, torch.tensor(classes).view(-1, 1)).maps[:, 0]

    def top5(self, x: Tensor, classes: list[int]) -> Output:
        return self.gradcam(x, gradcam.TopK(5)).maps[0]


class Captum(Adapter):
    name = "captum"

    def __init__(self, model: nn.Module, layer: str, layout: Layout | None = None) -> None:
        from captum.attr import GuidedBackprop, GuidedGradCam, LayerGradCam, Occlusion

        if layout is not None:
            layer = tapped(model, layer, layout)
        module = model.get_submodule(layer)
        self.lgc = LayerGradCam(model, module)
        gb, ggc, occ = GuidedBackprop(model), GuidedGradCam(model, module), Occlusion(model)
        self.guided_bp = lambda x, c: gb.attribute(x, target=c)
        self.guided_gradcam = lambda x, c: ggc.attribute(x, target=c, interpolate_mode="bilinear")
        w, s = OCCLUSION["window"], OCCLUSION["stride"]
        self.occlusion = lambda x, c: occ.attribute(
            x,
            sliding_window_shapes=(x.shape[1], w, w),
            strides=(x.shape[1], s, s),
            baselines=0.0,
            target=c,
            perturbations_per_eval=OCCLUSION["batch"],
        )[:, 0]

    def cam(self, x: Tensor, classes: list[int]) -> Output:
        from captum.attr import LayerAttribution

        target = classes[0] if len(classes) == 1 else classes
        raw = self.lgc.attribute(x, target=target, relu_attributions=True)
        up = LayerAttribution.interpolate(raw, tuple(x.shape[2:]), interpolate_mode="bilinear")
        return minmax(up[:, 0])

    def top5(self, x: Tensor, classes: list[int]) -> Output:
        return self.cam(x.expand(len(classes), -1, -1, -1), classes)


class Torchcam(Adapter):
    name = "torchcam"

    def __init__(self, model: nn.Module, layer: str, layout: Layout | None = None) -> None:
        from torchcam.methods import GradCAM

        self.model = model
        reshape = layout.to_maps if layout else None
        self.extractor = GradCAM(model, layer, reshape_transform=reshape)

    def cam(self, x: Tensor, classes: list[int]) -> Output:
        scores = self.model(x)
        idx: int | list[int] = classes[0] if len(classes) == 1 else classes
        maps = self.extractor(class_idx=idx, scores=scores)[0]
        return F.interpolate(maps.unsqueeze(1), size=x.shape[2:], mode="bilinear")[:, 0]

    def top5(self, x: Tensor, classes: list[int]) -> Output:
        scores = self.model(x)
        top = scores[0].topk(5).indices.tolist()
        maps = [
            self.extractor(class_idx=c, scores=scores, retain_graph=i < len(top) - 1)[0]
            for i, c in enumerate(top)
        ]
        stacked = torch.cat(maps).unsqueeze(1)
        return F.interpolate(stacked, size=x.shape[2:], mode="bilinear")[:, 0]


class PytorchGradCam(Adapter):
    name = "pytorch-grad-cam"

    def __init__(
        self, model: nn.Module, layer: str, guided_model: nn.Module, layout: Layout | None = None
    ) -> None:
        from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self.target = ClassifierOutputTarget
        reshape = layout.to_maps if layout else None
        self.gradcam = GradCAM(model, [model.get_submodule(layer)], reshape_transform=reshape)
        # Its Guided Backprop swaps nn.ReLU modules: on the Grad-CAM model that would orphan
        # a target layer that is a ReLU (VGG-16's features.29), so it gets its own copy.
        gb = GuidedBackpropReLUModel(guided_model, device=None)
        # It sets requires_grad on the tensor it is given and reads its .grad: a fresh copy
        # per call keeps gradients from accumulating over calls.
        self.guided_bp = lambda x, c: gb(x.clone(), target_category=c)
        self.guided_gradcam = lambda x, c: (
            np.asarray(self.cam(x, [c]))[0][..., None] * gb(x.clone(), target_category=c)
        )

    def cam(self, x: Tensor, classes: list[int]) -> Output:
        return self.gradcam(x, targets=[self.target(c) for c in classes])

    def top5(self, x: Tensor, classes: list[int]) -> Output:
        return self.cam(x.repeat(len(classes), 1, 1, 1), classes)


def adapter(library: str, model: nn.Module, layer: str, layout: Layout | None = None) -> Adapter:
    """``library``'s adapter on its own deep copies of ``model``.

    ``layout``: how the peers read ``layer``'s output as maps (transformers); gradcam reads it
    by itself.
    """
    if library == OURS:
        return Ours(model, layer)
    if library == "captum":
        return Captum(copy.deepcopy(model), layer, layout)
    if library == "torchcam":
        return Torchcam(copy.deepcopy(model), layer, layout)
    return PytorchGradCam(copy.deepcopy(model), layer, copy.deepcopy(model), layout)


# ---------------------------------------------------------------- comparable maps


def heatmaps(output: Output) -> Tensor:
    """Any library's heatmaps as an (N, H, W) float tensor, min-max normalized."""
    maps = torch.as_tensor(np.asarray(output) if not isinstance(output, Tensor) else output)
    return minmax(maps.detach().reshape(-1, *maps.shape[-2:]))


def pixel_maps(output: Output) -> Tensor:
    """Any library's pixel-space maps as (N, C, H, W), each divided by its max |value|.

    pytorch-grad-cam returns (H, W, C) numpy arrays for one image; the others (N, C, H, W).
    """
    if isinstance(output, Tensor):
        maps = output.detach()
    else:
        maps = torch.from_numpy(np.ascontiguousarray(output)).permute(2, 0, 1).unsqueeze(0)
    return by_max_abs(maps.float().reshape(-1, *maps.shape[-3:]))


COMPARABLE: dict[str, Callable[[Output], Tensor]] = {
    "gradcam_1": heatmaps,
    "batch8": heatmaps,
    "top5": heatmaps,
    "guided_bp": pixel_maps,
    "guided_gradcam": pixel_maps,
    "occlusion": heatmaps,
}


# ---------------------------------------------------------------- one group of cases


@dataclass
class Group:
    """The cases of one model at one input size, timed together."""

    model: str
    layer: str
    size: int
    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # case -> lib -> s
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)  # case -> lib -> diff
    notes: dict[str, list[str]] = field(default_factory=dict)  # case -> notes

    @property
    def label(self) -> str:
        return f"{self.model} {self.size}x{self.size}"


def library_calls(
    a: Adapter, x1: Tensor, xb: Tensor, top: list[int], batch_top: list[int]
) -> dict[str, Callable[[], Output] | None]:
    """One library's nullary call per case (``None`` where it has no such method)."""
    c1 = top[0]
    gb, ggc, occ = a.guided_bp, a.guided_gradcam, a.occlusion
    return {
        "gradcam_1": lambda: a.cam(x1, [c1]),
        "batch8": lambda: a.cam(xb, batch_top),
        "top5": lambda: a.top5(x1, top),
        "guided_bp": (lambda: gb(x1, c1)) if gb else None,
        "guided_gradcam": (lambda: ggc(x1, c1)) if ggc else None,
        "occlusion": (lambda: occ(x1, c1)) if occ else None,
    }


def group_calls(
    model: nn.Module,
    layer: str,
    size: int,
    cases: list[str],
    libraries: list[str],
    layout: Layout | None = None,
) -> tuple[dict[str, Callable[[], Output]], dict[str, str]]:
    """Nullary calls for every (case, library) of one model and size, and the class notes."""
    x1 = photo_batch(size, 1)
    xb = photo_batch(size, 8 if "batch8" in cases else 1)
    with torch.no_grad():
        top = model(x1)[0].topk(5).indices.tolist()
        batch_top = model(xb).argmax(1).tolist()
    c1 = top[0]
    calls: dict[str, Callable[[], Output]] = {}
    refs = reference_cases(model, layer)
    for name in REFERENCES:
        calls[f"{name}/reference"] = functools.partial(refs[name], x1)
    for lib in libraries:
        a = adapter(lib, model, layer, layout)
        # Own copies of the inputs: Captum sets (and resets) requires_grad on its input.
        plan = library_calls(a, x1.clone(), xb.clone(), top, batch_top)
        for case in cases:
            call = plan[case]
            if call is not None and not (case == "occlusion" and lib not in (OURS, "captum")):
                calls[f"{case}/{lib}"] = call
    batch = f", batch {batch_top}" if "batch8" in cases else ""
    return calls, {"class": f"top-1 {c1}, top-5 {top}{batch}"}


def check_agreement(group: Group, calls: dict[str, Callable[[], Output]]) -> None:
    """Run every case once (a warm-up) and record each peer's largest difference from ours."""
    outputs: dict[str, Output] = {}
    for key, call in calls.items():
        outputs[key] = call()
    for key in outputs:
        case, lib = key.split("/")
        if lib in ("reference", OURS) or f"{case}/{OURS}" not in outputs:
            continue
        ours = COMPARABLE[case](outputs[f"{case}/{OURS}"])
        theirs = COMPARABLE[case](outputs[key])
        if ours.shape != theirs.shape:
            raise RuntimeError(f"{group.label} {case}: {lib} {theirs.shape} vs ours {ours.shape}")
        group.agreement.setdefault(case, {})[lib] = float((ours - theirs).abs().max())
        if not bool(ours.abs().amax(dim=tuple(range(1, ours.ndim))).gt(0).all()):
            note = "a map of ours is all zero: agreement is not meaningful"
            group.notes.setdefault(case, []).append(note)


def relu6_notes(model: nn.Module, group: Group) -> None:
    """Peers guide only nn.ReLU: on a ReLU6 model their Guided Backprop is a plain gradient."""
    kinds = {type(m) for m in model.modules()}
    if nn.ReLU6 in kinds and nn.ReLU not in kinds:
        for case in ("guided_bp", "guided_gradcam"):
            if case in group.agreement:
                note = (
                    "Captum and pytorch-grad-cam guide only nn.ReLU; this model's rectifiers "
                    "are nn.ReLU6, so their result is the plain gradient (ours is guided)"
                )
                group.notes.setdefault(case, []).append(note)


def layout_notes(layout: Layout, group: Group) -> None:
    """Say how the peers were given a transformer's layer (see the module docstring)."""
    note = (
        f"layer output: {layout.what}; pytorch-grad-cam and torchcam: reshape_transform; "
        "Captum: the layer wrapped to expose the same maps"
    )
    for case in group.agreement:
        group.notes.setdefault(case, []).append(note)


def ignoring_input(call: Callable[[], Output]) -> Callable[[Tensor], object]:
    """``call`` in the shape ``bench_core.time_cases`` expects (our calls hold their inputs)."""
    return lambda _x: call()


def run_group(
    name: str,
    size: int,
    cases: list[str],
    libraries: list[str],
    args: argparse.Namespace,
) -> Group:
    torch.manual_seed(0)
    model, layer = build_model(name)
    group = Group(name, layer, size)
    layout = LAYOUTS.get(name)
    if layout is not None:
        cases = [c for c in cases if c in TRANSFORMER_CASES]
        # Every library must run at the layer a user of gradcam gets with no layer given.
        chosen = gradcam.GradCAM(model)(photo_batch(size, 1)).layer
        if chosen != layer:
            raise RuntimeError(f"{name}: GradCAM(model) chose {chosen!r}, the benchmark {layer!r}")
    calls, info = group_calls(model, layer, size, cases, libraries, layout)
    log(f"[{group.label}] layer {layer}, {info['class']}; agreement pass over {len(calls)} calls")
    check_agreement(group, calls)
    relu6_notes(model, group)
    if layout is not None:
        layout_notes(layout, group)
    fast = {k: v for k, v in calls.items() if not k.startswith("occlusion/")}
    slow = {k: v for k, v in calls.items() if k.startswith("occlusion/")}
    for part in (fast, slow):
        if not part:
            continue
        log(f"[{group.label}] timing {len(part)} calls, {args.rounds} rounds")
        timed = {key: ignoring_input(call) for key, call in part.items()}
        for key, samples in time_cases(timed, torch.empty(0), args.rounds, args.warmup).items():
            case, lib = key.split("/")
            group.times.setdefault(case, {})[lib] = samples
    return group


# ---------------------------------------------------------------- memory


def memory_child(model_name: str, library: str, batch: int) -> None:
    """Body of one ``--memory-case`` subprocess: print the peak RSS growth in MB as JSON."""
    torch.manual_seed(0)
    model, layer = build_model(model_name)
    if library == "forward":

        def run(x: Tensor) -> Output:
            with torch.no_grad():
                return model(x)

    else:
        a = adapter(library, model, layer, LAYOUTS.get(model_name))
        del model  # the peers work on their own copies
        gc.collect()

        def run(x: Tensor) -> Output:
            return a.cam(x, [MEMORY_CLASS] * x.shape[0])

    # Lazy allocations, well below the peak measured; ViT's position embeddings fix its input
    # size, so its warm-up is a 224 image (at batch 1, the size measured).
    warm = 224 if model_name == "vit_b_16" else 64
    run(torch.randn(1, 3, warm, warm))
    gc.collect()
    reset_peak_rss()
    before = peak_rss_kib()
    run(torch.randn(batch, 3, 224, 224))
    after = peak_rss_kib()
    print(json.dumps({"delta_mb": (after - before) / 1024}))


def measure_memory(model_name: str, library: str, batch: int, threads: int) -> float:
    argv = [sys.executable, os.path.abspath(__file__), "--threads", str(threads)]
    argv += ["--memory-case", model_name, library, str(batch)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory case {model_name}/{library}/b{batch} failed:\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["delta_mb"])


# ---------------------------------------------------------------- report


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def cell(samples: list[float] | None, ours: list[float] | None) -> str:
    if samples is None:
        return "n/a"
    text = f"{median_ms(samples):.1f} (min {1000 * min(samples):.1f})"
    if ours is not None and samples is not ours:
        by_median = statistics.median(samples) / statistics.median(ours)
        text += f" **{by_median:.2f}x / {min(samples) / min(ours):.2f}x**"
    return text


def time_rows(groups: list[Group], libraries: list[str]) -> list[list[str]]:
    rows = []
    for g in groups:
        for case in [*CASES, "occlusion"]:
            if case not in g.times:
                continue
            by_lib = g.times[case]
            ours = by_lib.get(OURS)
            row = [g.label, CASE_LABELS[case]]
            row += [cell(by_lib.get(lib), ours) for lib in libraries]
            rows.append(row)
    return rows


def difference(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.0e}"


def agreement_rows(groups: list[Group], peers: list[str]) -> list[list[str]]:
    rows = []
    for g in groups:
        for case, by_lib in g.agreement.items():
            diffs = [difference(by_lib[p]) if p in by_lib else "n/a" for p in peers]
            notes = "; ".join(dict.fromkeys(g.notes.get(case, [])))
            rows.append([g.label, CASE_LABELS[case], *diffs, notes])
    return rows


def reference_rows(groups: list[Group], libraries: list[str]) -> list[list[str]]:
    rows = []
    for g in groups:
        refs = {name: g.times[name]["reference"] for name in REFERENCES if name in g.times}
        if "gradcam_1" not in g.times or len(refs) < len(REFERENCES):
            continue
        layer = refs["fwd_grad"]
        row = [f"{g.label} (`{g.layer}`)", *(cell(refs[n], None) for n in REFERENCES)]
        for lib in libraries:
            s = g.times["gradcam_1"].get(lib)
            by_median = statistics.median(s) / statistics.median(layer) if s else 0.0
            row.append(f"{by_median:.2f} / {min(s) / min(layer):.2f}" if s else "n/a")
        rows.append(row)
    return rows


def memory_rows(
    memory: dict[tuple[str, int], dict[str, float]], libraries: list[str]
) -> list[list[str]]:
    rows = []
    for (model, batch), by_lib in memory.items():
        ours = by_lib.get(OURS)
        row = [model, str(batch), f"{by_lib['forward']:.0f}"]
        for lib in libraries:
            if lib not in by_lib:
                row.append("n/a")
                continue
            text = f"{by_lib[lib]:.0f}"
            if lib != OURS and ours:
                text += f" ({by_lib[lib] / ours:.1f}x)"
            row.append(text)
        rows.append(row)
    return rows


@dataclass
class Target:
    """One of the issue's targets: ``peer`` median (or peak) over ours at least ``factor``.

    With ``peer`` a reference (``fwd_grad``), the target is the other way round: ours over the
    reference at most ``factor``.
    """

    case: str
    peer: str
    factor: float
    models: tuple[str, ...] = CNNS


TARGETS = (
    Target("gradcam_1", "captum", 1.0),
    Target("gradcam_1", "torchcam", 1.0),
    Target("gradcam_1", "pytorch-grad-cam", 2.5, ("resnet50",)),
    Target("top5", "captum", 3.0),
    Target("top5", "pytorch-grad-cam", 9.0),
    Target("top5", "torchcam", 1.0),
    Target("guided_gradcam", "captum", 1.3),
    Target("guided_gradcam", "pytorch-grad-cam", 3.0),
    Target("memory", "captum", 2.0, ("resnet50",)),
    Target("memory", "torchcam", 2.0, ("resnet50",)),
    # Issue 14: one class costs the gradient to the layer; top-5 one batched backward pass.
    Target("gradcam_1", "fwd_grad", 1.05, TRANSFORMERS),
    Target("top5", "pytorch-grad-cam", 4.0, TRANSFORMERS),
)


def target_rows(
    groups: list[Group], memory: dict[tuple[str, int], dict[str, float]], big: int
) -> list[list[str]]:
    rows = []
    for t in TARGETS:
        for model in t.models:
            if t.case == "memory":
                by_lib = memory.get((model, big), {})
                if OURS not in by_lib or t.peer not in by_lib:
                    continue
                ratio = low = by_lib[t.peer] / by_lib[OURS]
                what = f"peak memory, batch {big}"
            else:
                g = next((g for g in groups if g.model == model and g.size == 224), None)
                if g is None or OURS not in g.times.get(t.case, {}):
                    continue
                ours = g.times[t.case][OURS]
                if t.peer in REFERENCES:
                    if "reference" not in g.times.get(t.peer, {}):
                        continue
                    ref = g.times[t.peer]["reference"]
                    ratio = statistics.median(ours) / statistics.median(ref)
                    low = min(ours) / min(ref)
                    ok = [r <= t.factor for r in (ratio, low)]
                    against, target = REFERENCE_LABELS[t.peer], f"gradcam <= {t.factor:g}x"
                    cells = verdict_cells(ratio, low, ok)
                    rows.append([CASE_LABELS[t.case], model, against, target, *cells])
                    continue
                if t.peer not in g.times[t.case]:
                    continue
                theirs = g.times[t.case][t.peer]
                ratio = statistics.median(theirs) / statistics.median(ours)
                low = min(theirs) / min(ours)
                what = CASE_LABELS[t.case]
            ok = [r >= t.factor for r in (ratio, low)]
            rows.append([what, model, t.peer, f">= {t.factor:g}x", *verdict_cells(ratio, low, ok)])
    return rows


def verdict_cells(ratio: float, low: float, ok: list[bool]) -> list[str]:
    verdicts = ", ".join("met" if o else "**missed**" for o in ok)
    return [f"{ratio:.2f}x", f"{low:.2f}x", verdicts]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"model name\s*:\s*(.+)", text)
        if found:
            cpu = found.group(1).strip()
    except OSError:
        pass
    gpu = (
        f"GPU {torch.cuda.get_device_name(0)} (not used: CPU run)"
        if torch.cuda.is_available()
        else "no GPU"
    )
    return f"{cpu}, {os.cpu_count()} CPUs, {gpu}, {platform.system()} {platform.release()}"


def plot(groups: list[Group], peers: list[str], path: str) -> None:
    """Horizontal bars of peer time / gradcam time for every case (log scale; 1 = as fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels: list[str] = []
    ratios: dict[str, list[float]] = {p: [] for p in peers}
    lows: dict[str, list[float]] = {p: [] for p in peers}
    for g in groups:
        for case in [*CASES, "occlusion"]:
            by_lib = g.times.get(case, {})
            if OURS not in by_lib:
                continue
            labels.append(f"{g.label}: {CASE_LABELS[case]}")
            ours, ours_low = statistics.median(by_lib[OURS]), min(by_lib[OURS])
            for p in peers:
                ratios[p].append(statistics.median(by_lib[p]) / ours if p in by_lib else np.nan)
                lows[p].append(min(by_lib[p]) / ours_low if p in by_lib else np.nan)
    height = 0.8 / max(len(peers), 1)
    fig, ax = plt.subplots(figsize=(13, 0.45 * len(labels) + 1.5))
    ys = np.arange(len(labels))
    for i, p in enumerate(peers):
        bars = ax.barh(ys + i * height, ratios[p], height=height, label=f"{p} (medians)")
        ax.plot(
            lows[p],
            ys + i * height,
            "o",
            color=bars.patches[0].get_facecolor(),
            markeredgecolor="black",
            markersize=5,
            label=f"{p} (minimums)",
        )
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(ys + height * (len(peers) - 1) / 2, labels)
    ax.invert_yaxis()
    ax.set_xlabel("peer time / gradcam time, same rounds (log scale; above 1: gradcam is faster)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_section(path: str, text: str) -> None:
    """Write ``text`` between the markers of ``path``, keeping what is around them."""
    section = f"{BEGIN}\n{text}\n{END}"
    target = Path(path)
    old = target.read_text() if target.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + section + rest.split(END, 1)[1]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + section + "\n"
    target.write_text(new)


@dataclass
class Run:
    """Everything one run measured, and how (``meta``); saved with ``--json``."""

    groups: list[Group]
    memory: dict[tuple[str, int], dict[str, float]]
    libraries: list[str]
    skipped: list[str]
    meta: dict[str, Any]

    def to_json(self) -> dict[str, object]:
        return {
            "meta": self.meta,
            "libraries": self.libraries,
            "skipped": self.skipped,
            "groups": [
                {
                    "model": g.model,
                    "size": g.size,
                    "layer": g.layer,
                    "times": g.times,
                    "agreement": g.agreement,
                    "notes": g.notes,
                }
                for g in self.groups
            ],
            "memory": [{"model": m, "batch": b, "mb": v} for (m, b), v in self.memory.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        groups = [
            Group(g["model"], g["layer"], g["size"], g["times"], g["agreement"], g["notes"])
            for g in data["groups"]
        ]
        memory = {(m["model"], m["batch"]): m["mb"] for m in data["memory"]}
        return cls(groups, memory, data["libraries"], data["skipped"], data["meta"])


def render(run: Run) -> str:
    """The Markdown report of a run."""
    groups, memory, libraries, meta = run.groups, run.memory, run.libraries, run.meta
    peers = [lib for lib in libraries if lib != OURS]
    lines = [f"Command: `{meta['command']}`", "", f"Machine: {meta['machine']}."]
    if meta.get("note"):
        lines += ["", str(meta["note"])]
    if run.skipped:
        lines += ["", f"**Skipped (not installed): {', '.join(run.skipped)}.**"]
    time_header = "model, input|case|" + "|".join(
        f"{lib} ms" + (" (ratio of medians / of minimums)" if lib != OURS else "")
        for lib in libraries
    )
    lines += [
        "",
        f"Time per call: median (min) of {meta['rounds']} interleaved rounds, CPU; "
        "**ratios** = library median / gradcam median, then library minimum / gradcam "
        "minimum, from the same rounds (above 1: gradcam is faster).",
        "",
        *table(time_header, time_rows(groups, libraries)),
        "",
        "Agreement with gradcam's maps: largest absolute difference over all pixels "
        "(heatmaps min-max normalized per map; pixel-space maps divided by their largest "
        "absolute value). 0 = the same map; 1 = as different as two maps can be.",
        "",
        *table(
            "model, input|case|" + "|".join(f"{p} max diff" for p in peers) + "|note",
            agreement_rows(groups, peers),
        ),
        "",
        "Reference costs on the same rounds (batch 1, median (min) ms), and each library's "
        "Grad-CAM 1-class time over forward + gradient to the layer (medians / minimums):",
        "",
        *table(
            "model, input (layer)|"
            + "|".join(f"{REFERENCE_LABELS[r]} ms" for r in REFERENCES)
            + "|"
            + "|".join(f"{lib} Grad-CAM / fwd+grad to layer" for lib in libraries),
            reference_rows(groups, libraries),
        ),
    ]
    if memory:
        lines += [
            "",
            "Peak memory of Grad-CAM, one class per image, 224x224: growth of peak RSS in MB "
            "over the loaded model, each in a fresh process (ratio to gradcam):",
            "",
            *table(
                "model|batch|no-grad forward MB|" + "|".join(f"{lib} MB" for lib in libraries),
                memory_rows(memory, libraries),
            ),
        ]
    big = max(b for _, b in memory) if memory else 0
    rows = target_rows(groups, memory, big)
    if rows:
        header = "what|model|against|target|measured: medians|minimums|verdict (medians, minimums)"
        lines += ["", "Targets:", "", *table(header, rows)]
    lines += [
        "",
        f"Wall time: {meta['wall_s']:.0f} s ({meta['timing_s']:.0f} s agreement and timing, "
        f"{float(meta['wall_s']) - float(meta['timing_s']):.0f} s memory)"
        + (
            f"; CPU time {meta['cpu_s']:.0f} s (user + system, this process and its memory "
            "subprocesses: the part of the wall time that other jobs do not inflate)."
            if "cpu_s" in meta
            else "."
        ),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def csv_list(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if names == ["none"]:
        return []
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise SystemExit(f"{flag}: unknown {unknown}; choose from {', '.join(allowed)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of models")
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of 224x224 cases")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma list")
    parser.add_argument("--large-model", default="resnet50", help="model of the large input")
    parser.add_argument("--large-size", type=int, default=448)
    parser.add_argument(
        "--large-cases", default="gradcam_1,top5", help="cases at the large size, or 'none'"
    )
    parser.add_argument(
        "--occlusion-models", default="efficientnet_lite0", help="comma list, or 'none'"
    )
    parser.add_argument("--memory-batches", default="1,32", help="comma list, or 'none'")
    parser.add_argument(
        "--memory-models",
        default=",".join(CNNS),
        help="models (of --models) whose memory is measured: comma list, or 'none'",
    )
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (default 7)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="extra warm-up rounds (the agreement pass already runs every call once first)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 round, no warm-up, Grad-CAM 1 class only, memory at batch 1",
    )
    parser.add_argument("--out", help="write the report into this Markdown file, between markers")
    parser.add_argument("--plot", help="write the ratio plot (PNG) here")
    parser.add_argument("--json", help="write the raw samples here")
    parser.add_argument(
        "--from-json", help="measure nothing: render the report of a run saved with --json"
    )
    parser.add_argument(
        "--memory-case", nargs=3, metavar=("MODEL", "LIBRARY", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup = 1, 0
        args.cases, args.large_cases, args.occlusion_models = "gradcam_1", "none", "none"
        args.memory_batches = "1"
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Captum warns on every Guided Backprop call that it sets hooks and requires_grad.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\..*")
    torch.set_num_threads(args.threads)
    if args.memory_case:
        model_name, library, batch = args.memory_case
        memory_child(model_name, library, int(batch))
        return 0
    if args.from_json:
        publish(Run.from_json(json.loads(Path(args.from_json).read_text())), args)
        return 0
    models = csv_list(args.models, MODELS, "--models")
    cases = csv_list(args.cases, CASES, "--cases")
    large_cases = csv_list(args.large_cases, CASES, "--large-cases")
    occlusion_models = csv_list(args.occlusion_models, MODELS, "--occlusion-models")
    memory_models = csv_list(args.memory_models, MODELS, "--memory-models")
    wanted = csv_list(args.libraries, LIBRARIES, "--libraries")
    batches = [int(b) for b in csv_list(args.memory_batches, tuple(map(str, range(1, 1025))), "")]
    libraries = [lib for lib in wanted if available(lib)]
    skipped = [lib for lib in wanted if lib not in libraries]
    for lib in skipped:
        log(f"SKIPPED {lib}: not installed (pip install -e '.[bench]')")
    started = time.perf_counter()

    groups = []
    for name in models:
        group_cases = cases + (["occlusion"] if name in occlusion_models else [])
        groups.append(run_group(name, 224, group_cases, libraries, args))
    if large_cases and args.large_model in models:
        groups.append(run_group(args.large_model, args.large_size, large_cases, libraries, args))

    timing_s = time.perf_counter() - started
    memory: dict[tuple[str, int], dict[str, float]] = {}
    for name in [m for m in models if m in memory_models]:
        for batch in batches:
            for lib in ["forward", *libraries]:
                log(f"[{name}] memory {lib} batch {batch}")
                memory.setdefault((name, batch), {})[lib] = measure_memory(
                    name, lib, batch, args.threads
                )
    elapsed = time.perf_counter() - started
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    run = Run(
        groups,
        memory,
        libraries,
        skipped,
        {
            "command": shlex.join(sys.orig_argv),
            "machine": f"{machine()}. torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {now}. Libraries: "
            + ", ".join(f"{lib} {version(lib)}" for lib in libraries),
            "rounds": args.rounds,
            "wall_s": elapsed,
            "timing_s": timing_s,
            "cpu_s": sum(u.ru_utime + u.ru_stime for u in usage),
        },
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(run.to_json(), indent=1))
    publish(run, args)
    return 0


def publish(run: Run, args: argparse.Namespace) -> None:
    """Print the report; write it into ``--out`` and the plot to ``--plot`` when asked."""
    text = render(run)
    print(text)
    if args.out:
        write_section(args.out, text)
    if args.plot:
        plot(run.groups, [lib for lib in run.libraries if lib != OURS], args.plot)


if __name__ == "__main__":
    sys.exit(main())
