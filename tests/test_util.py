"""The shared small helpers: the bounded cache and warnings shown as one-line messages."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
from PIL import Image

from gradcam.util import LRU, compiled, warnings_as_messages


def test_lru_forgets_the_least_recently_used() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and "b" not in cache
    assert cache.keys() == ["a", "c"] and len(cache) == 2
    cache.put("a", 10)  # an update refreshes too
    cache.put("d", 4)
    assert cache.keys() == ["a", "d"] and cache.get("a") == 10
    cache.clear()
    assert len(cache) == 0 and cache.get("a") is None


def test_lru_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LRU(0)


def test_the_demo_sessions_share_the_public_cache() -> None:
    import gradcam.demo.session as session
    import gradcam.demo.vl as vl

    assert not hasattr(session, "_LRU")
    assert vl.LRU is LRU


def test_warnings_become_one_line_each_and_repeats_are_shown() -> None:
    out = io.StringIO()
    for _ in range(2):
        with warnings_as_messages(file=out):
            warnings.warn("weights are random", stacklevel=1)
    assert out.getvalue() == "gradcam: warning: weights are random\n" * 2


def test_warnings_are_shown_even_when_the_block_raises() -> None:
    out = io.StringIO()
    with pytest.raises(KeyError), warnings_as_messages(prefix="x: ", file=out):
        warnings.warn("first", stacklevel=1)
        raise KeyError("then a failure")
    assert out.getvalue() == "x: first\n"


def test_explain_shows_the_untrained_model_warning_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradcam.cli import main

    Image.new("RGB", (64, 64), "gray").save(tmp_path / "gray.png")
    code = main(
        [
            "explain",
            str(tmp_path / "gray.png"),
            "--model",
            "resnet18",
            "--weights",
            "random",
            "--out",
            str(tmp_path),
        ]
    )
    lines = capsys.readouterr().err.splitlines()
    assert code == 0
    warned = [line for line in lines if line.startswith("gradcam: warning:")]
    assert len(warned) == 1 and "resnet18" in warned[0]


def test_compiled_without_a_cache_location_still_compiles() -> None:
    # A function whose file does not exist (as in a read-only install without a writable
    # home, numba finds nowhere to cache it): numba refuses to cache, compiled() compiles.
    namespace: dict[str, object] = {}
    exec("def double(values):\n    return values * 2\n", namespace)
    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(namespace["double"])
    double = compiled(namespace["double"])
    assert double(np.arange(3)).tolist() == [0, 2, 4]
