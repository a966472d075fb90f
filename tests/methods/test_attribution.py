"""Integrated Gradients and SmoothGrad: exact values by hand, Captum, top-K, state, registry."""

from __future__ import annotations

import pytest
import torch
from helpers.models import SmallCNN
from helpers.state import assert_unchanged, snapshot
from torch import nn

import gradcam
from gradcam import GradCAMError, IntegratedGradients, SmoothGrad, TopK
from gradcam.methods.attribution import integration_points


class SquareAndSum(nn.Module):
    """Two scores: ``y0 = sum(x^2) / 2`` (gradient ``x``) and ``y1 = sum(x)`` (gradient 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([0.5 * (x**2).sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3))], dim=1)


X = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])  # sum(x^2) = 14.25


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_integrated_gradients_exact(rule: str) -> None:
    # Along x' + t (x - x') with x' = 0 the gradient of y0 is t x, linear in t: these rules are
    # exact for it, so IG_0 = x * integral(t x) = x^2 / 2 and IG_1 = x * integral(1) = x, and
    # both sum to y(x) - y(0): delta = 0.
    result = IntegratedGradients(SquareAndSum(), steps=4, quadrature=rule)(X, [0, 1])  # type: ignore[arg-type]
    torch.testing.assert_close(result.maps[0, 0], X[0] ** 2 / 2)
    torch.testing.assert_close(result.maps[0, 1], X[0])
    assert result.delta is not None
    torch.testing.assert_close(result.delta, torch.zeros(1, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(result.scores, torch.tensor([[7.125, 2.5]]))


def test_integrated_gradients_left_riemann_and_baseline() -> None:
    # Left Riemann, 4 steps: sum_k (k / 4) / 4 = 3/8 instead of 1/2, so IG_0 = 3 x^2 / 8 and
    # delta = 14.25 (3/8 - 1/2) = -1.78125.
    left = IntegratedGradients(SquareAndSum(), steps=4, quadrature="riemann_left")(X, [0])
    torch.testing.assert_close(left.maps[0, 0], 3 * X[0] ** 2 / 8)
    assert left.delta is not None
    torch.testing.assert_close(left.delta, torch.tensor([[-1.78125]]))
    # Baseline 1: IG_0 = (x - 1) integral(1 + t (x - 1)) dt = (x - 1)(x + 1) / 2 = (x^2 - 1) / 2.
    shifted = IntegratedGradients(SquareAndSum(), baseline=1.0, steps=2)(X, [0])
    torch.testing.assert_close(shifted.maps[0, 0], (X[0] ** 2 - 1) / 2)


def test_integration_points() -> None:
    alphas, weights = integration_points("riemann_trapezoid", 5)
    assert alphas.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert weights.tolist() == [0.125, 0.25, 0.25, 0.25, 0.125]
    alphas, weights = integration_points("gausslegendre", 1)
    assert alphas.tolist() == [0.5] and weights.tolist() == [1.0]


def test_smoothgrad_exact() -> None:
    # y1 = sum(x) has gradient 1 whatever the noise: SmoothGrad_1 = 1. y0 = sum(x^2) / 2 has
    # gradient x + noise, so SmoothGrad_0 = x + mean(noise) over the samples.
    method = SmoothGrad(SquareAndSum(), samples=6, stdev=0.5, seed=3)
    result = method(X, [0, 1])
    noise = method.noise(X[0])
    assert noise.shape == (6, 1, 2, 2)
    torch.testing.assert_close(result.maps[0, 0], X[0] + noise.mean(dim=0))
    torch.testing.assert_close(result.maps[0, 1], torch.ones(1, 2, 2))
    absolute = SmoothGrad(SquareAndSum(), samples=6, stdev=0.5, seed=3, absolute=True)(X, [0])
    torch.testing.assert_close(absolute.maps[0, 0], (X[0] + noise).abs().mean(dim=0))


def test_smoothgrad_noise_level() -> None:
    # stdev=None: 15% of the image's range (3 - (-2) = 5), i.e. 0.75; a seed fixes the noise.
    method = SmoothGrad(SquareAndSum(), samples=4000, seed=1)
    noise = method.noise(X[0])
    assert abs(float(noise.std()) - 0.75) < 0.02 and abs(float(noise.mean())) < 0.02
    assert torch.equal(noise, method.noise(X[0]))
    assert not torch.equal(noise, SmoothGrad(SquareAndSum(), samples=4000, seed=2).noise(X[0]))


MODELS = ["resnet50", "vgg16", "lite0_module"]
STEPS = 8


def _image(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert theirs.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("name", MODELS)
def test_integrated_gradients_match_captum(
    name: str, rule: str, request: pytest.FixtureRequest
) -> None:
    from captum.attr import IntegratedGradients as CaptumIG

    model = request.getfixturevalue(name)
    x = _image()
    # A grey image with a little noise: on a constant baseline (the trapezoid rule evaluates
    # the gradient there) many ReLUs sit exactly at their kink, where float rounding of one
    # batch layout or another picks either side.
    baseline = 0.5 + 0.05 * torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = IntegratedGradients(model, baseline=baseline, steps=STEPS, quadrature=rule)(x, [3])  # type: ignore[arg-type]
    theirs, delta = CaptumIG(model).attribute(
        x.clone(),
        baselines=baseline[None],
        target=3,
        n_steps=STEPS,
        method=rule,
        return_convergence_delta=True,
    )
    if rule == "riemann_trapezoid":
        # Captum's trapezoid weights sum to (n - 1) / n, ours (the trapezoid rule) to 1.
        theirs = theirs * STEPS / (STEPS - 1)
    else:
        assert ours.delta is not None
        _close(ours.delta[:, 0], delta.float())
    _close(ours.maps[:, 0], theirs)


@pytest.mark.parametrize(("name", "absolute"), [(n, n == "vgg16") for n in MODELS])
def test_smoothgrad_matches_captum(
    name: str, absolute: bool, request: pytest.FixtureRequest
) -> None:
    from captum.attr import NoiseTunnel, Saliency

    model = request.getfixturevalue(name)
    x = _image()
    ours = SmoothGrad(model, samples=4, stdev=0.3, seed=11, absolute=absolute)(x, [3])
    torch.manual_seed(11)  # Captum draws from the global generator
    theirs = NoiseTunnel(Saliency(model)).attribute(
        x.clone(), nt_type="smoothgrad", nt_samples=4, stdevs=0.3, target=3, abs=absolute
    )
    _close(ours.maps[:, 0], theirs)


def test_smoothgrad_batch_is_each_image_alone_as_in_captum() -> None:
    from captum.attr import NoiseTunnel, Saliency

    model = SmallCNN(seed=7).eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    ours = SmoothGrad(model, samples=5, stdev=0.2, seed=5)(x, [1])
    for b in range(2):
        torch.manual_seed(5)
        theirs = NoiseTunnel(Saliency(model)).attribute(
            x[b : b + 1], nt_type="smoothgrad", nt_samples=5, stdevs=0.2, target=1, abs=False
        )
        _close(ours.maps[b : b + 1, 0], theirs)


@pytest.mark.parametrize(
    "method",
    [
        IntegratedGradients(SmallCNN(seed=3).eval(), steps=6, batch_size=4),
        SmoothGrad(SmallCNN(seed=3).eval(), samples=5, stdev=0.3, batch_size=2),
    ],
    ids=["integrated-gradients", "smoothgrad"],
)
def test_top_k_in_one_pass_and_batch(method: IntegratedGradients | SmoothGrad) -> None:
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    together = method(x, TopK(3))
    assert together.maps.shape == (2, 3, 3, 12, 12)
    for b in range(2):
        for k in range(3):
            alone = method(x[b : b + 1], [int(together.classes[b, k])])
            torch.testing.assert_close(alone.maps[0, 0], together.maps[b, k])
            torch.testing.assert_close(alone.scores[0, 0], together.scores[b, k])


def test_model_and_input_untouched_and_bad_input() -> None:
    model = SmallCNN(seed=4).train()
    model(torch.randn(2, 3, 12, 12)).sum().backward()  # the user's own gradients
    before = snapshot(model)
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    x_before = x.detach().clone()
    IntegratedGradients(model, steps=3)(x, TopK(2))
    SmoothGrad(model, samples=3)(x, TopK(2))
    assert_unchanged(before, model)
    assert torch.equal(x.detach(), x_before) and x.grad is None
    for build, message in [
        (lambda: IntegratedGradients(model, steps=0), "steps must be"),
        (lambda: IntegratedGradients(model, steps=1, quadrature="riemann_trapezoid"), "steps"),
        (lambda: IntegratedGradients(model, quadrature="simpson"), "quadrature must be"),
        (lambda: IntegratedGradients(model, batch_size=0), "batch_size must be"),
        (lambda: SmoothGrad(model, samples=0), "samples must be"),
        (lambda: SmoothGrad(model, stdev=-1.0), "stdev must be"),
    ]:
        with pytest.raises(GradCAMError, match=message):
            build()
    with pytest.raises(GradCAMError, match="does not broadcast"):
        IntegratedGradients(model, baseline=torch.zeros(2, 3))(x, [0])
    with pytest.raises(GradCAMError, match="out of range"):
        SmoothGrad(model, samples=2)(x, 99)
    assert_unchanged(before, model)


def test_registry() -> None:
    model = SmallCNN(seed=5).eval()
    ig = gradcam.create_method("integrated-gradients", model, "features", steps=16)
    assert isinstance(ig, IntegratedGradients) and ig.steps == 16
    spec = gradcam.method_spec("integrated-gradients")
    assert spec.kind == "pixel" and not spec.needs.layer
    assert spec.option("steps").parse("16") == 16
    assert spec.option("baseline").parse("0.5") == 0.5
    assert spec.option("quadrature").parse("riemann_trapezoid") == "riemann_trapezoid"
    smooth = gradcam.create_method("smoothgrad", model, samples=10, stdev=0.2, seed=1)
    assert isinstance(smooth, SmoothGrad) and smooth.samples == 10
    spec = gradcam.method_spec("smoothgrad")
    assert spec.kind == "pixel"
    assert spec.option("stdev").parse("none") is None
    assert spec.option("stdev").parse("0.2") == 0.2
    assert spec.option("seed").parse("7") == 7
    assert spec.option("absolute").parse("true") is True
