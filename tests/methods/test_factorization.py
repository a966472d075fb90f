"""Deep Feature Factorization: hand-worked values, pytorch-grad-cam agreement, targets, model
state, options."""

from __future__ import annotations

import pytest
import torch
from helpers.activation_peers import (
    CASES,
    FeatureNet,
    assert_close_relative,
    features,
    peer_model,
    peer_pass,
)
from helpers.models import SmallCNN, TinyGatedNet, tiny_input
from helpers.state import assert_unchanged, snapshot
from pytorch_grad_cam.feature_factorization.deep_feature_factorization import dff as peer_dff

import gradcam
from gradcam import ConceptResult, DeepFeatureFactorization, GradCAMError, TargetError, TopK
from gradcam.maps import normalize
from gradcam.methods.factorization import factorize_features, nmf

CLOSE = {"rtol": 1e-3, "atol": 1e-3}  # the factorization stops at a tolerance


def test_rank_one_features() -> None:
    # A^0 = [0, 1, 2, 3], A^1 = [0, 2, 4, 6] = (1, 2) x [0, 1, 2, 3], exactly one non-negative
    # concept: W ~ (1, 2), H ~ [0, 1, 2, 3] (up to a scale the contributions do not see).
    # Head W = [[1, 1], [-1, 0]], GAP(A) = (1.5, 3): y^0 = 4.5, y^1 = -1.5, and the one
    # concept's contributions (w_c . W) mean(H) are all of y: 4.5 and -1.5.
    x = features([0, 1, 2, 3], [0, 2, 4, 6], width=2)
    net = FeatureNet([[1.0, 1.0], [-1.0, 0.0]])
    result = DeepFeatureFactorization(net, "features", n_concepts=1)(x, [0, 1])
    assert isinstance(result, ConceptResult) and result.weights is None
    torch.testing.assert_close(result.scores, torch.tensor([[4.5, -1.5]]))
    torch.testing.assert_close(result.contributions, torch.tensor([[[4.5], [-1.5]]]), **CLOSE)
    assert result.chosen.tolist() == [[0, 0]]
    shape = torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]])
    torch.testing.assert_close(normalize(result.raw[0]), torch.stack([shape, shape]), **CLOSE)
    torch.testing.assert_close(result.maps[0, 0], result.maps[0, 1])
    # The embedding points along (1, 2); the head scores it (3, -1) times its length.
    embedding = result.embeddings[0]
    torch.testing.assert_close(embedding / embedding[0], torch.tensor([1.0, 2.0]), **CLOSE)
    ratio = result.concept_scores[0] / result.concept_scores[0, 0]
    torch.testing.assert_close(ratio, torch.tensor([1.0, -1 / 3]), **CLOSE)


def test_each_target_gets_its_concept() -> None:
    # A^0 = [2, 1, 0, 0], A^1 = [0, 0, 1, 3]: two concepts with disjoint support, one per
    # channel. Head W = [[1, 2], [3, -1]], channel means 0.75 and 1: class 0 gets
    # contributions 0.75 (channel 0) and 2 (channel 1), so the channel-1 map [0, 0, 1, 3];
    # class 1 gets 2.25 and -1, so the channel-0 map [2, 1, 0, 0]. y = (2.75, 1.25).
    x = features([2, 1, 0, 0], [0, 0, 1, 3], width=2)
    net = FeatureNet([[1.0, 2.0], [3.0, -1.0]])
    result = DeepFeatureFactorization(net, "features", n_concepts=2)(x, TopK(2))
    assert result.classes.tolist() == [[0, 1]]
    torch.testing.assert_close(result.scores, torch.tensor([[2.75, 1.25]]))
    by_size = result.contributions.sort(dim=2).values
    torch.testing.assert_close(by_size, torch.tensor([[[0.75, 2.0], [-1.0, 2.25]]]), **CLOSE)
    torch.testing.assert_close(result.contributions.sum(dim=2), result.scores, **CLOSE)
    torch.testing.assert_close(result.maps[0, 0], torch.tensor([[0.0, 0.0], [1 / 3, 1.0]]), **CLOSE)
    torch.testing.assert_close(result.maps[0, 1], torch.tensor([[1.0, 0.5], [0.0, 0.0]]), **CLOSE)
    assert result.chosen[0, 0] != result.chosen[0, 1]
    assert result.concepts.shape == (1, 2, 2, 2) and result.embeddings.shape == (2, 2)


