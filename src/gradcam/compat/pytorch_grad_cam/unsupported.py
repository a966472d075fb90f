"""pytorch-grad-cam's classes that gradcam's registry has no method for: each raises
``NotImplementedError`` naming itself when built, rather than computing something else."""

from __future__ import annotations

from typing import Any

__all__ = ["Unsupported"]


class Unsupported:
    """Base of a pytorch-grad-cam class without a gradcam method: building it raises."""

    reason = "gradcam's method registry has no such method yet"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__}: {self.reason}")
