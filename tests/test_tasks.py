"""Detection and segmentation targets: hand-computed scores on hand-made outputs, torchvision's
detectors and segmenters (random weights, tiny inputs) unchanged, and agreement with
pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` and ``SemanticSegmentationTarget``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.state import assert_unchanged, snapshot
from torch import Tensor, nn
from torchvision.models import detection, resnet18, segmentation
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import box_iou
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from gradcam import GradCAM, GradCAMError, LayerError, TargetError
from gradcam.layers import resolve_layer
from gradcam.maps import normalize
from gradcam.tasks import (
    Detection,
    DetectionScore,
    SegmentationScore,
    box_overlap,
    detect,
    detector_maps,
    segmentation_logits,
    task_layer,
)

SIZE = {"min_size": 64, "max_size": 96}


def _fpn(**kwargs: Any) -> nn.Module:
    # ResNet-18 keeps the tests fast; the detectors' heads and postprocessing are torchvision's.
    return resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5, **kwargs)


def _p6p7() -> dict[str, Any]:
    return {"returned_layers": [2, 3, 4], "extra_blocks": LastLevelP6P7(256, 256)}


@pytest.fixture(scope="module")
def detectors() -> dict[str, nn.Module]:
    """Torchvision's four detector families, random weights, no score threshold (random
    weights score low), eval mode."""
    torch.manual_seed(0)
    return {
        "faster_rcnn": detection.FasterRCNN(
            _fpn(), num_classes=3, box_score_thresh=0.0, **SIZE
        ).eval(),
        "retinanet": detection.RetinaNet(
            _fpn(**_p6p7()), num_classes=3, score_thresh=0.0, **SIZE
        ).eval(),
        "fcos": detection.FCOS(_fpn(**_p6p7()), num_classes=3, score_thresh=0.0, **SIZE).eval(),
        "ssdlite": detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=3, score_thresh=0.0
        ).eval(),
    }


@pytest.fixture(scope="module")
def image() -> Tensor:
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _output(*rows: tuple[tuple[float, ...], int, float]) -> list[dict[str, Tensor]]:
    boxes = torch.tensor([r[0] for r in rows], requires_grad=True)
    scores = torch.tensor([r[2] for r in rows], requires_grad=True)
    return [{"boxes": boxes, "labels": torch.tensor([r[1] for r in rows]), "scores": scores}]


# Hand-computed scores


def test_detection_score_by_hand() -> None:
    """Reference (0, 0, 10, 10); detections: the same box as class 2 (0.5), its left half as
    class 1 (0.9), so IoU 50 / 100 = 0.5 with class 1."""
    output = _output(((0.0, 0.0, 10.0, 10.0), 2, 0.5), ((0.0, 0.0, 5.0, 10.0), 1, 0.9))
    assert DetectionScore((0, 0, 10, 10), 2)(output).tolist() == [1.5]
    assert DetectionScore((0, 0, 10, 10), 2, iou=False)(output).tolist() == [0.5]
    # Class 1 overlaps by exactly 0.5: a match needs more than the threshold.
    assert DetectionScore((0, 0, 10, 10), 1, threshold=0.4)(output).item() == pytest.approx(1.4)
    with pytest.warns(UserWarning, match="no detection of class 1 overlaps"):
        assert DetectionScore((0, 0, 10, 10), 1)(output).tolist() == [0.0]


def test_same_box_other_class_does_not_hide_the_match() -> None:
    """Faster R-CNN gives one proposal a box per class: the class asked for is found even when
    another class's identical box comes first (pytorch-grad-cam's target scores 0 there)."""
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    output = _output(((0.0, 0.0, 10.0, 10.0), 2, 0.7), ((0.0, 0.0, 10.0, 10.0), 1, 0.2))
    assert DetectionScore((0, 0, 10, 10), 1)(output).tolist() == [pytest.approx(1.2)]
    peer = FasterRCNNBoxScoreTarget([1], [np.array([0.0, 0.0, 10.0, 10.0])])
    assert peer(output[0]).tolist() == [0.0]


def test_box_overlap_is_box_iou_and_finite_without_area() -> None:
    boxes = torch.tensor([[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 9.0]])
    box = torch.tensor([0.0, 0.0, 2.0, 2.0])
    torch.testing.assert_close(box_overlap(box, boxes), box_iou(box[None], boxes)[0])
    assert box_overlap(box, boxes)[0].item() == pytest.approx(1 / 3)
    flat = torch.tensor([[0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    overlap = box_overlap(torch.zeros(4), flat)
    (grad,) = torch.autograd.grad(overlap.sum(), flat)
    assert overlap.tolist() == [0.0] and torch.isfinite(grad).all()


def test_degenerate_identical_box_still_matches() -> None:
    output = _output(((4.0, 8.0, 9.0, 8.0), 1, 0.3))  # no height, as untrained FCOS gives
    assert DetectionScore((4, 8, 9, 8), 1)(output).tolist() == [pytest.approx(0.3)]


def test_segmentation_score_by_hand() -> None:
    logits = torch.arange(16.0).view(1, 2, 2, 4)  # class 1: [[8, 9, 10, 11], [12, 13, 14, 15]]
    mask = np.array([[1, 0, 0, 1], [0, 0, 1, 0]], dtype=bool)
    assert SegmentationScore(1, mask)({"out": logits, "aux": None}).tolist() == [8 + 11 + 14]
    assert SegmentationScore(0, torch.full((2, 4), 0.5))(logits).tolist() == [0.5 * 28]
    # Without a mask: where class 1 wins, which is everywhere here.
    assert SegmentationScore(1)((logits,)).tolist() == [sum(range(8, 16))]
    assert SegmentationScore(0)(logits).tolist() == [0.0]
    batch = torch.cat([logits, -logits])
    per_image = torch.stack([torch.ones(2, 4), torch.zeros(2, 4)])
    assert SegmentationScore(1, per_image)(batch).tolist() == [sum(range(8, 16)), 0.0]


def test_bad_task_targets() -> None:
    with pytest.raises(TargetError, match="4 finite numbers"):
        DetectionScore((0, 0, 1), 1)  # type: ignore[arg-type]
    with pytest.raises(TargetError, match="x1 > x2"):
        DetectionScore((5, 0, 1, 1), 1)
    with pytest.raises(TargetError, match=r"threshold must be in \[0, 1\)"):
        DetectionScore((0, 0, 1, 1), 1, threshold=1.5)
    with pytest.raises(TargetError, match="list of dicts with 'boxes'"):
        DetectionScore((0, 0, 1, 1), 1)(torch.zeros(1, 3))
    with pytest.raises(TargetError, match="non-negative integer"):
        SegmentationScore(-1)
    with pytest.raises(TargetError, match=r"\(H, W\) or \(B, H, W\)"):
        SegmentationScore(1, np.zeros((1, 1, 1, 1, 4)))
    with pytest.raises(TargetError, match=r"does not fit the model's \(2, 2\) score maps"):
        SegmentationScore(1, np.zeros(4))(torch.zeros(1, 2, 2, 2))  # a signal's mask
    with pytest.raises(TargetError, match=r"does not fit the model's \(2, 2\) score maps"):
        SegmentationScore(1, np.zeros((3, 3)))(torch.zeros(1, 2, 2, 2))
    with pytest.raises(TargetError, match="class id 5 is out of range"):
        SegmentationScore(5)(torch.zeros(1, 2, 2, 2))
    with pytest.raises(TargetError, match=r"\(B, classes, H, W\) scores"):
        segmentation_logits({"logits": torch.zeros(1, 3)})
    with pytest.raises(LayerError, match="pass layer="):
        task_layer(nn.Conv2d(3, 3, 1))


# Torchvision's detectors, unchanged


def _usable(found: list[Detection]) -> list[Detection]:
    return [d for d in found if d.box[2] > d.box[0] and d.box[3] > d.box[1]]


@pytest.mark.parametrize("name", ["faster_rcnn", "retinanet", "fcos", "ssdlite"])
def test_detectors_explain_each_detection(
    name: str, detectors: dict[str, nn.Module], image: Tensor
) -> None:
    model = detectors[name]
    before = snapshot(model)
    found = _usable(detect(model, image)[0])[:2]
    assert found and all(isinstance(d, Detection) for d in found)
    layer = task_layer(model)
    result = GradCAM(model, layer)(image, [DetectionScore.of(d) for d in found])
    assert_unchanged(before, model)
    assert result.classes.tolist() == [[d.label for d in found]]
    # Each detection is found again: its score plus an IoU of 1 with its own box.
    expected = torch.tensor([[d.score + 1.0 for d in found]])
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-6)
    assert result.maps.shape == (1, len(found), 64, 64)
    assert torch.isfinite(result.raw).all() and result.raw.abs().amax() > 0
    assert layer.module == {"ssdlite": "backbone.features.0"}.get(name, "backbone.body.layer4")


def test_no_matching_detection_gives_a_zero_map_and_a_warning(
    detectors: dict[str, nn.Module], image: Tensor
) -> None:
    model = detectors["faster_rcnn"]
    found = detect(model, image)[0][0]
    cam = GradCAM(model, task_layer(model))
    far = DetectionScore((0.0, 0.0, 0.5, 0.5), found.label)
    with pytest.warns(UserWarning, match="its score is 0 and its map all zero"):
        result = cam(image, [DetectionScore.of(found), far])
    assert result.scores[0, 1] == 0 and result.maps[0, 1].abs().max() == 0
    assert result.maps[0, 0].max() == 1.0 and torch.isfinite(result.maps).all()


def _peer_raw(model: nn.Module, layer: nn.Module, x: Tensor, targets: list[Any]) -> np.ndarray:
    from pytorch_grad_cam import GradCAM as PeerGradCAM

    peer = PeerGradCAM(model, [layer])
    try:
        peer(input_tensor=x, targets=targets)
        grads = peer.activations_and_grads
        acts, grad = grads.activations[0].numpy(), grads.gradients[0].numpy()
        return np.asarray(np.maximum(peer.get_cam_image(x, layer, targets, acts, grad, False), 0))
    finally:
        peer.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["faster_rcnn", "retinanet"])
def test_detection_agrees_with_pytorch_grad_cam(
    name: str, detectors: dict[str, nn.Module], image: Tensor
) -> None:
    """Raw maps equal pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` at the same layer, for
    detections its matching finds (the best-IoU box has the class asked for)."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    model = detectors[name]
    with torch.no_grad():
        output = model(image)[0]
    layer = task_layer(model)
    checked = 0
    for d in _usable(detect(model, image)[0])[:6]:
        ious = box_iou(torch.tensor([d.box]), output["boxes"])[0]
        if int(output["labels"][ious.argmax()]) != d.label:
            continue  # pytorch-grad-cam scores 0 there (see the test above)
        ours = GradCAM(model, layer)(image, DetectionScore.of(d)).raw[0, 0]
        target = FasterRCNNBoxScoreTarget([d.label], [np.array(d.box)])
        module = resolve_layer(model, layer).module
        theirs = torch.from_numpy(_peer_raw(model, module, image, [target])[0]).float()
        assert ours.abs().max() > 0
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))
        checked += 1
        if checked == 2:
            break
    assert checked == 2


def test_detector_maps_undo_resize_and_padding(detectors: dict[str, nn.Module]) -> None:
    """A 64x80 image stays 64x80 (min_size 64) and is padded to 64x96: the map's last 16
    columns are padding, cut before resizing to the input."""
    model = detectors["faster_rcnn"]
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    raw = torch.arange(6.0).view(1, 1, 2, 3)
    full = F.interpolate(raw, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(detector_maps(model, x, raw), normalize(full[..., :80]))
    square = torch.rand(1, 3, 64, 64)  # no padding: the plain upsampling
    expected = normalize(F.interpolate(raw, size=(64, 64), mode="bilinear", align_corners=False))
    torch.testing.assert_close(detector_maps(model, square, raw), expected)


# Torchvision's segmenters, unchanged


@pytest.fixture(scope="module")
def segmenters() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": 3}
    return {
        "deeplabv3": segmentation.deeplabv3_mobilenet_v3_large(**kwargs).eval(),
        # torchvision's FCN class, on a ResNet-18 (fcn_resnet50 builds it on a dilated ResNet-50).
        "fcn": segmentation.FCN(
            IntermediateLayerGetter(resnet18(), {"layer4": "out"}), FCNHead(512, 3)
        ).eval(),
        "lraspp": segmentation.lraspp_mobilenet_v3_large(**kwargs).eval(),
    }


class _Out(nn.Module):
    """pytorch-grad-cam's documented wrapper: a segmenter's ``["out"]`` as its output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["deeplabv3", "fcn", "lraspp"])
def test_segmenters_agree_with_pytorch_grad_cam(
    name: str, segmenters: dict[str, nn.Module], image: Tensor
) -> None:
    """The class inside a mask, on the unwrapped model: raw maps equal pytorch-grad-cam's
    ``SemanticSegmentationTarget`` on its wrapped model, and the model is untouched."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    model = segmenters[name]
    mask = np.zeros((64, 64), dtype=bool)
    mask[10:40, 20:50] = True
    before = snapshot(model)
    layer = task_layer(model)
    result = GradCAM(model, layer)(image, [SegmentationScore(c, mask) for c in range(3)])
    assert_unchanged(before, model)
    with torch.no_grad():
        expected = (model(image)["out"][0] * torch.from_numpy(mask)).sum(dim=(-2, -1))
    torch.testing.assert_close(result.scores[0], expected, rtol=1e-5, atol=1e-5)
    # Random weights can leave a class without positive evidence: compare a class that has some.
    c = int(result.raw[0].amax(dim=(-2, -1)).argmax())
    ours = result.raw[0, c]
    module = resolve_layer(model, layer).module
    target = SemanticSegmentationTarget(c, mask.astype(np.float32))
    theirs = torch.from_numpy(_peer_raw(_Out(model), module, image, [target])[0]).float()
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_segmentation_without_mask_is_the_predicted_region(
    segmenters: dict[str, nn.Module], image: Tensor
) -> None:
    model = segmenters["fcn"]
    with torch.no_grad():
        out = model(image)["out"]
    winner = int(out.argmax(dim=1).flatten().mode().values)
    region = out.argmax(dim=1)[0] == winner
    cam = GradCAM(model, task_layer(model))
    torch.testing.assert_close(
        cam(image, SegmentationScore(winner)).raw, cam(image, SegmentationScore(winner, region)).raw
    )


def test_wrong_channels_for_a_detector(detectors: dict[str, nn.Module]) -> None:
    model = detectors["retinanet"]
    with pytest.raises(GradCAMError, match="4 channels, but the model takes 3"):
        detect(model, torch.rand(1, 4, 64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert task_layer(model).reshape == "channels-first"


# 3-D segmenters


def _hand_segmenter_3d() -> nn.Module:
    """``A^0 = 2x + 1``, ``A^1 = -x + 3`` (a 1x1x1 conv), then a 1x1x1 head:
    ``z^0 = A^0 - A^1 = 3x - 2``, ``z^1 = A^1``."""
    features, head = nn.Conv3d(1, 2, 1), nn.Conv3d(2, 2, 1, bias=False)
    with torch.no_grad():
        features.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1, 1))
        features.bias.copy_(torch.tensor([1.0, 3.0]))
        head.weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 1.0]]).view(2, 2, 1, 1, 1))
    return nn.Sequential(features, head).eval()


def test_segmentation_score_of_a_volume_by_hand() -> None:
    volume = torch.arange(16.0).view(1, 2, 2, 2, 2)  # class 1: 8 .. 15
    top = torch.zeros(2, 2, 2)
    top[0] = 1
    assert SegmentationScore(1, top)(volume).tolist() == [8 + 9 + 10 + 11]
    assert SegmentationScore(1)({"out": volume}).tolist() == [sum(range(8, 16))]
    per_volume = torch.stack([top, 1 - top])  # (B, D, H, W)
    batch = torch.cat([volume, volume])
    assert SegmentationScore(0, per_volume)(batch).tolist() == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7]
    signal = torch.arange(6.0).view(1, 2, 3)  # (B, C, L): class 1 is 3, 4, 5
    assert SegmentationScore(1, np.array([1, 0, 1]))(signal).tolist() == [8.0]
    with pytest.raises(TargetError, match=r"does not fit the model's \(2, 2, 2\) score maps"):
        SegmentationScore(1, torch.ones(2, 2))(volume)
    with pytest.raises(TargetError, match=r"does not fit the model's \(2, 2, 2\) score maps"):
        SegmentationScore(1, torch.ones(3, 2, 2, 2))(batch)


def test_gradcam_of_a_3d_segmenter_by_hand() -> None:
    """Class 0 over the top slice M (4 of 8 voxels): ``dy/dA^0 = M``, ``dy/dA^1 = -M``, so
    ``alpha = (1/2, -1/2)`` and ``L = ReLU((A^0 - A^1) / 2) = ReLU((3x - 2) / 2)``; the default
    layer is the features (the head's output is the output)."""
    model = _hand_segmenter_3d()
    x = torch.arange(8.0).view(1, 1, 2, 2, 2)
    top = torch.zeros(2, 2, 2)
    top[0] = 1
    before = snapshot(model)
    result = GradCAM(model)(x, SegmentationScore(0, top))
    assert result.layer == "0"
    assert_unchanged(before, model)
    torch.testing.assert_close(result.weights[0, 0], torch.tensor([0.5, -0.5]))
    expected = torch.relu((3 * torch.arange(8.0) - 2) / 2).view(2, 2, 2)
    torch.testing.assert_close(result.raw[0, 0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.scores[0, 0], torch.tensor(-2.0 + 1 + 4 + 7))


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("UNet", "model.2.0"),  # the last up-convolution, before the final conv unit
        ("SegResNet", "act_mod"),  # the decoder's last features, before the 1x1x1 conv
    ],
)
def test_monai_3d_segmenters_with_the_default_layer(name: str, layer: str) -> None:
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    if name == "UNet":
        model = nets.UNet(3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    else:
        model = nets.SegResNet(3, 8, 1, 3, blocks_down=(1, 1, 2), blocks_up=(1, 1))
    model.train()
    before = snapshot(model)
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(16, 16, 16, dtype=torch.bool)
    mask[4:12, 4:12, 4:12] = True
    result = GradCAM(model)(x, [SegmentationScore(1, mask), SegmentationScore(2)])
    assert_unchanged(before, model)
    assert result.layer == layer
    assert result.maps.shape == (2, 2, 16, 16, 16)
    assert torch.isfinite(result.maps).all() and float(result.maps.std()) > 0
    with torch.no_grad():
        model.eval()
        expected = (model(x)[:, 1] * mask).sum(dim=(1, 2, 3))
        model.train()
    torch.testing.assert_close(result.scores[:, 0], expected, rtol=1e-5, atol=1e-4)
    # The same layer given by name gives the same maps.
    torch.testing.assert_close(
        GradCAM(model, layer)(x, SegmentationScore(1, mask)).raw, result.raw[:, :1]
    )
