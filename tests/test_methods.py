"""The paper's other methods (sections 3.1, 3.2, 5.3): exact values, Captum, composition."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers.models import (
    RECTIFIERS,
    GmpNet,
    RectifierNet,
    SmallCNN,
    TinyGapNet,
    TinyGatedNet,
    signed_input,
    tiny_input,
)

import gradcam
from gradcam import (
    CAM,
    DeconvGradCAM,
    Deconvolution,
    GradCAM,
    GradCAMError,
    GuidedBackprop,
    GuidedGradCAM,
    Occlusion,
    TargetError,
)
from gradcam.maps import normalize, upsample
from gradcam.methods import create

PLAIN = torch.tensor([[2.0, -2.0], [-1.0, 1.0]])
GUIDED = torch.tensor([[2.0, -2.0], [0.0, 0.0]])
DECONV = torch.tensor([[1.0, -2.0], [-5.0, 4.0]])
RELU_FORMS = [name for name in RECTIFIERS if "6" not in name and "SiLU" not in name]

# d y^0 / dx for TinyGapNet on arange(9) (no rectifier, so every rule gives it): the 2x2
# window-sum kernel at weight 1/4 plus the [[1, 0], [0, -1]] kernel at weight 2/4.
TINY_GRAD = torch.tensor([[0.75, 1.0, 0.25], [1.0, 1.0, 0.0], [0.25, 0.0, -0.25]])


def _input_grad(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf)[0, 0], leaf)
    return grad


class TestRectifierRules:
    @pytest.mark.parametrize("form", RELU_FORMS)
    def test_guided_backprop_on_every_relu_form(self, form: str) -> None:
        result = GuidedBackprop(RectifierNet(RECTIFIERS[form]))(signed_input(), 0)
        torch.testing.assert_close(result.maps[0, 0, 0], GUIDED)
        torch.testing.assert_close(result.scores, torch.tensor([[2.0]]))

    @pytest.mark.parametrize("form", RELU_FORMS)
    def test_deconvolution_on_every_relu_form(self, form: str) -> None:
        result = Deconvolution(RectifierNet(RECTIFIERS[form]))(signed_input(), 0)
        torch.testing.assert_close(result.maps[0, 0, 0], DECONV)

    @pytest.mark.parametrize("form", RELU_FORMS)
    def test_plain_gradient_is_unchanged_outside_a_call(self, form: str) -> None:
        model = RectifierNet(RECTIFIERS[form])
        GuidedBackprop(model)(signed_input(), 0)
        torch.testing.assert_close(_input_grad(model, signed_input())[0, 0], PLAIN)

    @pytest.mark.parametrize("form", ["nn.ReLU6", "F.relu6"])
    def test_relu6_is_guided_on_its_own_derivative(self, form: str) -> None:
        x = torch.tensor([[[[1.0, -2.0], [7.0, -1.0]]]])  # 7 is above ReLU6's upper bound
        model = RectifierNet(RECTIFIERS[form])
        # mask0 = [0<x<6] = [1, 0, 0, 0], mask1 = [0<-x<6] = [0, 1, 0, 1]
        torch.testing.assert_close(
            _input_grad(model, x)[0, 0], torch.tensor([[2.0, -2.0], [0.0, 1.0]])
        )
        guided = GuidedBackprop(model)(x, 0).maps[0, 0, 0]
        torch.testing.assert_close(guided, torch.tensor([[2.0, -2.0], [0.0, 0.0]]))
        torch.testing.assert_close(Deconvolution(model)(x, 0).maps[0, 0, 0], DECONV)

    def test_silu_guided_on_its_derivative_at_positive_inputs(self) -> None:
        x = signed_input()
        z = torch.cat([x, -x], dim=1).requires_grad_(True)
        v = torch.tensor([2.0, -3.0, -1.0, 4.0, 1.0, 2.0, 5.0, -1.0]).view(1, 2, 2, 2)
        (dz,) = torch.autograd.grad(F.silu(z), z, v.clamp(min=0))
        dz = dz * (z > 0)
        expected = dz[0, 0] - dz[0, 1]
        result = GuidedBackprop(RectifierNet(RECTIFIERS["nn.SiLU"]))(x, 0)
        torch.testing.assert_close(result.maps[0, 0, 0], expected)

    def test_no_rectifier_means_plain_gradient(self) -> None:
        for method in (GuidedBackprop, Deconvolution):
            result = method(TinyGapNet())(tiny_input(), 0)
            torch.testing.assert_close(result.maps[0, 0, 0], TINY_GRAD)


@pytest.fixture(scope="module")
def resnet50() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


class TestCaptum:
    @pytest.mark.parametrize("name", ["GuidedBackprop", "Deconvolution"])
    def test_pixel_methods_match_captum_on_resnet50(
        self, resnet50: torch.nn.Module, name: str
    ) -> None:
        captum_attr = pytest.importorskip("captum.attr")
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        ours = getattr(gradcam, name)(resnet50)(x, torch.tensor([[3], [7]]))
        theirs = getattr(captum_attr, name)(resnet50).attribute(x, target=[3, 7])
        torch.testing.assert_close(ours.maps[:, 0], theirs, rtol=1e-4, atol=1e-6)

    def test_occlusion_matches_captum(self, resnet18: torch.nn.Module) -> None:
        captum_attr = pytest.importorskip("captum.attr")
        x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
        # stride 5 does not tile 40 - 12: the last windows are clipped at the edge
        ours = Occlusion(resnet18, window=12, stride=5, baseline=0.5)(x, [3, 9])
        for k, target in enumerate([3, 9]):
            theirs = captum_attr.Occlusion(resnet18).attribute(
                x,
                sliding_window_shapes=(3, 12, 12),
                strides=(3, 5, 5),
                baselines=0.5,
                target=target,
            )
            torch.testing.assert_close(ours.raw[0, k], theirs[0, 0], rtol=1e-4, atol=1e-6)
            assert torch.equal(theirs[0, 0], theirs[0, 2])  # the same over channels


class TestGuidedGradCAM:
    def test_composition_on_tiny_net(self) -> None:
        result = GuidedGradCAM(TinyGapNet(), "conv")(tiny_input(), 0)
        cam = GradCAM(TinyGapNet(), "conv")(tiny_input(), 0)
        torch.testing.assert_close(result.gradients[0, 0, 0], TINY_GRAD)
        torch.testing.assert_close(result.cam.raw, cam.raw)
        # L^0 = [[0, 1], [3, 4]] (helpers.models) upsampled to 3x3 by bilinear interpolation
        # with align_corners=False: the centre samples the middle of the 2x2 map (2.0), the
        # edges half-way along (0.5, 1.5, 2.5, 3.5), the corners the corner values.
        upsampled = torch.tensor([[0.0, 0.5, 1.0], [1.5, 2.0, 2.5], [3.0, 3.5, 4.0]])
        torch.testing.assert_close(upsample(cam.raw, (3, 3))[0, 0], upsampled)
        torch.testing.assert_close(result.maps[0, 0, 0], TINY_GRAD * upsampled)
        normalized = GuidedGradCAM(TinyGapNet(), "conv", normalized_cam=True)(tiny_input(), 0)
        torch.testing.assert_close(normalized.maps[0, 0, 0], TINY_GRAD * cam.maps[0, 0])

    def test_one_forward_serves_both_factors(self, resnet18: torch.nn.Module) -> None:
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
        calls = 0

        def count(*_: object) -> None:
            nonlocal calls
            calls += 1

        handle = resnet18.register_forward_hook(count)
        try:
            result = GuidedGradCAM(resnet18, "layer4")(x, gradcam.TopK(3))
        finally:
            handle.remove()
        assert calls == 1
        separate_cam = GradCAM(resnet18, "layer4")(x, result.classes)
        separate_gb = GuidedBackprop(resnet18)(x, result.classes)
        torch.testing.assert_close(result.cam.raw, separate_cam.raw, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result.gradients, separate_gb.maps, rtol=1e-5, atol=1e-7)
        upsampled = upsample(result.cam.raw, (64, 64)).unsqueeze(2)
        torch.testing.assert_close(result.maps, separate_gb.maps * upsampled, rtol=1e-5, atol=1e-7)

    def test_the_papers_product_agrees_with_captum(self, resnet18: torch.nn.Module) -> None:
        """Captum's GuidedGradCam is GB x the rectified layer Grad-CAM upsampled (bilinear)."""
        from captum.attr import GuidedGradCam

        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
        ours = GuidedGradCAM(resnet18, "layer4")(x, [7]).maps[0, 0]
        model = copy.deepcopy(resnet18)
        theirs = GuidedGradCam(model, model.layer4).attribute(
            x, target=7, interpolate_mode="bilinear"
        )[0]
        scale = theirs.abs().max()
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * float(scale))

    def test_deconv_gradcam_uses_the_deconv_rule(self) -> None:
        model = RectifierNet(torch.relu)
        result = DeconvGradCAM(model, "conv")(signed_input(), 0)
        torch.testing.assert_close(result.gradients[0, 0, 0], DECONV)

    def test_gradcam_gradient_rule_ablation(self) -> None:
        # TinyGatedNet: ReLU after A gates the gradient [[0, 0], [3, 4]]; deconv lets the
        # positive fc weights through everywhere: [[1, 2], [3, 4]] -> alpha = 10/4.
        result = GradCAM(TinyGatedNet(), "conv", gradient_rule="deconv")(tiny_input(), 0)
        torch.testing.assert_close(result.weights[0, 0], torch.tensor([2.5]))
        guided = GradCAM(TinyGatedNet(), "conv", gradient_rule="guided")(tiny_input(), 0)
        torch.testing.assert_close(guided.weights[0, 0], torch.tensor([1.75]))


