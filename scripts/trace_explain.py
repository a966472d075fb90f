"""Count what one ``gradcam`` command does on its way to the engine.

Counted: method lookups (``method_spec``), layer resolutions (``resolve_layer``, a layer
resolved already only confirmed), default-layer probes (``find_default_layer``, a forward
pass of a blank image), input checks (``check_input``) and forward passes of the loaded
model.

    .venv/bin/python scripts/trace_explain.py explain src/gradcam/data/cat_and_coffee.jpg \\
        --method gradcam++ --out /tmp/trace

Prints each count (zeros too), then the command's exit code; docs/how-it-works.md quotes
them (with ``--method gradcam++``: 1 method lookup and 1 input check, at the boundary;
``compute_gradients`` is told the input is checked).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import pkgutil
import sys
from collections.abc import Callable
from typing import Any

import gradcam
import gradcam.engine
import gradcam.layers
import gradcam.methods.registry
import gradcam.models
from gradcam.cli import main

COUNTS: collections.Counter[str] = collections.Counter()
KEYS = (
    "method lookups",
    "layer resolutions",
    "default-layer probes",
    "input checks",
    "forward passes",
)


def _replace(original: Callable[..., Any], wrapper: Callable[..., Any]) -> None:
    """Put ``wrapper`` wherever a gradcam module holds ``original`` under its name."""
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if name.startswith("gradcam") and getattr(module, original.__name__, None) is original:
            setattr(module, original.__name__, wrapper)


def _count(original: Callable[..., Any], key: str) -> None:
    @functools.wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        COUNTS[key] += 1
        return original(*args, **kwargs)

    _replace(original, counted)


def _count_forwards(original: Callable[..., Any]) -> None:
    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        loaded = original(*args, **kwargs)
        loaded.module.register_forward_pre_hook(lambda *_: COUNTS.update(["forward passes"]))
        return loaded

    _replace(original, load)


def run(argv: list[str]) -> int:
    for info in pkgutil.walk_packages(gradcam.__path__, "gradcam."):
        with contextlib.suppress(Exception):  # optional extras that are not installed
            importlib.import_module(info.name)
    _count(gradcam.methods.registry.method_spec, "method lookups")
    _count(gradcam.layers.resolve_layer, "layer resolutions")
    _count(gradcam.layers.find_default_layer, "default-layer probes")
    _count(gradcam.engine.check_input, "input checks")
    _count_forwards(gradcam.models.load_model)
    code = main(argv)
    # Every count, zeros included, in the order of docs/how-it-works.md's table.
    for key in KEYS:
        print(f"{key}: {COUNTS[key]}")
    print(f"exit code: {code}")
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
