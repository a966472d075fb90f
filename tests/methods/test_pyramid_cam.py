"""Grad-CAM at a feature pyramid (a layer whose output is a dict or list of maps): exact
values on a hand-weighted two-level model, the levels' own gradients from one backward pass,
torchvision's Faster R-CNN explained at its FPN (``layer="backbone"``), Eigen-CAM against
pytorch-grad-cam's FPN ``reshape_transform``, and the refusals."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.photos import photo
from helpers.state import assert_unchanged, snapshot
from torch import Tensor, nn
from torchvision.models import detection
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from gradcam import GradCAM, Layer, LayerError, TopK
from gradcam.cli import main
from gradcam.engine import compute_gradients
from gradcam.layers import resolve_layer
from gradcam.methods import create_method
from gradcam.reshapes import concat_levels, pyramid_levels
from gradcam.tasks import Detection, DetectionScore, detect

# The hand-weighted model


class Levels(nn.Module):
    """A 1x1 conv at full resolution (``fine``: A_f = x) and a 2x2, stride-2 conv of weights
    0.5 (``coarse``: A_c = twice each 2x2 block's mean), returned as an ordered dict."""

    def __init__(self) -> None:
        super().__init__()
        self.fine = nn.Conv2d(1, 1, 1, bias=False)
        self.coarse = nn.Conv2d(1, 1, 2, stride=2, bias=False)
        with torch.no_grad():
            self.fine.weight.fill_(1.0)
            self.coarse.weight.fill_(0.5)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return OrderedDict(fine=self.fine(x), coarse=self.coarse(x))


class TwoLevel(nn.Module):
    """``y = W [GAP(A_f), GAP(A_c)]``: each level's gradient is uniform, W[c, l] / (h_l w_l)."""

    def __init__(self, weight: list[list[float]]) -> None:
        super().__init__()
        self.levels = Levels()
        self.head = nn.Linear(2, len(weight), bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(weight))

    def forward(self, x: Tensor) -> Tensor:
        found = self.levels(x)
        pooled = torch.stack(
            [found["fine"].mean(dim=(1, 2, 3)), found["coarse"].mean(dim=(1, 2, 3))]
        )
        return self.head(pooled.T)


X = torch.arange(16.0).view(1, 1, 4, 4)


def test_two_levels_by_hand() -> None:
    # A_f = x = [[0..3], [4..7], [8..11], [12..15]]; A_c = [[5, 9], [21, 25]] (blocks summed / 2).
    # alpha_f^c = W[c, 0] / 16, alpha_c^c = W[c, 1] / 4:
    #   class 0: W = (1.6, 0.8) -> (0.1, 0.2); class 1: W = (-3.2, 0.4) -> (-0.2, 0.1).
    net = TwoLevel([[1.6, 0.8], [-3.2, 0.4]])
    before = snapshot(net)
    result = GradCAM(net, "levels")(X, [0, 1])
    assert_unchanged(before, net)
    torch.testing.assert_close(result.weights, torch.tensor([[[0.1, 0.2], [-0.2, 0.1]]]))
    # A_c upsampled bilinearly (align_corners=False) to 4x4: along a row [a, b] becomes
    # [a, .75a + .25b, .25a + .75b, b], and so along a column:
    # [[5, 6, 8, 9], [9, 10, 12, 13], [17, 18, 20, 21], [21, 22, 24, 25]].
    # Class 0: 0.1 A_f + 0.2 up(A_c), all positive.
    class0 = torch.tensor(
        [[1.0, 1.3, 1.8, 2.1], [2.2, 2.5, 3.0, 3.3], [4.2, 4.5, 5.0, 5.3], [5.4, 5.7, 6.2, 6.5]]
    )
    # Class 1: -0.2 A_f + 0.1 up(A_c) = [[.5, .4, .4, .3], [.1, 0, 0, -.1], [.1, 0, 0, -.1],
    # [-.3, -.4, -.4, -.5]]: the sum is rectified, not each level (ReLU of the fine level alone
    # is all zero, and the coarse level alone is positive everywhere).
    class1 = torch.tensor(
        [[0.5, 0.4, 0.4, 0.3], [0.1, 0.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    torch.testing.assert_close(result.raw[0], torch.stack([class0, class1]), atol=1e-6, rtol=0)
    assert result.layer == "levels (pyramid: fine 1x4x4, coarse 1x2x2)"
    assert result.maps.shape == (1, 2, 4, 4)


def test_counterfactual_negates_every_level() -> None:
    # Class 1's sum before the ReLU is [[.5, .4, .4, .3], [.1, 0, 0, -.1], [.1, 0, 0, -.1],
    # [-.3, -.4, -.4, -.5]] (above); negated gradients negate it before the ReLU.
    net = TwoLevel([[1.6, 0.8], [-3.2, 0.4]])
    result = create_method("counterfactual", net, "levels")(X, 1)
    expected = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.1], [0.0, 0.0, 0.0, 0.1], [0.3, 0.4, 0.4, 0.5]]
    )
    torch.testing.assert_close(result.raw[0, 0], expected, atol=1e-6, rtol=0)


def test_guided_gradcam_shares_the_pyramid_pass() -> None:
    """With input gradients the graph is kept whole; the Grad-CAM factor is the pyramid's."""
    net = TwoLevel([[1.6, 0.8], [-3.2, 0.4]])
    before = snapshot(net)
    guided = create_method("guided-gradcam", net, "levels")(X, [0, 1])
    assert_unchanged(before, net)
    torch.testing.assert_close(guided.cam.raw, GradCAM(net, "levels")(X, [0, 1]).raw)
    assert guided.maps.shape == (1, 2, 1, 4, 4) and torch.isfinite(guided.maps).all()


def test_levels_get_their_own_gradients_in_one_pass() -> None:
    net = TwoLevel([[1.6, 0.8], [-3.2, 0.4]])
    grads = compute_gradients(net, X, [0, 1], layer=resolve_layer(net, "levels"))
    assert grads.activations is None and grads.gradients is None
    fine, coarse = grads.levels
    assert (fine.name, coarse.name) == ("fine", "coarse")
    torch.testing.assert_close(fine.activations, X)
    torch.testing.assert_close(coarse.activations, torch.tensor([[[[5.0, 9.0], [21.0, 25.0]]]]))
    # dy^c / dA_l is uniform, W[c, l] / (h_l w_l), for both targets at once.
    torch.testing.assert_close(
        fine.gradients[0, :, 0], torch.tensor([0.1, -0.2])[:, None, None].expand(2, 4, 4)
    )
    torch.testing.assert_close(
        coarse.gradients[0, :, 0], torch.tensor([0.2, 0.1])[:, None, None].expand(2, 2, 2)
    )


def test_explicit_pyramid_reshape_and_list_outputs() -> None:
    class ListLevels(Levels):
        def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
            return list(super().forward(x).values())

    class ListNet(TwoLevel):
        def forward(self, x: Tensor) -> Tensor:
            fine, coarse = self.levels(x)
            return self.head(torch.stack([fine.mean(dim=(1, 2, 3)), coarse.mean(dim=(1, 2, 3))]).T)

    net = ListNet([[1.6, 0.8]])
    net.levels = ListLevels()
    ours = GradCAM(net, Layer("levels", reshape="pyramid"))(X, 0)
    assert ours.layer == "levels (pyramid: 0 1x4x4, 1 1x2x2)"
    expected = GradCAM(TwoLevel([[1.6, 0.8]]), "levels")(X, 0)
    torch.testing.assert_close(ours.raw, expected.raw)


@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"])
def test_one_level_pyramid_is_the_level_itself(name: str) -> None:
    """A variant's weights are taken per level: a pyramid of one level gives the map of that
    level's own module."""

    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"only": self.conv(x)}

    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("pyr", One())
    net.add_module("head", _DictHead(4, 3))
    x = torch.randn(2, 3, 8, 8)
    pyramid = create_method(name, net, "pyr")(x, TopK(2))
    single = create_method(name, net, "pyr.conv")(x, TopK(2))
    torch.testing.assert_close(pyramid.raw, single.raw)
    assert pyramid.raw.abs().amax() > 0