def test_nmf_matches_a_known_factorization() -> None:
    w = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    h = torch.tensor([[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 1.0, 2.0]])
    found_w, found_h = nmf(w @ h, 2, max_iter=1000, tol=1e-8)
    assert bool((found_w >= 0).all() and (found_h >= 0).all())
    torch.testing.assert_close(found_w @ found_h, w @ h, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("name", "layer", "side"), CASES)
def test_agrees_with_pytorch_grad_cam(name: str, layer: str, side: int) -> None:
    x, activations, _, class_id = peer_pass(name)
    # The peer's dff: the same NMF (scikit-learn's, random start seed 0) of the same matrix.
    concepts, explanations = peer_dff(activations.copy(), n_components=5)
    found = factorize_features(torch.from_numpy(activations), 5)
    assert_close_relative(found.maps, torch.from_numpy(explanations).float())
    assert_close_relative(found.embeddings, torch.from_numpy(concepts.T.copy()).float())
    model = peer_model(name)
    if name == "vgg16":  # its classifier does not read the global average of features.29
        with pytest.raises(GradCAMError, match="linear head on the global average"):
            DeepFeatureFactorization(model, layer)(x, [class_id])
        return
    result = DeepFeatureFactorization(model, layer)(x, [class_id])
    assert_close_relative(result.concepts, torch.from_numpy(explanations).float())
    # The peer labels concepts with computation_on_concepts, the head, on the embeddings.
    head = model.fc if name == "resnet50" else model._fc
    with torch.no_grad():
        theirs = head(torch.from_numpy(concepts.T.copy()).float())
    assert_close_relative(result.concept_scores, theirs)


def test_top_k_in_one_call_and_a_batch_shares_its_concepts() -> None:
    model = SmallCNN(seed=3).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    method = DeepFeatureFactorization(model, "features", n_concepts=3)
    together = method(x, TopK(3))
    assert together.raw.shape == (2, 3, 8, 8) and together.maps.shape == (2, 3, 16, 16)
    assert together.concepts.shape == (2, 3, 8, 8) and together.contributions.shape == (2, 3, 3)
    for k in range(3):
        alone = method(x, together.classes[:, k : k + 1])
        torch.testing.assert_close(alone.raw[:, 0], together.raw[:, k])
        torch.testing.assert_close(alone.contributions[:, 0], together.contributions[:, k])
    # The concepts are one factorization of both images' features.
    with torch.no_grad():
        features_of_batch = model.features(x)
    shared = factorize_features(features_of_batch, 3)
    torch.testing.assert_close(together.concepts, shared.maps, rtol=1e-4, atol=1e-5)
    picked = shared.maps.gather(1, together.chosen[:, :, None, None].expand(-1, -1, 8, 8))
    torch.testing.assert_close(together.raw, picked, rtol=1e-4, atol=1e-5)


def test_model_and_input_untouched() -> None:
    model = SmallCNN(seed=4)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    model.train()
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    x_before = x.detach().clone()
    gradcam.create_method("dff", model)(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None and torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_concepts": 0}, "n_concepts must be a positive integer"),
        ({"max_iter": 2.5}, "max_iter must be a positive integer"),
        ({"tol": -1.0}, "tol must be a non-negative number"),
        ({"head": "features"}, "is not an nn.Linear"),
        ({"head": "fcc"}, "did you mean fc"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        gradcam.create_method("dff", SmallCNN(), "features", **options)


def test_bad_targets_and_heads() -> None:
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(TargetError, match="class ids only"):
        DeepFeatureFactorization(SmallCNN())(x, lambda out: out[:, 0])
    with pytest.raises(TargetError, match="out of range"):
        DeepFeatureFactorization(SmallCNN())(x, 99)
    # conv -> ReLU -> flatten -> linear(4): no linear layer reads the average of "conv".
    with pytest.raises(GradCAMError, match="linear head on the global average of 'conv'"):
        DeepFeatureFactorization(TinyGatedNet(), "conv")(tiny_input(), 0)


def test_registry_entry_and_option_text() -> None:
    spec = gradcam.method_spec("dff")
    assert (spec.kind, spec.cls, spec.needs.layer_gradients) == (
        "heatmap",
        DeepFeatureFactorization,
        False,
    )
    assert spec.option("n_concepts").parse("3") == 3
    assert spec.option("head").parse("fc") == "fc" and spec.option("head").parse("none") is None
    assert spec.option("tol").parse("1e-5") == 1e-5
    with pytest.raises(GradCAMError, match="option n_concepts"):
        spec.option("n_concepts").parse("three")
    method = gradcam.create_method("dff", SmallCNN(), "features", n_concepts=2, head="fc")
    result = method(torch.randn(1, 3, 16, 16), 1)
    assert result.concepts.shape[1] == 2 and result.classes.tolist() == [[1]]
