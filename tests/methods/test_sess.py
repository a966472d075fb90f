"""SESS: hand-worked fusion of two patches (mean, max, theta, pre-filter, raw scores), the
sliding windows and scales, OpenCV's blur, agreement with pytorch-grad-cam's ``SESS``, options."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
from helpers.models import SmallCNN
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

import gradcam
from gradcam import SESS, GradCAMError
from gradcam.methods.sess import gaussian_blur, sess_scales, window_starts


class MeanNet(nn.Module):
    """``features`` (identity) -> GAP -> fc ``[[1], [-1]]``: logits ``(m, -m)`` for the input's
    mean ``m``, so a patch's class-0 probability is ``sigmoid(2 m)``; Grad-CAM of class 0 at
    ``features`` is the patch itself over its size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


# Two 2 x 2 windows, no resizing: patch 0 = [[1, 2], [3, 4]] (mean 2.5), patch 1 =
# [[5, 6], [7, 8]] (mean 6.5); each one's Grad-CAM scaled is [[0, 1/3], [2/3, 1]].
X = torch.tensor([[[[1.0, 2.0, 5.0, 6.0], [3.0, 4.0, 7.0, 8.0]]]])
HAND = {"num_scales": 1, "window_size": 2, "step_size": 2, "smooth": False}


def _fused(w0: float, w1: float) -> Tensor:
    return torch.tensor([[0.0, w0 / 3, 0.0, w1 / 3], [2 * w0 / 3, w0, 2 * w1 / 3, w1]])


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_two_patches_weighted_by_probability() -> None:
    w0 = _sigmoid(5.0) / _sigmoid(13.0)
    result = SESS(MeanNet(), "features", **HAND)(X, [0])
    torch.testing.assert_close(result.raw[0, 0], _fused(w0, 1.0))
    torch.testing.assert_close(result.maps[0, 0], _fused(w0, 1.0))  # its maximum is 1
    # The score of the whole image, and its class.
    assert result.classes.tolist() == [[0]] and float(result.scores[0, 0]) == 4.5
    # Without the softmax: weighted by the score itself, 2.5 / 6.5.
    raw_scores = SESS(MeanNet(), "features", use_softmax_scores=False, **HAND)(X, [0])
    torch.testing.assert_close(raw_scores.raw[0, 0], _fused(2.5 / 6.5, 1.0))


def test_theta_max_and_pre_filter() -> None:
    w0 = _sigmoid(5.0) / _sigmoid(13.0)
    # theta = 0.5: only values above it count (w0 / 3 and 1 / 3 do not).
    found = SESS(MeanNet(), "features", theta=0.5, **HAND)(X, [0]).raw[0, 0]
    expected = _fused(w0, 1.0)
    torch.testing.assert_close(found, torch.where(expected > 0.5, expected, 0.0))
    # Max fusion of windows that do not overlap: the same map.
    found = SESS(MeanNet(), "features", pool="max", **HAND)(X, [0]).raw[0, 0]
    torch.testing.assert_close(found, _fused(w0, 1.0))
    # Pre-filtering half of the patches drops the lower-scoring one.
    found = SESS(MeanNet(), "features", pre_filter_ratio=0.5, **HAND)(X, [0]).raw[0, 0]
    torch.testing.assert_close(found, _fused(0.0, 1.0))


def test_windows_scales_and_blur() -> None:
    assert window_starts(8, 4, 4) == [0, 4] and window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(3, 4, 4) == [0]
    assert sess_scales(224, 12, 2 / 7) == [224 + 64 * i for i in range(12)]
    maps = torch.rand(2, 7, 13, generator=torch.Generator().manual_seed(0))
    for m in maps:
        expected = cv2.GaussianBlur(m.numpy(), (11, 11), 5.0, 0)
        torch.testing.assert_close(gaussian_blur(m), torch.from_numpy(expected))


CONFIGS: list[dict[str, Any]] = [
    {"num_scales": 3},
    {"window_size": 16, "step_size": 8, "num_scales": 2, "pre_filter_ratio": 0.3},
    {"scales": [20, 26], "pool": "max", "smooth": False, "use_softmax_scores": False},
    {"num_scales": 2, "theta": 0.2, "batch_size": 3},
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shape", [(20, 20), (20, 28)])
def test_agrees_with_pytorch_grad_cam(config: dict[str, Any], shape: tuple[int, int]) -> None:
    model = SmallCNN(seed=2).eval()
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(4))
    ours = SESS(model, "features.6", **{**config, "scales": tuple(config.get("scales", ()))})
    found = ours(x, torch.tensor([[1], [3]])).maps[:, 0]
    with pgc.SESS(model, [model.features[6]], **config) as peer:
        theirs = peer(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(3)])
    torch.testing.assert_close(found, torch.from_numpy(np.asarray(theirs)), rtol=0, atol=1e-4)


def test_per_image_targets_explain_their_own_image() -> None:
    """A list of per-image targets (pytorch-grad-cam's) gives each image its own target, as
    the class ids do (image 1 once got image 0's)."""
    model = SmallCNN(seed=2).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    sess = SESS(model, "features.6", num_scales=2, window_size=12, step_size=8)
    by_ids = sess(x, torch.tensor([[1], [3]])).raw
    by_callables = sess(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(3)]).raw
    torch.testing.assert_close(by_callables, by_ids)


def test_targets_and_the_top_class() -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    sess = SESS(model, num_scales=2)
    top = sess(x)
    assert top.classes.tolist() == [[int(model(x).argmax())]]
    both = sess(x, gradcam.TopK(2))
    torch.testing.assert_close(both.raw[:, :1], top.raw)
    alone = sess(x, both.classes[:, 1:])
    torch.testing.assert_close(alone.raw[:, 0], both.raw[:, 1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool": "median"}, "pool must be one of mean, max"),
        ({"pre_filter_ratio": 1.0}, r"pre_filter_ratio must be in \[0, 1\)"),
        ({"num_scales": 0}, "num_scales must be a positive integer"),
        ({"window_size": 0}, "window_size must be a positive integer"),
        ({"scales": (4, -1)}, "scales must be a tuple of positive integers"),
        ({"scale_step_ratio": 0.0}, "scale_step_ratio must be positive"),
        ({"theta": math.nan}, "theta must be a finite number"),
        ({"base": "guided-backprop"}, "base must be a heatmap method"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        gradcam.create_method("sess", SmallCNN(), "features", **options)


def test_a_scale_below_the_window_is_refused() -> None:
    sess = SESS(SmallCNN(), "features", scales=(8, 16), window_size=12)
    with pytest.raises(GradCAMError, match="every scale must be at least the window 12; got 8"):
        sess(torch.randn(1, 3, 16, 16), [0])


def test_registry_entry() -> None:
    spec = gradcam.method_spec("sess")
    assert spec.cls is SESS and "Tang et al. 2022" in spec.citation
    assert spec.needs.many_passes and spec.option("scales").parse("224,288") == (224, 288)
