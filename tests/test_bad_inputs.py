"""Bad inputs give a clear error naming what was wrong (never a NaN map)."""

from __future__ import annotations

import pytest
import torch
from helpers.models import ReusedLayerNet, SmallCNN, TinyGapNet, WrappedOutput, tiny_input

from gradcam import GradCAM, GradCAMError, LayerError, TargetError, TopK


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
def test_understood_output_types(kind: str) -> None:
    model = WrappedOutput(kind).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = GradCAM(model.net, "features")(x, 1)
    result = GradCAM(model, "net.features")(x, 1)
    torch.testing.assert_close(result.raw, expected.raw)


def test_unknown_output_type_is_named() -> None:
    with pytest.raises(TargetError, match="of type str"):
        GradCAM(WrappedOutput("str"), "net.features")(torch.randn(1, 3, 16, 16), 0)


def test_layer_running_twice() -> None:
    with pytest.raises(LayerError, match="'block' runs more than once"):
        GradCAM(ReusedLayerNet(), "block")(torch.randn(1, 3, 8, 8), 0)


def test_layer_never_running() -> None:
    with pytest.raises(LayerError, match="'unused' did not run"):
        GradCAM(ReusedLayerNet(), "unused")(torch.randn(1, 3, 8, 8), 0)


def test_layer_without_feature_maps() -> None:
    with pytest.raises(LayerError, match=r"'fc' must output a \(B, C, h, w\)"):
        GradCAM(SmallCNN(), "fc")(torch.randn(1, 3, 8, 8), 0)


def test_unknown_layer_name_suggests() -> None:
    with pytest.raises(LayerError, match="did you mean features"):
        GradCAM(SmallCNN(), "feature")


def test_layer_module_not_in_model() -> None:
    with pytest.raises(LayerError, match="not a submodule"):
        GradCAM(SmallCNN(), torch.nn.Conv2d(1, 1, 1))


def test_all_zero_map_stays_finite() -> None:
    result = GradCAM(TinyGapNet(), "conv")(tiny_input(), [0, 1])
    assert torch.isfinite(result.maps).all()
    assert torch.equal(result.maps[0, 1], torch.zeros(3, 3))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.randn(3, 16, 16), r"add a batch dimension"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.long), "floating"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        (torch.zeros(0, 3, 16, 16), "empty"),
        ([[1.0]], "torch.Tensor"),
    ],
    ids=["3d", "int", "nan", "empty", "list"],
)
def test_bad_input_tensors(x: object, message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        GradCAM(SmallCNN(), "features")(x, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (5, "class id 5 is out of range: the model has 5 classes"),
        (-1, "class id -1 is out of range"),
        ([], "targets is empty"),
        ("cat", "class name .cat. needs a model with class names"),
        (torch.tensor([1, 2]), r"shape \(B, K\)"),
        (torch.tensor([[0.5]]), "integer class ids"),
        (torch.tensor([[1], [2], [3]]), "do not fit a batch of 2"),
        (lambda out: out.sum(), "returned one number for a batch of 2 images"),
        (lambda out: 3.0, "returned float"),
    ],
    ids=["high", "negative", "empty", "str", "1d", "float", "batch", "scalar", "not-tensor"],
)
def test_bad_targets(targets: object, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        GradCAM(SmallCNN(), "features")(torch.randn(2, 3, 8, 8), targets)  # type: ignore[arg-type]


def test_bad_topk_and_pooling() -> None:
    with pytest.raises(TargetError, match="positive integer"):
        TopK(0)
    with pytest.raises(GradCAMError, match="pooling must be one of"):
        GradCAM(SmallCNN(), pooling="median")  # type: ignore[arg-type]
    with pytest.raises(GradCAMError, match=r"nn\.Module"):
        GradCAM("resnet50")  # type: ignore[arg-type]


def test_score_independent_of_layer() -> None:
    with pytest.raises(TargetError, match="do not depend on the chosen layer"):
        GradCAM(SmallCNN(), "features")(torch.randn(1, 3, 8, 8), lambda out: torch.ones(1))


def test_topk_larger_than_classes_is_clamped() -> None:
    result = GradCAM(SmallCNN(classes=5), "features")(torch.randn(1, 3, 8, 8), TopK(9))
    assert sorted(result.classes[0].tolist()) == [0, 1, 2, 3, 4]


def test_all_finite_is_exact_when_the_fast_sum_overflows() -> None:
    from gradcam.engine import all_finite

    assert all_finite(torch.tensor([3e38, 3e38]))  # the sum overflows; every value is finite
    assert all_finite(torch.full((4,), 60000.0, dtype=torch.float16))
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("inf"), float("-inf")]))