class TestCAM:
    def test_exact_on_tiny_gap_net(self) -> None:
        result = CAM(TinyGapNet(), "conv")(tiny_input(), 0)
        # ReLU(1 * A^0 + 2 * A^1) = ReLU([[0, 4], [12, 16]]) = Z * Grad-CAM's [[0, 1], [3, 4]]
        torch.testing.assert_close(result.raw[0, 0], torch.tensor([[0.0, 4.0], [12.0, 16.0]]))
        torch.testing.assert_close(result.weights[0, 0], torch.tensor([1.0, 2.0]))
        torch.testing.assert_close(result.scores, torch.tensor([[8.0]]))

    def test_equals_gradcam_up_to_positive_factor(self) -> None:
        model = SmallCNN(classes=5, seed=7).eval()
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
        cam = CAM(model)(x, gradcam.TopK(3))
        grad_cam = GradCAM(model)(x, cam.classes)
        z = cam.raw.shape[-2] * cam.raw.shape[-1]
        torch.testing.assert_close(cam.raw, grad_cam.raw * z, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cam.maps, grad_cam.maps, rtol=1e-4, atol=1e-5)

    def test_on_the_embedded_model(self, lite0: gradcam.LoadedModel) -> None:
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
        cam = CAM(lite0.module)(x, [1, 2])
        grad_cam = GradCAM(lite0.module)(x, [1, 2])
        torch.testing.assert_close(cam.maps, grad_cam.maps, rtol=1e-3, atol=1e-4)

    def test_named_fc(self) -> None:
        result = CAM(TinyGapNet(), "conv", fc="fc")(tiny_input(), 0)
        assert result.layer == "conv"

    def test_clear_errors_for_other_heads(self) -> None:
        with pytest.raises(GradCAMError, match="not GAP \\+ linear"):
            CAM(GmpNet(), "features")(torch.randn(1, 3, 8, 8), 0)
        with pytest.raises(GradCAMError, match="linear layer with 1 inputs"):
            CAM(TinyGatedNet(), "conv")(tiny_input(), 0)
        with pytest.raises(GradCAMError, match=r"not an nn\.Linear"):
            CAM(TinyGapNet(), "conv", fc="pool")
        with pytest.raises(TargetError, match="class ids only"):
            CAM(TinyGapNet(), "conv")(tiny_input(), lambda out: out[:, 0])