class _DictHead(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, classes)

    def forward(self, found: dict[str, Tensor]) -> Tensor:
        return self.fc(torch.relu(found["only"]).amax(dim=(2, 3)))


def test_pyramid_sum_is_grad_cam_on_concatenated_levels() -> None:
    """Upsampling is linear and the weights are per channel, so the per-level sum is the
    weighted sum over the levels upsampled and concatenated, with the levels' own alphas."""
    net = TwoLevel([[1.6, -0.8]])
    result = GradCAM(net, "levels", relu=False)(X, 0)
    with torch.no_grad():
        levels = [maps for _, maps in pyramid_levels("levels", net.levels(X))]
    assert result.weights is not None
    concat = torch.einsum("bkc,bchw->bkhw", result.weights, concat_levels(levels))
    torch.testing.assert_close(result.raw, concat)


# Bad inputs


class _Broken(nn.Module):
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"maps": x, "vector": x.mean(dim=(2, 3))}


class _BrokenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.pyr = _Broken()

    def forward(self, x: Tensor) -> Tensor:
        found = self.pyr(self.conv(x))
        return found["vector"] + found["maps"].mean(dim=(2, 3))


def test_non_4d_level_names_the_shape() -> None:
    with pytest.raises(LayerError, match=r"level 'vector' of layer 'pyr'.*\(1, 2\)"):
        GradCAM(_BrokenNet(), "pyr")(X, 0)


