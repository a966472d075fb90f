"""Detection and segmentation Grad-CAM on CPU: gradcam's targets against pytorch-grad-cam's.

Run from the repository root (no network; torchvision models with random weights)::

    .venv/bin/python benchmarks/bench_tasks.py              # Faster R-CNN and DeepLabV3
    .venv/bin/python benchmarks/bench_tasks.py --rounds 3   # fewer rounds

Cases, on one 320 x 320 image, median of ``--rounds`` interleaved rounds after a warm-up:

* Faster R-CNN (ResNet-50 FPN, ``min_size=320``, no score threshold): a no-grad forward;
  gradcam with one :class:`~gradcam.tasks.DetectionScore`; gradcam with five detections in one
  call (one forward, one batched backward, five maps); pytorch-grad-cam 1.5.7 with its
  ``FasterRCNNBoxScoreTarget``, once per detection for five maps (its target sums the boxes it
  is given into one score, so one call gives one map); both at ``backbone.body.layer4``.
* DeepLabV3 (ResNet-50): a no-grad forward; gradcam with one
  :class:`~gradcam.tasks.SegmentationScore`; pytorch-grad-cam with ``SemanticSegmentationTarget``
  on its documented ``["out"]`` wrapper; both at ``backbone.layer4``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_core import median_seconds
from torch import Tensor, nn
from torchvision.models import detection, segmentation

from gradcam import GradCAM
from gradcam.tasks import DetectionScore, SegmentationScore, detect, task_layer


def _peer(model: nn.Module, layer: nn.Module, x: Tensor, targets: list[object]) -> None:
    from pytorch_grad_cam import GradCAM as PeerGradCAM

    cam = PeerGradCAM(model, [layer])
    try:
        cam(input_tensor=x, targets=targets)
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


class _Out(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from pytorch_grad_cam.utils.model_targets import (
        FasterRCNNBoxScoreTarget,
        SemanticSegmentationTarget,
    )

    torch.manual_seed(0)
    x = torch.rand(1, 3, 320, 320)
    detector = detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=320, max_size=320, box_score_thresh=0.0
    ).eval()
    found = detect(detector, x)[0][:5]
    targets = [DetectionScore.of(d) for d in found]
    cam = GradCAM(detector, task_layer(detector))
    layer4 = detector.backbone.body.layer4
    peer_targets = [FasterRCNNBoxScoreTarget([d.label], [np.array(d.box)]) for d in found]

    def forward() -> object:
        with torch.no_grad():
            return detector(x)

    results = median_seconds(
        {
            "forward (no grad)": forward,
            "gradcam, 1 detection": lambda: cam(x, targets[0]),
            "gradcam, 5 detections (1 call)": lambda: cam(x, targets),
            "pytorch-grad-cam, 5 detections (5 calls)": lambda: [
                _peer(detector, layer4, x, [t]) for t in peer_targets
            ],
        },
        args.rounds,
    )
    print("Faster R-CNN ResNet-50 FPN, 320 x 320, CPU, median seconds")
    for name, seconds in results.items():
        print(f"  {name:45s} {seconds:7.3f}")
    segmenter = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None).eval()
    mask = np.zeros((320, 320), dtype=np.float32)
    mask[80:240, 80:240] = 1
    seg_cam = GradCAM(segmenter, task_layer(segmenter))
    wrapped = _Out(segmenter)

    def seg_forward() -> object:
        with torch.no_grad():
            return segmenter(x)

    results = median_seconds(
        {
            "forward (no grad)": seg_forward,
            "gradcam, 1 class in a mask": lambda: seg_cam(x, SegmentationScore(1, mask)),
            "pytorch-grad-cam, 1 class in a mask": lambda: _peer(
                wrapped, segmenter.backbone.layer4, x, [SemanticSegmentationTarget(1, mask)]
            ),
        },
        args.rounds,
    )
    print("DeepLabV3 ResNet-50, 320 x 320, CPU, median seconds")
    for name, seconds in results.items():
        print(f"  {name:45s} {seconds:7.3f}")


if __name__ == "__main__":
    main()
