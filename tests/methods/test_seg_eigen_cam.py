"""Seg-Eigen-CAM: hand-worked projections (the absolute gradient, eq. 13's sign), agreement with
pytorch-grad-cam's ``SegEigenCAM``, the shared pass, options."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.activation_peers import (
    CASES,
    FeatureNet,
    assert_close_relative,
    features,
    peer_model,
    peer_pass,
    peer_raw,
)
from helpers.models import SmallCNN
from pytorch_grad_cam import SegEigenCAM as PeerSegEigenCAM

import gradcam
from gradcam import GradCAMError, SegEigenCAM, TopK

ROOT2 = math.sqrt(2)


def test_absolute_gradient_weighting() -> None:
    # y = (-1 mean A^1 + 0.5 mean A^2) over 3 positions: |g| = (1/3, 1/6), so both channels of
    # |g| A are a = (1/3, 2/3, 2); centred (-2/3, -1/3, 1), projected on (1, 1)/sqrt(2).
    net = FeatureNet([[-1.0, 0.5]])
    x = features([1.0, 2.0, 6.0], [2.0, 4.0, 12.0])
    signed = SegEigenCAM(net, "features", relu=False)(x, [0]).raw[0, 0]
    torch.testing.assert_close(signed, ROOT2 * torch.tensor([[-2 / 3, -1 / 3, 1.0]]))
    rectified = SegEigenCAM(net, "features")(x, [0]).raw[0, 0]
    torch.testing.assert_close(rectified, torch.tensor([[0.0, 0.0, ROOT2]]))


def test_sign_correction_makes_the_largest_entry_positive() -> None:
    # |g| A = (0, 0, -1) on one channel: centred (1/3, 1/3, -2/3); eq. 13 flips it.
    net = FeatureNet([[1.0, 1.0]])
    x = features([0.0, 0.0, -3.0], [0.0, 0.0, 0.0])
    signed = SegEigenCAM(net, "features", relu=False)(x, [0]).raw[0, 0]
    torch.testing.assert_close(signed, torch.tensor([[-1 / 3, -1 / 3, 2 / 3]]))
    # "activation": positively correlated with sum_k |g| A^k = (0, 0, -1): not flipped.
    other = SegEigenCAM(net, "features", relu=False, sign="activation")(x, [0]).raw[0, 0]
    torch.testing.assert_close(other, torch.tensor([[1 / 3, 1 / 3, -2 / 3]]))


@pytest.mark.parametrize(("name", "layer", "side"), [c for c in CASES if c[0] != "vgg16"])
def test_agrees_with_pytorch_grad_cam(name: str, layer: str, side: int) -> None:
    model = peer_model(name)
    x, _, _, class_id = peer_pass(name)
    theirs = peer_raw(PeerSegEigenCAM, name)  # its eq. 13 sign, before its ReLU
    ours = SegEigenCAM(model, layer, relu=False)(x, [class_id]).raw[:, 0]
    assert_close_relative(ours, theirs)


def test_shares_the_gradcam_pass() -> None:
    small = SmallCNN(seed=3).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    found = gradcam.explain_methods(["gradcam", "seg-eigen-cam"], small, x, TopK(2))
    torch.testing.assert_close(found["seg-eigen-cam"].raw, SegEigenCAM(small)(x, TopK(2)).raw)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"sign": "max"}, "sign must be one of"), ({"gradient_rule": "nope"}, "gradient_rule")],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        gradcam.create_method("seg-eigen-cam", SmallCNN(), "features", **options)


def test_registry_entry() -> None:
    spec = gradcam.method_spec("seg-eigen-cam")
    assert spec.cls is SegEigenCAM and "Chung and Ying 2025" in spec.citation
    assert spec.needs.layer_gradients and "eq. 13" in spec.option("sign").help
