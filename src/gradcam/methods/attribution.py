"""Pixel attributions from many input gradients: Integrated Gradients and SmoothGrad.

Both explain the classes that a first, no-grad forward pass of the clean images resolves
(:func:`~gradcam.targets.fixed_targets`), then send altered copies of each image (points on
a path, noisy copies) through the engine in batches, with a plain backward pass to the input
(:func:`~gradcam.engine.compute_gradients` with ``input_rules=("plain",)``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from gradcam.engine import check_input, compute_gradients, eval_mode
from gradcam.errors import GradCAMError, TargetError
from gradcam.methods.base import check_module
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import AttributionResult
from gradcam.targets import (
    ScoreFn,
    TargetLike,
    as_logits,
    class_names,
    fixed_targets,
    resolve_targets,
)

__all__ = ["IntegratedGradients", "Quadrature", "SmoothGrad", "integration_points"]

Quadrature = Literal[
    "gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"
]
_QUADRATURES = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)


def integration_points(rule: Quadrature, steps: int) -> tuple[Tensor, Tensor]:
    """Points ``alpha_i`` in [0, 1] and weights ``w_i`` of a rule for integrals over [0, 1].

    ``"gausslegendre"`` is Gauss-Legendre quadrature (exact for polynomials of degree
    ``2 steps - 1``); ``"riemann_left"``, ``"riemann_right"`` and ``"riemann_middle"`` put
    ``steps`` points at the left ends, right ends or middles of equal intervals, each weighted
    ``1 / steps``; ``"riemann_trapezoid"`` is the trapezoid rule on ``steps`` equally spaced
    points from 0 to 1 (weights ``1 / (steps - 1)``, halved at both ends, summing to 1).

    The names and every rule but the trapezoid are Captum's; Captum's trapezoid weights are
    ``1 / steps`` (halved at the ends), which sum to ``1 - 1 / steps``, so its attributions
    are ``(steps - 1) / steps`` times these.

    Returns:
        ``(alphas, weights)``, two (steps,) float64 tensors.

    Examples:
        >>> alphas, weights = integration_points("riemann_trapezoid", 3)
        >>> alphas.tolist(), weights.tolist()
        ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    """
    if rule not in _QUADRATURES:
        raise GradCAMError(f"quadrature must be one of {', '.join(_QUADRATURES)}; got {rule!r}")
    least = 2 if rule == "riemann_trapezoid" else 1
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < least:
        raise GradCAMError(f"steps must be an integer >= {least} for {rule}, got {steps!r}")
    index = torch.arange(steps, dtype=torch.float64)
    if rule == "gausslegendre":
        nodes, gauss = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * gauss)
    if rule == "riemann_trapezoid":
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return index / (steps - 1), weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (index + offset) / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise GradCAMError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _chunks(total: int, batch_size: int | None, device: torch.device) -> Iterator[slice]:
    # A backward pass needs the forward's activations: smaller batches than occlusion's.
    size = batch_size or (8 if device.type == "cpu" else 32)
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def _plain_input(x: Tensor, module: nn.Module) -> Tensor:
    """The checked batch, detached, as a normal tensor (a caller's inference tensor is copied;
    call under ``inference_mode(False)``)."""
    x = check_input(x, module).detach()
    return x.clone() if x.is_inference() else x


def _logits_or_none(output: object) -> Tensor | None:
    try:
        return as_logits(output).detach().float()
    except TargetError:
        return None


def _clean_pass(
    module: nn.Module, x: Tensor, targets: TargetLike | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Scores (B, K), classes (B, K) and logits of the clean batch, from a no-grad pass."""
    # Called under inference_mode(False), which turns grad mode on: no_grad comes after it.
    with torch.no_grad(), eval_mode(module):
        output = module(x)
        resolved = resolve_targets(targets, output, x.shape[0], names=class_names(module))
    return resolved.scores.float(), resolved.classes, _logits_or_none(output)


def _input_gradients(module: nn.Module, points: Tensor, columns: list[int | ScoreFn]) -> Tensor:
    """Plain ``dy^c/dx`` (n, K, C, H, W) at each of the ``points`` for the fixed targets."""
    found = compute_gradients(module, points, columns, input_rules=("plain",))
    return found.input_gradients["plain"].float()


def _progress(passes: int, show: bool | None, desc: str) -> tqdm:  # type: ignore[type-arg]
    visible = show if show is not None else passes > 200
    return tqdm(total=passes, desc=desc, unit="image", disable=not visible, file=sys.stderr)