def test_pyramid_refusals_name_the_alternative() -> None:
    net = TwoLevel([[1.6, 0.8]])
    with pytest.raises(LayerError, match=r"feature pyramid.*Grad-CAM"):
        create_method("ablation-cam", net, "levels")(X, 0)
    with pytest.raises(LayerError, match=r"feature pyramid.*Grad-CAM"):
        create_method("eigen-gradcam", net, "levels")(X, 0)
    with pytest.raises(LayerError, match=r"reshape 'pyramid', 'auto' or 'channels-first'"):
        GradCAM(net, Layer("levels", reshape="channels-last"))(X, 0)
    with pytest.raises(LayerError, match="not a pyramid"):
        GradCAM(net, Layer("levels.fine", reshape="pyramid"))(X, 0)
    with pytest.raises(LayerError, match="eigen_smooth"):
        GradCAM(net, "levels", eigen_smooth=True)(X, 0)
    with pytest.raises(LayerError, match="gradient-free"):
        GradCAM(net, Layer("levels", reshape=concat_from_dict))(X, 0)


def concat_from_dict(found: dict[str, Tensor]) -> Tensor:
    return concat_levels(list(found.values()))


# Faster R-CNN at its feature pyramid


@pytest.fixture(scope="module")
def faster_rcnn() -> nn.Module:
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    return detection.FasterRCNN(
        backbone, num_classes=3, box_score_thresh=0.0, min_size=64, max_size=96
    ).eval()


@pytest.fixture(scope="module")
def image() -> Tensor:
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _detections(model: nn.Module, image: Tensor, count: int = 2) -> list[Detection]:
    found = [d for d in detect(model, image)[0] if d.box[2] > d.box[0] and d.box[3] > d.box[1]]
    assert len(found) >= count
    return found[:count]


def test_faster_rcnn_at_its_pyramid(faster_rcnn: nn.Module, image: Tensor) -> None:
    found = _detections(faster_rcnn, image)
    targets = [DetectionScore.of(d) for d in found]
    faster_rcnn.backbone.body.layer1.train()  # a mixed state, which the call must restore
    try:
        before = snapshot(faster_rcnn)
        result = GradCAM(faster_rcnn, "backbone")(image, targets)
        assert_unchanged(before, faster_rcnn)
    finally:
        faster_rcnn.eval()
    # The five FPN levels, summed at the finest (stride 4 of the padded 64x64 image).
    assert result.layer == (
        "backbone (pyramid: 0 256x16x16, 1 256x8x8, 2 256x4x4, 3 256x2x2, pool 256x1x1)"
    )
    assert result.raw.shape == (1, 2, 16, 16) and result.weights.shape == (1, 2, 5 * 256)
    assert torch.isfinite(result.raw).all()
    for k in range(2):
        assert result.raw[0, k].amax() > result.raw[0, k].amin()  # not constant
    # Each detection is found again: its score plus an IoU of 1 with its own box.
    expected = torch.tensor([[d.score + 1.0 for d in found]])
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-6)
    # backbone.fpn outputs the same dict: the same maps.
    fpn = GradCAM(faster_rcnn, "backbone.fpn")(image, targets)
    torch.testing.assert_close(fpn.raw, result.raw)


