"""What does adversarial noise do to the explanation? (section 6.2, Fig. 7)

:func:`attack` runs a targeted iterative attack (projected sign-gradient descent, the
L-infinity PGD of Madry et al. 2018 without a random start, as Kurakin et al.'s iterative
method) on the model's input **before** normalization, in 0-255 pixel units::

    x_{t+1} = clip_{[0, 255] and |x - x_0| <= eps}( x_t - step * sign(d CE(f(x_t), target) / dx_t) )

With an integer ``step`` and budget ``eps``, every iterate is an integer image, so the
adversarial image the criterion was checked on is exactly the lossless PNG that is saved. The
attack stops as soon as the target's probability exceeds ``confidence`` (the paper's 0.9999)
and none of the ``present`` classes is in the top 5, or when ``max_steps`` are spent
(:attr:`AttackResult.success` is then ``False``). Each iteration costs one forward and one
backward pass; the criterion is read from the same forward.

Why not ``captum.robust.PGD``: it runs a fixed number of steps with no stopping criterion,
and its iterates are not kept on the 0-255 integer grid, so the image it returns, once saved,
is not the image that fooled the model. Calling it a few steps at a time would move the
centre of its L-infinity ball at each call.

:func:`diagnose_adversarial` adds Grad-CAM for the originally present classes and for the
adversarial top-2 on the adversarial image, and writes everything to a folder.

Examples:
    >>> from gradcam import load_model
    >>> from gradcam.synthetic import make_scene
    >>> loaded = load_model("shapes")
    >>> star = make_scene(0, shapes=["star"]).image
    >>> result = attack(loaded, star, "circle", present=["star"], epsilon=32, max_steps=300,
    ...                 confidence=0.99)
    >>> result.success, loaded.class_names[result.after[0][0]], result.linf <= 32
    (True, 'circle', True)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from gradcam.checks import check_number
from gradcam.diagnose.report import HtmlReport
from gradcam.engine import check_input
from gradcam.errors import GradCAMError
from gradcam.images import _FILTERS
from gradcam.layers import resolve_layer
from gradcam.methods import CAMResult, explain_methods
from gradcam.methods.registry import GRAD_CAM
from gradcam.models import LoadedModel
from gradcam.outputs import output_folder, write_atomic
from gradcam.targets import as_logits
from gradcam.viz import overlay

__all__ = [
    "MAX_STEPS",
    "AttackResult",
    "attack",
    "check_attack",
    "diagnose_adversarial",
    "perturbation_image",
    "psnr",
]


@dataclass(frozen=True)
class AttackResult:
    """A finished attack.

    Attributes:
        original: the photo at the model's input size (what the model saw).
        adversarial: the adversarial image, same size, 8-bit RGB.
        target: the class the attack pushed towards.
        present: the classes that had to leave the top 5.
        epsilon: the L-infinity budget in 0-255 pixel units.
        confidence: the target probability the attack had to exceed.
        steps: the iterations taken.
        success: the criterion was met (otherwise the budget was spent).
        linf: the largest change of any pixel value, 0-255.
        psnr: peak signal-to-noise ratio of the adversarial image in dB (``None``: identical).
        before: the top 5 ``(class, probability)`` on the original.
        after: the top 5 ``(class, probability)`` on the adversarial image.
    """

    original: Image.Image
    adversarial: Image.Image
    target: int
    present: tuple[int, ...]
    epsilon: int
    confidence: float
    steps: int
    success: bool
    linf: float
    psnr: float | None
    before: tuple[tuple[int, float], ...]
    after: tuple[tuple[int, float], ...]


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Peak signal-to-noise ratio of two 8-bit images: ``10 log10(255^2 / MSE)`` dB, or
    ``None`` when they are identical (infinite).

    Examples:
        >>> psnr(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))
        0.0
    """
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _resized(loaded: LoadedModel, image: Image.Image) -> Image.Image:
    """The photo resized as the model's preprocessing resizes it: normalizing this image
    gives exactly the model's input."""
    height, width = loaded.preprocess.input_size(image.width, image.height)
    filter_ = _FILTERS[loaded.preprocess.interpolation]
    return image.convert("RGB").resize((width, height), filter_)


