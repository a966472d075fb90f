"""Grad-CAM at a detector's feature pyramid against one backbone stage, on CPU.

Run from the repository root (no network; torchvision's Faster R-CNN with random weights)::

    .venv/bin/python benchmarks/bench_pyramid.py              # 5 rounds
    .venv/bin/python benchmarks/bench_pyramid.py --rounds 1   # a smoke run

Cases, on one 320 x 320 image (Faster R-CNN ResNet-50 FPN, ``min_size=max_size=320``, no score
threshold), median of ``--rounds`` interleaved rounds after a warm-up:

* a no-grad forward pass;
* Grad-CAM at ``backbone.body.layer4`` (:func:`gradcam.tasks.task_layer`), 1 and 5 detections;
* Grad-CAM at ``backbone`` (the five FPN levels, :func:`gradcam.methods.gradcam.pyramid_cam`),
  1 and 5 detections: one forward and one batched backward pass to all five levels;
* Eigen-CAM at ``backbone`` (levels concatenated at the finest size), and pytorch-grad-cam
  1.5.7's EigenCAM with its tutorial's FPN ``reshape_transform``, when installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_core import median_seconds
from torch import Tensor
from torchvision.models import detection

from gradcam import GradCAM
from gradcam.methods import create_method
from gradcam.tasks import DetectionScore, detect, task_layer


def _tutorial_transform(found: dict[str, Tensor]) -> Tensor:
    """pytorch-grad-cam's detection tutorial: |level| resized to the 'pool' size, concatenated."""
    size = found["pool"].shape[-2:]
    return torch.cat([F.interpolate(v.abs(), size, mode="bilinear") for v in found.values()], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 320, 320)
    model = detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=320, max_size=320, box_score_thresh=0.0
    ).eval()
    targets = [DetectionScore.of(d) for d in detect(model, x)[0][:5]]
    stage = GradCAM(model, task_layer(model))
    pyramid = GradCAM(model, "backbone")
    eigen = create_method("eigen-cam", model, "backbone")

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    cases: dict[str, Callable[[], object]] = {
        "forward (no grad)": forward,
        "gradcam at layer4, 1 detection": lambda: stage(x, targets[0]),
        "gradcam at layer4, 5 detections": lambda: stage(x, targets),
        "gradcam at the FPN, 1 detection": lambda: pyramid(x, targets[0]),
        "gradcam at the FPN, 5 detections": lambda: pyramid(x, targets),
        "eigen-cam at the FPN": lambda: eigen(x, targets[0]),
    }
    try:
        from pytorch_grad_cam import EigenCAM
    except ImportError:
        print("pytorch-grad-cam is not installed: its case is skipped")
    else:
        peer = EigenCAM(model, [model.backbone], reshape_transform=_tutorial_transform)

        def peer_eigen() -> object:
            return peer(input_tensor=x, targets=[lambda output: output["scores"][:1].sum()])

        cases["pytorch-grad-cam EigenCAM, FPN transform"] = peer_eigen
    results = median_seconds(cases, args.rounds)
    print(f"Faster R-CNN ResNet-50 FPN, 320 x 320, CPU, median of {args.rounds} rounds, seconds")
    for name, seconds in results.items():
        print(f"  {name:45s} {seconds:7.3f}")
    print(f"  layer at the FPN: {pyramid(x, targets[0]).layer}")


if __name__ == "__main__":
    main()