class TestOcclusion:
    def test_exact_on_a_linear_model(self) -> None:
        # TinyGapNet's score is linear in x: a window's drop is sum(TINY_GRAD * x) over it.
        x = tiny_input()
        single = Occlusion(TinyGapNet(), window=1, stride=1)(x, 0)
        torch.testing.assert_close(single.raw[0, 0], TINY_GRAD * x[0, 0])
        averaged = Occlusion(TinyGapNet(), window=2, stride=1)(x, 0)
        expected = torch.tensor([[8.0, 6.75, 5.5], [8.25, 6.0, 3.75], [8.5, 5.25, 2.0]])
        torch.testing.assert_close(averaged.raw[0, 0], expected)
        torch.testing.assert_close(averaged.maps[0, 0], normalize(expected))

    def test_batch_size_and_batch_do_not_change_results(self) -> None:
        model = SmallCNN(seed=8).eval()
        x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(6))
        big = Occlusion(model, window=4, stride=3, batch_size=64)(x, gradcam.TopK(2))
        small = Occlusion(model, window=4, stride=3, batch_size=5)(x, gradcam.TopK(2))
        torch.testing.assert_close(big.raw, small.raw)
        single = Occlusion(model, window=4, stride=3)(x[1:], gradcam.TopK(2))
        torch.testing.assert_close(big.raw[1:], single.raw, rtol=1e-5, atol=1e-6)

    def test_callable_targets_and_tensor_baseline(self) -> None:
        model = SmallCNN(seed=9).eval()
        x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(7))
        baseline = torch.tensor([0.1, -0.2, 0.3]).view(3, 1, 1)
        by_id = Occlusion(model, window=3, stride=2, baseline=baseline)(x, [2])
        by_fn = Occlusion(model, window=3, stride=2, baseline=baseline)(x, lambda o: o[:, 2])
        torch.testing.assert_close(by_id.raw, by_fn.raw)

    def test_bad_settings(self) -> None:
        with pytest.raises(GradCAMError, match="stride 9 is larger than the window 4"):
            Occlusion(SmallCNN(), window=4, stride=9)(torch.randn(1, 3, 16, 16), 0)
        with pytest.raises(GradCAMError, match="window must be a positive int"):
            Occlusion(SmallCNN(), window=0)
        with pytest.raises(GradCAMError, match="does not broadcast"):
            Occlusion(SmallCNN(), window=2, stride=1, baseline=torch.zeros(5))(
                torch.randn(1, 3, 4, 4), 0
            )