@register(
    "integrated-gradients",
    title="Integrated Gradients",
    kind="pixel",
    needs=Needs(
        forwards="a forward and backward pass per step and image (in batches), a forward pass "
        "of the baseline",
        many_passes=True,
    ),
    citation="Sundararajan et al. 2017",
    ranks=(1, 2, 3),
)
class IntegratedGradients:
    """Integrated Gradients (Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep
    Networks", ICML 2017, eq. 1 and 3): the gradient integrated along the straight path from
    a baseline ``x'`` to the image ``x``,

    .. math::
        \\mathrm{IG}_i(x) = (x_i - x'_i) \\int_0^1
        \\frac{\\partial y^c}{\\partial x_i}\\big(x' + t (x - x')\\big)\\, dt
        \\approx (x_i - x'_i) \\sum_{s} w_s \\frac{\\partial y^c}{\\partial x_i}
        \\big(x' + \\alpha_s (x - x')\\big)

    with the points ``alpha_s`` and weights ``w_s`` of a rule (:func:`integration_points`). The
    attributions sum to ``y^c(x) - y^c(x')`` (completeness) up to the rule's error, which the
    result reports as ``delta`` (Captum's convergence delta).

    Defaults are Captum's ``IntegratedGradients.attribute`` (50 steps, Gauss-Legendre); every
    rule agrees with Captum's but the trapezoid (see :func:`integration_points`). The path points of
    each image go through the engine ``batch_size`` at a time, all targets at once; one more
    no-grad forward pass scores the clean images (resolving ``TopK``) and one per image the
    baseline.

    Args:
        module: the model.
        baseline: the baseline ``x'`` (in the model's input space): a number, or a tensor
            broadcastable to (C, H, W), e.g. a per-channel mean.
        steps: the number of points on the path.
        quadrature: the integration rule: gausslegendre (Captum's default), riemann_left,
            riemann_right, riemann_middle or riemann_trapezoid.
        batch_size: path points per forward and backward pass; ``None`` picks 8 on the CPU
            and 32 on an accelerator.
        progress: show a progress bar; ``None`` shows one for runs of more than 200 points.

    Examples:
        >>> result = IntegratedGradients(model, steps=16)(x, [3])
        >>> result.maps.shape  # (B, K, 3, H, W)
        torch.Size([1, 1, 3, 128, 128])
        >>> round(float(result.delta / result.scores), 2)  # completeness gap, relative to y^c
        0.01
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        baseline: float | Tensor = 0.0,
        steps: int = 50,
        quadrature: Quadrature = "gausslegendre",
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.module = check_module(module)
        self.alphas, self.step_weights = integration_points(quadrature, steps)
        self.baseline = baseline
        self.steps = steps
        self.quadrature: Quadrature = quadrature
        self.batch_size = _check_batch_size(batch_size)
        self.progress = progress

    def _baseline(self, x: Tensor) -> Tensor:
        baseline = torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device)
        try:
            return baseline.expand(x.shape[1:]).clone()
        except RuntimeError:
            raise GradCAMError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to the input's "
                f"{tuple(x.shape[1:])}"
            ) from None

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> AttributionResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        # Under a caller's inference mode, the sums below must be normal tensors.
        with torch.inference_mode(False):
            return self._explain(_plain_input(x, self.module), targets)

    def _explain(self, x: Tensor, targets: TargetLike | None) -> AttributionResult:
        baseline = self._baseline(x)
        scores, classes, logits = _clean_pass(self.module, x, targets)
        alphas = self.alphas.to(device=x.device, dtype=x.dtype)
        step_weights = self.step_weights.to(device=x.device, dtype=torch.float32)
        batch, count = scores.shape
        attributions = x.new_zeros((batch, count, *x.shape[1:]), dtype=torch.float32)
        baseline_scores = torch.zeros_like(scores)
        with _progress(batch * self.steps, self.progress, "integrated gradients") as bar:
            for b in range(batch):
                columns = fixed_targets(targets, classes[b], b)
                with torch.no_grad(), eval_mode(self.module):
                    base_out = self.module(baseline[None])
                    baseline_scores[b] = resolve_targets(columns, base_out, 1).scores[0].float()
                path = x[b] - baseline
                total = torch.zeros_like(attributions[b])
                for part in _chunks(self.steps, self.batch_size, x.device):
                    points = baseline + alphas[part].view(-1, *(1,) * path.dim()) * path
                    grads = _input_gradients(self.module, points, columns)
                    total += torch.einsum("s,sk...->k...", step_weights[part], grads)
                    bar.update(part.stop - part.start)
                attributions[b] = total * path.float()
        delta = attributions.sum(dim=tuple(range(2, attributions.dim()))) - (
            scores - baseline_scores
        )
        return AttributionResult(
            maps=attributions, scores=scores, classes=classes, logits=logits, delta=delta
        )


@register(
    "smoothgrad",
    title="SmoothGrad",
    kind="pixel",
    needs=Needs(
        forwards="a forward and backward pass per noisy sample and image (in batches)",
        many_passes=True,
    ),
    citation="Smilkov et al. 2017",
    ranks=(1, 2, 3),
)
class SmoothGrad:
    """SmoothGrad (Smilkov, Thorat, Kim, Viégas and Wattenberg, "SmoothGrad: removing noise
    by adding noise", 2017, eq. 3): the input gradient averaged over noisy copies of the image,

    .. math::
        \\hat M^c(x) = \\frac{1}{n} \\sum_{i=1}^{n}
        \\frac{\\partial y^c}{\\partial x}\\big(x + \\mathcal{N}(0, \\sigma^2)\\big)

    (with ``absolute``, the mean of ``|dy^c/dx|``, Captum's ``Saliency`` default).

    The noise is drawn as Captum's ``NoiseTunnel`` draws it (``torch.normal(0, sigma)`` of
    shape (n, C, H, W), sample ``i`` of image ``b`` in row ``i``), from a generator seeded with
    ``seed`` for each image: the map of an image depends on the image and the seed only, not
    on the batch, and for one image it is Captum's ``NoiseTunnel(Saliency(model)).attribute(x,
    nt_type="smoothgrad", nt_samples=n, stdevs=sigma, abs=absolute)`` after
    ``torch.manual_seed(seed)``. The noisy copies go through the engine ``batch_size`` at a
    time, all targets at once; a first no-grad pass of the clean images resolves the targets.

    Args:
        module: the model.
        samples: the number ``n`` of noisy copies per image (the paper uses 50; Captum's
            default is 5).
        stdev: the noise's standard deviation ``sigma`` in the model's input units (Captum's
            ``stdevs``); ``None`` takes 15% of each image's range ``max(x) - min(x)``, the
            middle of the paper's recommended 10-20%.
        seed: the seed of each image's noise; ``None`` draws from torch's global generator.
        absolute: average absolute gradients.
        batch_size: noisy copies per forward and backward pass; ``None`` picks 8 on the CPU and
            32 on an accelerator.
        progress: show a progress bar; ``None`` shows one for runs of more than 200 copies.

    Examples:
        >>> result = SmoothGrad(model, samples=8)(x, gradcam.TopK(1))
        >>> result.classes, result.maps.shape  # (B, K, 3, H, W)
        (tensor([[3]]), torch.Size([1, 1, 3, 128, 128]))
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        samples: int = 50,
        stdev: float | None = None,
        seed: int | None = 0,
        absolute: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.module = check_module(module)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise GradCAMError(f"samples must be a positive integer, got {samples!r}")
        if stdev is not None and not (isinstance(stdev, (int, float)) and stdev >= 0):
            raise GradCAMError(f"stdev must be a number >= 0 or None, got {stdev!r}")
        self.samples = samples
        self.stdev = stdev
        self.seed = seed
        self.absolute = absolute
        self.batch_size = _check_batch_size(batch_size)
        self.progress = progress

    def noise(self, image: Tensor) -> Tensor:
        """The (n, C, H, W) noise added to one (C, H, W) ``image``."""
        sigma = self.stdev
        if sigma is None:
            sigma = 0.15 * float(image.max() - image.min())
        std = torch.full((self.samples, *image.shape), float(sigma), device=image.device)
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=image.device).manual_seed(self.seed)
        return torch.normal(0.0, std, generator=generator).to(image.dtype)

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> AttributionResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        # Under a caller's inference mode, the sums below must be normal tensors.
        with torch.inference_mode(False):
            return self._explain(_plain_input(x, self.module), targets)

    def _explain(self, x: Tensor, targets: TargetLike | None) -> AttributionResult:
        scores, classes, logits = _clean_pass(self.module, x, targets)
        batch, count = scores.shape
        mean = x.new_zeros((batch, count, *x.shape[1:]), dtype=torch.float32)
        with _progress(batch * self.samples, self.progress, "smoothgrad") as bar:
            for b in range(batch):
                columns = fixed_targets(targets, classes[b], b)
                noisy = x[b] + self.noise(x[b])
                for part in _chunks(self.samples, self.batch_size, x.device):
                    grads = _input_gradients(self.module, noisy[part], columns)
                    mean[b] += (grads.abs() if self.absolute else grads).sum(dim=0)
                    bar.update(part.stop - part.start)
        return AttributionResult(
            maps=mean / self.samples, scores=scores, classes=classes, logits=logits, delta=None
        )