def _top5(probs: Tensor) -> tuple[tuple[int, float], ...]:
    values, classes = probs.topk(min(5, probs.numel()))
    return tuple((int(c), float(v)) for c, v in zip(classes, values, strict=True))


#: The most iterations an attack may take (each is one forward and one backward pass).
MAX_STEPS = 10_000


def check_attack(
    loaded: LoadedModel,
    target: int | str,
    present: Sequence[int | str] | None = None,
    *,
    epsilon: int = 8,
    step: int = 1,
    max_steps: int = 200,
    confidence: float = 0.9999,
) -> tuple[int, tuple[int, ...] | None]:
    """Check an attack's settings before any work: the target's class index and the
    ``present`` classes' (``None``: the original top 2, known after the first pass).

    Raises:
        GradCAMError: an unknown class; ``epsilon`` or ``step`` not an integer in 1..255
            (0-255 pixel units); ``max_steps`` not an integer in 0..:data:`MAX_STEPS`;
            ``confidence`` not a probability in [0, 1] (1: never met, all steps run); or the
            target among the ``present`` classes (it cannot both win and leave the top 5).

    Examples:
        >>> from gradcam import load_model
        >>> check_attack(load_model("shapes"), "circle", ["star"])
        (0, (3,))
        >>> check_attack(load_model("shapes"), "circle", confidence=2)
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: confidence must be a number between 0 and 1, got 2
    """
    check_number("epsilon", epsilon, 1, 255, integer=True, unit=" pixel units (0-255)")
    check_number("step", step, 1, 255, integer=True, unit=" pixel units (0-255)")
    check_number("max_steps", max_steps, 0, MAX_STEPS, integer=True)
    # 1 is allowed: p > 1 never holds, so the attack runs all max_steps (as benchmarks do).
    check_number("confidence", confidence, 0, 1)
    goal = loaded.class_index(target)
    if present is None:
        return goal, None
    evict = tuple(dict.fromkeys(loaded.class_index(c) for c in present))
    if goal in evict:
        raise GradCAMError(
            f"the target {loaded.class_names[goal]!r} is also a present class, one that must "
            "leave the top 5: choose another target or drop it from the present classes"
        )
    return goal, evict