class TestRegistry:
    def test_names(self) -> None:
        paper = ["gradcam", "counterfactual", "cam", "guided-backprop", "deconvolution"]
        paper += ["guided-gradcam", "deconv-gradcam", "occlusion"]
        assert set(paper) <= set(gradcam.list_methods())
        assert gradcam.list_methods()[0] == "gradcam"

    def test_create_and_unknown(self) -> None:
        assert gradcam.create_method is create
        model = SmallCNN().eval()
        result = create("counterfactual", model, "features")(torch.randn(1, 3, 8, 8), 1)
        assert isinstance(result, gradcam.CAMResult)
        with pytest.raises(GradCAMError, match=r"unknown method 'gradkam'"):
            create("gradkam", model)

    @pytest.mark.parametrize("name", gradcam.list_methods())
    def test_every_method_on_a_batch(self, name: str) -> None:
        model = SmallCNN(seed=10).eval()
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
        result = create(name, model)(x, gradcam.TopK(2))
        pixel = gradcam.method_spec(name).kind == "pixel"
        assert result.maps.shape == ((2, 2, 3, 8, 8) if pixel else (2, 2, 8, 8))
        assert result.scores.shape == result.classes.shape == (2, 2)
        assert torch.isfinite(result.maps).all() and not result.maps.requires_grad


def test_upsampled_cam_factor_is_bilinear() -> None:
    result = GuidedGradCAM(TinyGapNet(), "conv")(tiny_input(), 0)
    torch.testing.assert_close(result.cam.maps, normalize(upsample(result.cam.raw, (3, 3))))
    factor = result.maps[0, 0] / result.gradients[0, 0].where(result.gradients[0, 0] != 0, 1)
    nonzero = result.gradients[0, 0] != 0
    torch.testing.assert_close(
        factor[nonzero], upsample(result.cam.raw, (3, 3))[0, 0].expand(1, 3, 3)[nonzero]
    )
