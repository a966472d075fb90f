"""Two threads explaining one shared model get their own maps and leave the model as it was."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch
from helpers.state import assert_unchanged, snapshot
from torch import Tensor, nn

import gradcam
from gradcam.methods import create_method

CALLS = 60  # per thread


def _net() -> nn.Module:
    """A small CNN in *train* mode: BatchNorm's running statistics would move on any forward
    pass gradcam ran with the flags of another thread's call."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).train()


def _images(seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, 16, 16, generator=generator) for _ in range(4)]


def _run_threads(work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def body(index: int) -> None:
        start.wait()
        try:
            work(index)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return errors


@pytest.mark.parametrize("method", ["gradcam", "guided-gradcam", "score-cam"])
def test_two_threads_on_one_model_get_their_own_maps(method: str) -> None:
    model = _net()
    before = snapshot(model)
    images = {0: _images(1), 1: _images(2)}
    # Each thread builds its own method with the default layer: resolving it runs a forward
    # pass with hooks on every module, which must not meet the other thread's calls either.
    expected = {
        t: [create_method(method, model, None)(x, [t + 1]).maps for x in images[t]] for t in (0, 1)
    }
    assert_unchanged(before, model)
    got: dict[int, list[tuple[int, Tensor]]] = {0: [], 1: []}

    def work(t: int) -> None:
        explain = create_method(method, model, None)
        for i in range(CALLS):
            k = i % len(images[t])
            got[t].append((k, explain(images[t][k], [t + 1]).maps))

    errors = _run_threads(work)
    assert not errors, errors[0]
    for t in (0, 1):
        assert len(got[t]) == CALLS
        for k, maps in got[t]:
            torch.testing.assert_close(maps, expected[t][k], rtol=0, atol=1e-6)
    assert_unchanged(before, model)


def test_threads_on_two_wrappers_of_one_model_take_turns() -> None:
    """A wrapper per call (as the VL adapters are) shares the wrapped model's modules, and so
    its locks."""
    model = _net()
    before = snapshot(model)
    images = {0: _images(3), 1: _images(4)}

    def wrapped() -> nn.Module:
        return nn.Sequential(nn.Identity(), model)

    expected = {t: [gradcam.GradCAM(wrapped(), "1.3")(x).maps for x in images[t]] for t in (0, 1)}
    got: dict[int, list[tuple[int, Tensor]]] = {0: [], 1: []}

    def work(t: int) -> None:
        for i in range(CALLS):
            k = i % len(images[t])
            got[t].append((k, gradcam.GradCAM(wrapped(), "1.3")(images[t][k]).maps))

    errors = _run_threads(work)
    assert not errors, errors[0]
    for t in (0, 1):
        for k, maps in got[t]:
            torch.testing.assert_close(maps, expected[t][k], rtol=0, atol=1e-6)
    assert_unchanged(before, model)