def attack(
    loaded: LoadedModel,
    image: Image.Image,
    target: int | str,
    *,
    present: Sequence[int | str] | None = None,
    epsilon: int = 8,
    step: int = 1,
    max_steps: int = 200,
    confidence: float = 0.9999,
) -> AttackResult:
    """Attack ``image`` towards ``target``; see the module docstring.

    Args:
        loaded: the model (:func:`gradcam.load_model`); it is left unchanged.
        image: the photo.
        target: the class to reach, by index or name.
        present: the classes that must leave the top 5 (default: the original top 2).
        epsilon: L-infinity budget in 0-255 pixel units (an integer in 1..255).
        step: change per iteration in pixel units (an integer in 1..255).
        max_steps: iterations at most (0..:data:`MAX_STEPS`).
        confidence: the target probability to exceed, in [0, 1] (1: never, all steps run).

    Raises:
        GradCAMError: the settings :func:`check_attack` refuses.
    """
    goal, wanted_out = check_attack(
        loaded, target, present, epsilon=epsilon, step=step, max_steps=max_steps,
        confidence=confidence,
    )  # fmt: skip
    shown = _resized(loaded, image)
    module = loaded.module
    start = check_input(torch.zeros(1, 3, 1, 1), module)  # the model's device and dtype
    pixels = torch.from_numpy(np.asarray(shown, dtype=np.float32).copy()).permute(2, 0, 1)
    x0 = pixels.unsqueeze(0).to(device=start.device, dtype=start.dtype)
    mean = torch.tensor(loaded.preprocess.mean, dtype=x0.dtype, device=x0.device).view(1, 3, 1, 1)
    std = torch.tensor(loaded.preprocess.std, dtype=x0.dtype, device=x0.device).view(1, 3, 1, 1)
    low, high = (x0 - epsilon).clamp(min=0), (x0 + epsilon).clamp(max=255)
    wanted = torch.tensor([goal], device=x0.device)
    x = x0.clone()
    before: tuple[tuple[int, float], ...] = ()
    evict: list[int] = []
    taken, success = 0, False
    with torch.enable_grad():
        while True:
            x.requires_grad_(True)
            logits = as_logits(module((x / 255.0 - mean) / std)).float()
            probs = logits.detach().softmax(-1)[0].cpu()
            if not before:
                before = _top5(probs)
                if wanted_out is None:  # the original top 2, less the target
                    evict = [c for c, _ in before[:2] if c != goal]
                else:
                    evict = list(wanted_out)
            top = {c for c, _ in _top5(probs)}
            if float(probs[goal]) > confidence and not top.intersection(evict):
                success = True
                break
            if taken == max_steps:
                break
            loss = F.cross_entropy(logits, wanted)
            # Only the input's gradient: the model's parameter .grad stay untouched.
            (gradient,) = torch.autograd.grad(loss, x)
            x = torch.minimum(torch.maximum(x.detach() - step * gradient.sign(), low), high)
            taken += 1
    after = _top5(probs)
    final = x.detach()[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    original = np.asarray(shown, dtype=np.uint8)
    return AttackResult(
        original=shown,
        adversarial=Image.fromarray(final),
        target=goal,
        present=tuple(evict),
        epsilon=epsilon,
        confidence=confidence,
        steps=taken,
        success=success,
        linf=float(np.abs(final.astype(np.int16) - original.astype(np.int16)).max()),
        psnr=psnr(final, original),
        before=before,
        after=after,
    )


def perturbation_image(result: AttackResult) -> Image.Image:
    """The perturbation amplified to the full range: mid-gray is no change, and the budget
    ``epsilon`` in either direction is black or white."""
    delta = np.asarray(result.adversarial, np.float32) - np.asarray(result.original, np.float32)
    amplified = 127.5 + delta * (127.5 / result.epsilon)
    return Image.fromarray(np.clip(amplified + 0.5, 0, 255).astype(np.uint8))


def _save(picture: Image.Image, path: Path) -> None:
    write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))


def _gradcam(
    loaded: LoadedModel, image: Image.Image, classes: list[int], layer: str | None
) -> CAMResult:
    x = loaded.preprocess(image)
    found = explain_methods([GRAD_CAM], loaded.module, x, [*classes], layer=layer)
    result = found[GRAD_CAM]
    assert isinstance(result, CAMResult)
    return result