@pytest.mark.parametrize("family", [detection.RetinaNet, detection.FCOS])
def test_one_stage_detectors_at_their_pyramid(family: type[nn.Module], image: Tensor) -> None:
    """RetinaNet and FCOS: levels '0' to '2' of layers 2 to 4, then P6 and P7."""
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet18",
        weights=None,
        trainable_layers=5,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    model = family(backbone, num_classes=3, score_thresh=0.0, min_size=64, max_size=96).eval()
    found = _detections(model, image)
    before = snapshot(model)
    result = GradCAM(model, "backbone")(image, [DetectionScore.of(d) for d in found])
    assert_unchanged(before, model)
    assert result.layer == (
        "backbone (pyramid: 0 256x8x8, 1 256x4x4, 2 256x2x2, p6 256x1x1, p7 256x1x1)"
    )
    expected = torch.tensor([[d.score + 1.0 for d in found]])
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(result.raw).all()
    assert all(result.raw[0, k].amax() > result.raw[0, k].amin() for k in range(2))


def test_eigen_cam_agrees_with_pytorch_grad_cam_fpn_transform(
    faster_rcnn: nn.Module, image: Tensor
) -> None:
    """pytorch-grad-cam's detection tutorial: EigenCAM at ``model.backbone`` with a
    ``reshape_transform`` that resizes every level to one size and concatenates them. Ours
    reads the pyramid so by default (at the finest level's size) and takes the tutorial's own
    transform (absolute values, at the 'pool' size) as a reshape callable."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import EigenCAM as PeerEigenCAM

    def finest(found: dict[str, Tensor]) -> Tensor:
        size = found["0"].shape[-2:]
        return torch.cat([F.interpolate(v, size, mode="bilinear") for v in found.values()], 1)

    def tutorial(found: dict[str, Tensor]) -> Tensor:
        size = found["pool"].shape[-2:]
        return torch.cat(
            [F.interpolate(torch.abs(v), size, mode="bilinear") for v in found.values()], 1
        )

    targets = [DetectionScore.of(d) for d in _detections(faster_rcnn, image, 1)]
    for transform, layer in ((finest, "backbone"), (tutorial, Layer("backbone", tutorial))):
        peer = PeerEigenCAM(faster_rcnn, [faster_rcnn.backbone], reshape_transform=transform)
        try:
            with torch.no_grad():
                peer.activations_and_grads(image)
            acts = peer.activations_and_grads.activations[0].numpy()
        finally:
            peer.activations_and_grads.release()
        theirs = torch.from_numpy(peer.get_cam_image(image, None, None, acts, None, False))
        ours = create_method("eigen-cam", faster_rcnn, layer, relu=False)(image, targets).raw[:, 0]
        sign = 1.0 if float((ours * theirs).sum()) >= 0 else -1.0  # the peer keeps LAPACK's sign
        scale = float(theirs.abs().max())
        torch.testing.assert_close(ours, sign * theirs, rtol=1e-4, atol=1e-4 * scale)


def test_cli_explains_a_detector_at_its_pyramid(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "cat.png"
    photo("chelsea.png").resize((96, 64)).save(path)
    out = tmp_path / "out"
    code = main(
        [
            "explain", str(path), "--task", "detection", "--model", "fasterrcnn_resnet50_fpn",
            "--layer", "backbone", "--min-score", "0", "--top-k", "1", "--weights", "random",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "cat" / "summary.json").read_text())
    assert summary["layer"] == "backbone" and len(summary["explained"]) == 1
