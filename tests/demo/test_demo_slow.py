"""Slow methods in the demo: one at a time, on their own copy of the model, bounded in passes,
and never in the way of a Grad-CAM request (issue 30, item 7)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import gradcam.demo.session as session_module
from gradcam import load_model
from gradcam.demo.app import build_app
from gradcam.demo.session import SLOW_NOTE, DemoSession, heatmap_choices, is_slow
from gradcam.errors import GradCAMError


@pytest.fixture
def shapes(tmp_path: Path) -> Iterator[DemoSession]:
    session = DemoSession(load_model("shapes"), folder=tmp_path / "downloads")
    yield session
    session.close()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "noise.png"
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)  # every channel active: Score-CAM masks each one
    return path


def test_grad_cam_answers_while_a_slow_method_runs(
    shapes: DemoSession, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow request that never ends (held here) must not keep Grad-CAM from answering; a
    second slow request is refused at once rather than holding a server worker."""
    inside, release = threading.Event(), threading.Event()
    library = session_module.explain_image

    def held(loaded: Any, image: Any, **request: Any) -> Any:
        if is_slow(request["methods"][0]):
            inside.set()
            release.wait(60)
        return library(loaded, image, **request)

    monkeypatch.setattr(session_module, "explain_image", held)
    slow = threading.Thread(target=shapes.explain, args=(photo,), kwargs={"method": "score-cam"})
    slow.start()
    try:
        assert inside.wait(60)
        answered: list[Any] = []
        fast = threading.Thread(target=lambda: answered.append(shapes.explain(photo)))
        fast.start()
        fast.join(60)
        assert answered and answered[0].method == "gradcam"
        with pytest.raises(GradCAMError, match="slow methods run one at a time"):
            shapes.explain(photo, "cross", method="score-cam")
    finally:
        release.set()
        slow.join(60)
    assert shapes.explain(photo, method="score-cam").method == "score-cam"  # the lane is free


def test_a_slow_request_stops_at_the_pass_limit(
    shapes: DemoSession, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "MAX_SLOW_PASSES", 5)
    with pytest.raises(GradCAMError, match="Score-CAM needs more than 5 model passes here"):
        shapes.explain(photo, method="score-cam")
    assert not shapes.loaded.module._forward_pre_hooks  # the counter is gone, and never on
    assert shapes.explain(photo).method == "gradcam"  # the visitors' model


def test_the_page_marks_the_slow_methods() -> None:
    slow = [name for name in heatmap_choices() if is_slow(name)]
    assert slow and not is_slow("gradcam")
    session = DemoSession(load_model("shapes"))
    try:
        page = str(build_app(session).config)
    finally:
        session.close()
    assert SLOW_NOTE in page and page.count("(slow)") >= len(slow)
