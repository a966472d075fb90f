"""The user's model and input are left exactly as they were, also when the call raises."""

from __future__ import annotations

import pytest
import torch
from helpers.models import FailingNet, ReusedLayerNet, SmallCNN
from helpers.state import assert_unchanged, snapshot

from gradcam import GradCAM, GradCAMError, TopK


def _grad_populated_model() -> SmallCNN:
    model = SmallCNN(seed=4)
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # the user's own gradients
    model.fc.weight.requires_grad_(False)  # and a frozen parameter
    return model


@pytest.mark.parametrize("train", [False, True])
def test_successful_call_leaves_model_and_input_untouched(train: bool) -> None:
    model = _grad_populated_model().train(train)
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    x_before = x.detach().clone()
    GradCAM(model, "features")(x, TopK(3))
    GradCAM(model)(x, [0, 1])  # default layer: also probes the model
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.requires_grad and x.grad is None
    assert torch.is_grad_enabled()


def test_resnet_with_inplace_relu_untouched(resnet18: torch.nn.Module) -> None:
    before = snapshot(resnet18)
    x = torch.randn(1, 3, 64, 64)
    x_before = x.clone()
    GradCAM(resnet18, "layer4")(x, TopK(5))
    assert_unchanged(before, resnet18)
    assert all(p.grad is None for p in resnet18.parameters())
    assert torch.equal(x, x_before)


@pytest.mark.parametrize(
    ("model", "layer", "targets", "message"),
    [
        (SmallCNN(), "features", 99, "out of range"),
        (SmallCNN(), "features", lambda out: out, "expected"),
        (ReusedLayerNet(), "block", 0, "more than once"),
        (ReusedLayerNet(), "unused", 0, "did not run"),
        (FailingNet(), "features", 0, "boom inside forward"),
    ],
    ids=["bad-class", "bad-callable", "layer-twice", "layer-never", "forward-raises"],
)
def test_failed_call_leaves_model_untouched(
    model: torch.nn.Module, layer: str, targets: object, message: str
) -> None:
    model.train()
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16)
    x_before = x.clone()
    with pytest.raises((GradCAMError, RuntimeError), match=message):
        GradCAM(model, layer)(x, targets)  # type: ignore[arg-type]
    assert_unchanged(before, model)
    assert torch.equal(x, x_before)
    assert torch.is_grad_enabled()
    with torch.no_grad():
        with pytest.raises((GradCAMError, RuntimeError), match=message):
            GradCAM(model, layer)(x, targets)  # type: ignore[arg-type]
        assert not torch.is_grad_enabled()  # the caller's grad mode is restored too


METHODS = __import__("gradcam").list_methods()


def _no_function_mode_left() -> bool:
    return not torch._C._is_torch_function_mode_enabled()


@pytest.mark.parametrize("name", METHODS)
def test_every_method_leaves_model_and_input_untouched(name: str) -> None:
    from gradcam.methods import create

    model = _grad_populated_model().train()
    before = snapshot(model)
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    x_before = x.detach().clone()
    create(name, model)(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None
    assert torch.is_grad_enabled() and _no_function_mode_left()


@pytest.mark.parametrize("name", METHODS)
def test_every_method_leaves_model_untouched_when_it_raises(name: str) -> None:
    from gradcam.methods import create

    for model, targets, message in [
        (_grad_populated_model(), 99, "out of range"),
        (FailingNet(), 0, "boom inside forward"),
    ]:
        model.train()
        before = snapshot(model)
        with pytest.raises((GradCAMError, RuntimeError), match=message):
            create(name, model, "features")(torch.randn(1, 3, 12, 12), targets)
        assert_unchanged(before, model)
        assert torch.is_grad_enabled() and _no_function_mode_left()


@pytest.mark.parametrize("name", METHODS)
def test_every_method_under_caller_no_grad_and_inference_mode(name: str) -> None:
    from gradcam.methods import create

    model = SmallCNN(seed=6).eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    expected = create(name, model)(x, [1]).maps
    with torch.no_grad():
        torch.testing.assert_close(create(name, model)(x, [1]).maps, expected)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        torch.testing.assert_close(create(name, model)(x.clone(), [1]).maps, expected)
