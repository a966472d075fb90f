"""Small helpers that several parts of gradcam share: a bounded cache, warnings shown as the
command line shows them, and loops compiled with numba."""

from __future__ import annotations

import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TextIO, TypeVar

__all__ = ["LRU", "compiled", "warnings_as_messages"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A mapping that forgets its least recently used entries beyond ``size``.

    Not thread-safe by itself: callers that share one hold their own lock around it (the
    demo's sessions do).

    Examples:
        >>> cache: LRU[str, int] = LRU(2)
        >>> cache.put("a", 1); cache.put("b", 2); cache.get("a")
        1
        >>> cache.put("c", 3)  # "b" is now the least recently used: it goes
        >>> cache.get("b") is None, sorted(cache.keys())
        (True, ['a', 'c'])
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"an LRU cache needs a size of at least 1, got {size}")
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value under ``key``, now the most recently used, or ``None``."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key`` as the most recently used; forget the oldest beyond
        ``size``."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def keys(self) -> list[K]:
        """The keys, least recently used first."""
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@contextmanager
def warnings_as_messages(
    prefix: str = "gradcam: warning: ", file: TextIO | None = None
) -> Iterator[None]:
    """Show each warning raised in the block as one line ``prefix + message`` on ``file``
    (standard error by default), without the source line Python would print; every
    ``UserWarning`` is shown, also one seen before. The lines are written when the block
    ends, even when it raises.

    ``warnings.catch_warnings`` is process-wide: use it where one thread runs (a command, a
    server's start-up), not in concurrent callbacks.

    Examples:
        >>> with warnings_as_messages(file=sys.stdout):
        ...     warnings.warn("no weights file given: the model is untrained")
        gradcam: warning: no weights file given: the model is untrained
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            for warning in caught:
                print(f"{prefix}{warning.message}", file=file or sys.stderr)


def compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` compiled by numba in nopython mode, releasing the GIL, and cached on disk
    (beside its module, or in the user's cache folder) so that it compiles once per install.

    Where no cache can be written (a read-only install and no writable home) it is compiled
    in every process instead of failing. numba is imported only here, when a module that uses
    it is imported: ``import gradcam`` does not load it.

    Examples:
        >>> @compiled
        ... def total(values):
        ...     result = 0.0
        ...     for value in values:
        ...         result += value
        ...     return result
        >>> import numpy as np
        >>> total(np.arange(4.0))
        6.0
    """
    import numba

    try:
        return numba.njit(cache=True, nogil=True)(function)  # type: ignore[no-any-return]
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)  # type: ignore[no-any-return]