def diagnose_adversarial(
    loaded: LoadedModel,
    image: Image.Image,
    target: int | str,
    out: str | os.PathLike[str],
    *,
    layer: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Attack ``image`` (see :func:`attack`, whose keyword ``options`` it takes), explain the
    originally present classes and the adversarial top 2 with Grad-CAM on the adversarial
    image, and write to ``out``: ``original.png``, ``adversarial.png`` (lossless),
    ``perturbation.png`` (amplified), ``gradcam_*.png``, ``summary.json`` and
    ``report.html``. Grad-CAM uses ``layer`` (default: the model's). Returns the summary.

    The settings (:func:`check_attack`), the layer and ``out``
    (:func:`gradcam.outputs.output_folder`) are checked before the attack; files are written
    atomically.

    Raises:
        GradCAMError: a setting :func:`check_attack` refuses, an unknown layer, or an ``out``
            that cannot be a folder.
    """
    check_attack(loaded, target, **options)
    resolve_layer(loaded.module, layer or loaded.default_layer)
    folder = output_folder(out)  # before the attack, not after it
    result = attack(loaded, image, target, **options)
    _save(result.original, folder / "original.png")
    _save(result.adversarial, folder / "adversarial.png")
    _save(perturbation_image(result), folder / "perturbation.png")
    names = loaded.class_names
    adversarial_top2 = [c for c, _ in result.after[:2]]
    explained = list(dict.fromkeys([*result.present, *adversarial_top2]))
    after = _gradcam(loaded, result.adversarial, explained, layer)
    before = None
    if result.present:
        before = _gradcam(loaded, result.original, list(result.present), layer)
    x = loaded.preprocess(result.adversarial)
    with torch.no_grad():
        probs = as_logits(loaded.module(check_input(x, loaded.module))).float().softmax(-1)[0]
    pictures: list[tuple[str, Image.Image]] = []
    maps: list[dict[str, Any]] = []
    for k, c in enumerate(explained):
        picture = overlay(result.adversarial, after.raw[0, k])
        role = "present" if c in result.present else "adversarial top-2"
        file = f"gradcam_adversarial_{c}.png"
        _save(picture, folder / file)
        pictures.append((f"{names[c]} ({role}) p={float(probs[c]):.2g}", picture))
        maps.append({"class": c, "name": names[c], "role": role, "prob": float(probs[c])})
        maps[-1]["file"] = file
    summary = {
        "target": result.target,
        "target_name": names[result.target],
        "success": result.success,
        "steps": result.steps,
        "epsilon": result.epsilon,
        "confidence": result.confidence,
        "linf": result.linf,
        "psnr": result.psnr,
        "top5_before": [{"class": c, "name": names[c], "prob": p} for c, p in result.before],
        "top5_after": [{"class": c, "name": names[c], "prob": p} for c, p in result.after],
        "present": list(result.present),
        "maps": maps,
    }
    text = json.dumps(summary, indent=2) + "\n"
    write_atomic(folder / "summary.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    _write_report(folder, result, names, pictures, before)
    return summary


def _write_report(
    folder: Path,
    result: AttackResult,
    names: Sequence[str],
    pictures: list[tuple[str, Image.Image]],
    before: CAMResult | None,
) -> None:
    """``report.html``: the attack's outcome, the images, the top 5 before and after, and
    Grad-CAM on the adversarial image (and of the present classes on the original)."""
    with HtmlReport(folder / "report.html", "gradcam diagnose adversarial") as report:
        verdict = (
            f"reached {names[result.target]} with p > {result.confidence} and the present "
            f"classes out of the top 5 in {result.steps} steps"
            if result.success
            else f"budget spent: {result.steps} steps at epsilon {result.epsilon} did not reach "
            "the criterion"
        )
        report.paragraph(
            f"Attack: {verdict}; L-inf {result.linf:.0f}/255, PSNR "
            + ("inf" if result.psnr is None else f"{result.psnr:.1f} dB")
        )
        report.figure(
            [
                ("original", result.original),
                ("adversarial", result.adversarial),
                ("perturbation (amplified)", perturbation_image(result)),
            ]
        )
        report.heading("Top 5 before and after")
        report.table(
            [
                {
                    "rank": r + 1,
                    "before": f"{names[b[0]]} {b[1]:.4f}",
                    "after": f"{names[a[0]]} {a[1]:.4f}",
                }
                for r, (b, a) in enumerate(zip(result.before, result.after, strict=True))
            ]
        )
        report.heading("Grad-CAM on the adversarial image")
        report.figure(pictures)
        if before is not None:
            report.heading("Grad-CAM of the present classes on the original")
            report.figure(
                [
                    (names[c], overlay(result.original, before.raw[0, k]))
                    for k, c in enumerate(result.present)
                ]
            )
