"""Count the lock acquisitions of one Grad-CAM call on ResNet-50 (224 px, batch 1).

Every lock that :mod:`gradcam.hooks` makes (or keeps at module level) is replaced by one that
counts its acquisitions; the model is given its locks by a first call, then one more call is
counted. Run from the repository root (no network; random weights)::

    .venv/bin/python benchmarks/count_locks.py

It prints one line, ``acquisitions per call: N``. With one lock per submodule (before issue
29) it printed 304: ResNet-50's 151 modules, locked by the engine's block and again by
:func:`gradcam.hooks.eval_mode`, and the guard of the locks' table twice; with one lock per
model it prints 2.
"""

from __future__ import annotations

import threading
import types
from typing import Any

import torch
import torchvision

import gradcam
import gradcam.hooks as hooks


class Counting:
    """A lock that counts how often it is acquired."""

    total = 0

    def __init__(self, lock: Any) -> None:
        self.lock = lock

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        Counting.total += 1
        return bool(self.lock.acquire(*args, **kwargs))

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def count_locks() -> int:
    """Lock acquisitions of the second Grad-CAM call on a fresh ResNet-50 (the first gives
    the model its locks)."""
    patched = types.SimpleNamespace(**vars(threading))
    patched.RLock = lambda: Counting(threading.RLock())
    patched.Lock = lambda: Counting(threading.Lock())
    hooks.threading = patched  # type: ignore[assignment]
    for name, value in list(vars(hooks).items()):  # module-level guards
        if isinstance(value, type(threading.Lock())):
            setattr(hooks, name, Counting(value))
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cam = gradcam.GradCAM(model, "layer4")
    cam(x, [1])
    before = Counting.total
    cam(x, [1])
    return Counting.total - before


def main() -> None:
    """Print the count."""
    torch.set_num_threads(1)
    print(f"acquisitions per call: {count_locks()}")


if __name__ == "__main__":
    main()
