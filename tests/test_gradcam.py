"""Grad-CAM values: exact on hand-weighted models, CAM equivalence (sec. 3.1), Captum, batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.models import SmallCNN, TinyGapNet, TinyGatedNet, tiny_input

from gradcam import GradCAM, TopK
from gradcam.maps import normalize


class TestExactValues:
    def test_gap_net_class0(self) -> None:
        result = GradCAM(TinyGapNet(), "conv")(tiny_input(), 0)
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 1.0], [3.0, 4.0]]))
        torch.testing.assert_close(result.weights[0, 0], torch.tensor([0.25, 0.5]))
        torch.testing.assert_close(result.scores, torch.tensor([[8.0]]))
        assert result.classes.tolist() == [[0]]
        assert result.layer == "conv"

    def test_gap_net_no_positive_evidence_is_zero_not_nan(self) -> None:
        result = GradCAM(TinyGapNet(), "conv")(tiny_input(), 1)
        torch.testing.assert_close(result.scores, torch.tensor([[-20.0]]))
        assert torch.equal(result.raw, torch.zeros(1, 1, 2, 2))
        assert torch.equal(result.maps, torch.zeros(1, 1, 3, 3))

    def test_counterfactual_negates_gradients(self) -> None:
        result = GradCAM(TinyGapNet(), "conv", counterfactual=True)(tiny_input(), 1)
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[3.0, 4.0], [6.0, 7.0]]))
        torch.testing.assert_close(result.weights[0, 0], torch.tensor([0.25, -0.25]))

    def test_ablations(self) -> None:
        x = tiny_input()
        no_relu = GradCAM(TinyGapNet(), "conv", relu=False)(x, 1)
        torch.testing.assert_close(no_relu.raw[0, 0], torch.tensor([[-3.0, -4.0], [-6.0, -7.0]]))
        absolute = GradCAM(TinyGapNet(), "conv", pooling="abs")(x, 1)
        torch.testing.assert_close(absolute.raw[0, 0], torch.tensor([[1.0, 2.0], [4.0, 5.0]]))
        # Constant gradients: the global max equals the mean.
        maxed = GradCAM(TinyGapNet(), "conv", pooling="max")(x, 0)
        torch.testing.assert_close(maxed.raw[0, 0], torch.tensor([[0.0, 1.0], [3.0, 4.0]]))

    def test_max_pooling_differs_on_varying_gradients(self) -> None:
        result = GradCAM(TinyGatedNet(), "conv", pooling="max")(tiny_input(), 0)
        # gradients [[0, 0], [3, 4]]: max 4, so L = ReLU(4 A) = [[0, 0], [20, 36]]
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 0.0], [20.0, 36.0]]))

    def test_gated_net_with_inplace_relu(self) -> None:
        result = GradCAM(TinyGatedNet(), "conv")(tiny_input(), 0)
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 0.0], [8.75, 15.75]]))
        torch.testing.assert_close(result.weights[0, 0], torch.tensor([1.75]))
        torch.testing.assert_close(result.scores, torch.tensor([[51.0]]))

    def test_maps_are_upsampled_then_normalized(self) -> None:
        result = GradCAM(TinyGapNet(), "conv")(tiny_input(), 0)
        expected = F.interpolate(result.raw, size=(3, 3), mode="bilinear", align_corners=False)
        torch.testing.assert_close(result.maps, normalize(expected))
        assert float(result.maps.min()) == 0.0 and float(result.maps.max()) == 1.0


class TestCamEquivalence:
    """Section 3.1: for GAP + linear heads, Grad-CAM is CAM up to the factor 1/Z."""

    def test_gradcam_equals_cam(self) -> None:
        model = SmallCNN(classes=5, seed=3).eval()
        x = torch.randn(2, 3, 16, 20, generator=torch.Generator().manual_seed(1))
        result = GradCAM(model, "features")(x, [0, 2, 4])
        with torch.no_grad():
            features = model.features(x)  # A: (2, 16, 8, 10)
        z = features.shape[-2] * features.shape[-1]
        w = model.fc.weight[[0, 2, 4]]  # (3, 16)
        cam = torch.relu(torch.einsum("kc,bchw->bkhw", w, features))
        torch.testing.assert_close(result.raw * z, cam, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(result.weights * z, w.expand(2, -1, -1), rtol=1e-4, atol=1e-6)


class TestCaptum:
    def test_matches_captum_layer_gradcam(self, resnet18: torch.nn.Module) -> None:
        captum_attr = pytest.importorskip("captum.attr")
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        ours = GradCAM(resnet18, "layer4")(x, torch.tensor([[3], [7]]))
        theirs = captum_attr.LayerGradCam(resnet18, resnet18.layer4).attribute(
            x, target=[3, 7], relu_attributions=True
        )
        torch.testing.assert_close(ours.raw, theirs.detach(), rtol=1e-4, atol=1e-6)


class TestBatching:
    def test_k_targets_equal_k_single_calls(self, resnet18: torch.nn.Module) -> None:
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
        cam = GradCAM(resnet18, "layer4")
        many = cam(x, TopK(4))
        for k in range(4):
            single = cam(x, int(many.classes[0, k]))
            torch.testing.assert_close(many.raw[:, k], single.raw[:, 0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(many.weights[:, k], single.weights[:, 0])
            torch.testing.assert_close(many.maps[:, k], single.maps[:, 0], rtol=1e-5, atol=1e-5)

    def test_batch_equals_stacked_single_images(self, resnet18: torch.nn.Module) -> None:
        x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
        cam = GradCAM(resnet18, "layer4")
        batch = cam(x, TopK(2))
        singles = [cam(x[i : i + 1], TopK(2)) for i in range(3)]
        assert torch.equal(batch.classes, torch.cat([s.classes for s in singles]))
        torch.testing.assert_close(
            batch.raw, torch.cat([s.raw for s in singles]), rtol=1e-4, atol=1e-6
        )
        torch.testing.assert_close(batch.scores, torch.cat([s.scores for s in singles]))

    def test_callable_targets_equal_class_targets(self, resnet18: torch.nn.Module) -> None:
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
        cam = GradCAM(resnet18, "layer4")
        by_id = cam(x, [5, 9])
        by_fn = cam(x, [lambda out: out[:, 5], lambda out: out[:, 9]])
        torch.testing.assert_close(by_id.raw, by_fn.raw)
        assert by_fn.classes.tolist() == [[-1, -1], [-1, -1]]

    def test_mixed_ids_and_callables(self) -> None:
        result = GradCAM(TinyGapNet(), "conv")(tiny_input(), [0, lambda out: out[:, 0] * 2])
        torch.testing.assert_close(result.raw[0, 1], 2 * result.raw[0, 0])
        assert result.classes.tolist() == [[0, -1]]


class TestPrecisionAndModes:
    def test_works_under_caller_no_grad(self, resnet18: torch.nn.Module) -> None:
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
        expected = GradCAM(resnet18, "layer4")(x, 1)
        with torch.no_grad():
            inside = GradCAM(resnet18, "layer4")(x, 1)
            assert not torch.is_grad_enabled()
        torch.testing.assert_close(inside.raw, expected.raw)

    def test_works_under_caller_inference_mode(self, resnet18: torch.nn.Module) -> None:
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
        expected = GradCAM(resnet18, "layer4")(x, 1)
        with torch.inference_mode():
            inside = GradCAM(resnet18, "layer4")(x.clone(), 1)
        torch.testing.assert_close(inside.raw, expected.raw)

    def test_results_are_detached(self, resnet18: torch.nn.Module) -> None:
        x = torch.randn(1, 3, 64, 64, requires_grad=True)
        result = GradCAM(resnet18, "layer4")(x, TopK(2))
        for tensor in (result.raw, result.maps, result.weights, result.scores, result.logits):
            assert tensor is not None and not tensor.requires_grad and tensor.grad_fn is None

    def test_half_precision_model_gives_float32(self) -> None:
        model = SmallCNN(seed=1).eval()
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
        full = GradCAM(model, "features")(x, 2)
        half = GradCAM(model.to(torch.bfloat16), "features")(x, 2)
        for tensor in (half.raw, half.maps, half.weights, half.scores):
            assert tensor.dtype == torch.float32
        assert torch.isfinite(half.maps).all()
        assert (
            torch.nn.functional.cosine_similarity(half.raw.flatten(), full.raw.flatten(), dim=0)
            > 0.98
        )

    def test_training_mode_model_is_explained_in_eval_mode(self) -> None:
        model = SmallCNN(seed=2)
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
        in_train = GradCAM(model.train(), "features")(x, 1)
        assert model.training
        in_eval = GradCAM(model.eval(), "features")(x, 1)
        torch.testing.assert_close(in_train.raw, in_eval.raw)


class _Square(torch.autograd.Function):
    """A custom autograd Function whose backward goes through NumPy, as legacy ops do: it
    cannot be vmapped, so K targets need the per-target fallback."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)  # type: ignore[attr-defined]
        return x * x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return torch.from_numpy(2 * x.numpy() * grad.numpy())


class _CustomHead(SmallCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(_Square.apply(self.features(x))).flatten(1))


def test_custom_autograd_function_falls_back_to_exact_per_target_gradients() -> None:
    model = _CustomHead(seed=5).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    cam = GradCAM(model, "features")
    with pytest.raises(RuntimeError):  # the batched backward cannot run this Function
        scores = model(x.requires_grad_())[:, :2]
        torch.autograd.grad(scores, x, torch.eye(2)[:, None].expand(2, 2, 2), is_grads_batched=True)
    many = cam(x.detach(), [0, 3, 4])
    for k, c in enumerate([0, 3, 4]):
        torch.testing.assert_close(
            many.raw[:, k], cam(x.detach(), c).raw[:, 0], rtol=1e-5, atol=1e-6
        )
