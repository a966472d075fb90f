"""RandomCAM: the map of hand-set activations, reproducibility of the seeded weights, their
distribution against pytorch-grad-cam's, agreement with its map on the same weights, options."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam
import torch
from helpers.activation_peers import FeatureNet, features
from helpers.models import SmallCNN
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import gradcam
from gradcam import GradCAMError, RandomCAM, TopK
from gradcam.methods.random_cam import random_weights
from gradcam.methods.refine_cam import scaled_maps


def test_map_is_the_rectified_random_sum() -> None:
    # A^1 = [1, 0, 2], A^2 = [0, 1, 2]: L = ReLU([w1, w2, 2 w1 + 2 w2]).
    net = FeatureNet([[1.0, 0.0], [0.0, 1.0]])
    x = features([1.0, 0.0, 2.0], [0.0, 1.0, 2.0])
    result = RandomCAM(net, "features", seed=3)(x, [0, 1])
    w = random_weights((1, 2, 2), seed=3)
    assert torch.equal(result.weights, w)
    for k in range(2):
        w1, w2 = float(w[0, k, 0]), float(w[0, k, 1])
        expected = torch.tensor([[w1, w2, 2 * w1 + 2 * w2]]).clamp(min=0)
        torch.testing.assert_close(result.raw[0, k], expected)


def test_seeded_calls_repeat_and_seeds_differ() -> None:
    model = SmallCNN(seed=1).eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    first = RandomCAM(model, seed=5)(x, TopK(2))
    assert torch.equal(first.raw, RandomCAM(model, seed=5)(x, TopK(2)).raw)
    assert not torch.equal(first.weights, RandomCAM(model, seed=6)(x, TopK(2)).weights)
    unseeded = RandomCAM(model, seed=None)
    assert not torch.equal(unseeded(x, TopK(2)).weights, unseeded(x, TopK(2)).weights)
    # One draw per image, target and channel.
    assert first.weights.shape == (2, 2, 16)


def test_weights_agree_in_distribution_with_pytorch_grad_cam() -> None:
    ours = random_weights((64, 1, 256), seed=0).flatten().numpy()
    theirs = np.random.default_rng(0).uniform(-1, 1, size=ours.size)
    assert ours.min() >= -1 and ours.max() < 1
    assert abs(ours.mean()) < 0.02 and abs(ours.var() - 1 / 3) < 0.01  # U(-1, 1): 0, 1/3
    # Two-sample Kolmogorov-Smirnov distance, far below its 1e-3 critical value 0.017.
    grid = np.linspace(-1, 1, 201)
    gap = np.abs(np.searchsorted(np.sort(ours), grid) - np.searchsorted(np.sort(theirs), grid))
    assert gap.max() / ours.size < 0.017


def test_agrees_with_pytorch_grad_cam_on_the_same_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = SmallCNN(seed=2).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ours = RandomCAM(model, "features.6", seed=9)(x, torch.tensor([[1], [3]]))
    drawn = ours.weights[:, 0].double().numpy()
    monkeypatch.setattr(np.random, "uniform", lambda *_a, **_k: drawn)
    module = model.features[6]
    with pytorch_grad_cam.RandomCAM(model, [module]) as cam:
        theirs = cam(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(3)])
    # pytorch-grad-cam scales each map at layer resolution, then resizes it.
    torch.testing.assert_close(
        scaled_maps(ours.raw[:, 0], (16, 16)), torch.from_numpy(theirs), atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [({"seed": 1.5}, "seed must be an integer"), ({"seed": True}, "seed must be an integer")],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        gradcam.create_method("random-cam", SmallCNN(), "features", **options)


def test_registry_entry() -> None:
    spec = gradcam.method_spec("random-cam")
    assert spec.cls is RandomCAM and "Adebayo" in spec.citation
    assert spec.option("seed").parse("none") is None and spec.option("seed").parse("4") == 4
    assert gradcam.list_methods().index("random-cam") > gradcam.list_methods().index("shapley-cam")
