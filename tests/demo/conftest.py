"""Fixtures shared by the demo's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import gradcam


@pytest.fixture()
def forward_count(lite0: gradcam.LoadedModel) -> Iterator[list[int]]:
    """Counts forward passes of the shared model while a test runs."""
    calls = [0]

    def count(*_: object) -> None:
        calls[0] += 1

    handle = lite0.module.register_forward_hook(count)
    try:
        yield calls
    finally:
        handle.remove()
