"""Network Dissection's thresholds ``T_k``: each unit's top quantile over every activation of
every concept image, exact and streamed.

``T_k`` is the ``1 - q`` quantile of unit ``k``'s ``total`` activations (``q = 0.005``: the top
0.5%), with linear interpolation between order statistics, as ``torch.quantile`` computes it:
at ``p = (1 - q) (total - 1)``, ``T_k = v_(lo) + (p - lo) (v_(lo + 1) - v_(lo))`` where
``lo = floor(p)`` and ``v_(i)`` is the ``i``-th smallest value (from 0). Only the largest
``m = total - lo`` values per unit can be ``v_(lo)`` or above, so a min-heap of ``m`` values per
unit is all that is kept (a few MB for Broden), folded a block of maps at a time by a loop that
numba compiles once (cached on disk) and that runs without the GIL: a value not above the
heap's least is dropped after one comparison, and the maps need not be transposed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from gradcam.util import compiled

__all__ = ["QUANTILE", "TopValues", "top_quantile"]

QUANTILE = 0.005
"""Bau et al.'s top quantile: ``T_k`` is exceeded by 0.5% of a unit's activations."""


@compiled
def _fold(heaps: np.ndarray, sizes: np.ndarray, values: np.ndarray) -> None:  # pragma: no cover
    """Fold ``values`` (B, C, n) into each unit's min-heap ``heaps[k, :sizes[k]]``, which keeps
    the largest ``heaps.shape[1]`` values seen."""
    keep = heaps.shape[1]
    for b in range(values.shape[0]):
        for k in range(values.shape[1]):
            heap, size, row = heaps[k], sizes[k], values[b, k]
            start = 0
            while size < keep and start < row.shape[0]:  # filling: sift each value up
                value = row[start]
                start += 1
                i = size
                size += 1
                while i > 0 and heap[(i - 1) // 2] > value:
                    heap[i] = heap[(i - 1) // 2]
                    i = (i - 1) // 2
                heap[i] = value
            sizes[k] = size
            if size < keep:
                continue
            least = heap[0]
            for j in range(start, row.shape[0]):
                value = row[j]
                if value > least:  # replaces the least kept value: sift it down
                    i = 0
                    while 2 * i + 1 < keep:
                        child = 2 * i + 1
                        if child + 1 < keep and heap[child + 1] < heap[child]:
                            child += 1
                        if heap[child] >= value:
                            break
                        heap[i] = heap[child]
                        i = child
                    heap[i] = value
                    least = heap[0]


class TopValues:
    """The streamed state of :func:`top_quantile`: each unit's largest ``m`` values so far.

    Args:
        channels: the number of units ``C``.
        total: how many values each unit will have in all.
        quantile: the top quantile ``q``.

    Examples:
        >>> top = TopValues(channels=1, total=5, quantile=0.25)
        >>> top.add(np.array([[[1.0, 5.0]]], dtype=np.float32))  # (B, C, n) blocks
        >>> top.add(np.array([[[3.0, 2.0, 4.0]]], dtype=np.float32))
        >>> top.quantile()  # p = 0.75 * 4 = 3: the 4th smallest value
        tensor([4.])
    """

    def __init__(self, channels: int, total: int, quantile: float = QUANTILE) -> None:
        if total < 1:
            raise ValueError("no values to take a quantile of")
        position = (1.0 - quantile) * (total - 1)
        lower = math.floor(position)
        self.fraction = position - lower
        self.total = total
        self.seen = 0
        self.heaps = np.empty((channels, total - lower), dtype=np.float32)
        self.sizes = np.zeros(channels, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        """Fold a block (B, C, ...) of every unit's values (float32) into the kept ones."""
        block = np.ascontiguousarray(values, dtype=np.float32)
        block = block.reshape(block.shape[0], block.shape[1], -1)
        _fold(self.heaps, self.sizes, block)
        self.seen += block.shape[0] * block.shape[2]

    def quantile(self) -> Tensor:
        """(C,) ``T_k``; every unit's ``total`` values must have been added.

        Raises:
            ValueError: fewer or more values were added than ``total``.
        """
        if self.seen != self.total:
            raise ValueError(f"expected {self.total} values per channel, got {self.seen}")
        heaps = torch.from_numpy(self.heaps)
        low = heaps[:, 0]  # the m-th largest
        if heaps.shape[1] < 2:
            return low.clone()
        # The (m - 1)-th largest is the least of the root's children.
        following = heaps[:, 1] if heaps.shape[1] == 2 else heaps[:, 1:3].amin(dim=1)
        return low + self.fraction * (following - low)


def top_quantile(values: Iterator[Tensor], total: int, quantile: float = QUANTILE) -> Tensor:
    """Per channel, the ``1 - quantile`` quantile of ``total`` values streamed in chunks.

    ``values`` yields (C, n_i) chunks whose n_i sum to ``total``. Exact: the linear
    interpolation between the order statistics at ``p = (1 - quantile) * (total - 1)``, as
    ``torch.quantile(all_values, 1 - quantile, dim=1)`` (which rounds ``p`` and its weight to
    float32: equal to 1e-6; it also refuses more than 2^24 values), keeping only the largest
    ``m = total - floor(p)`` values per channel in memory (:class:`TopValues`).

    Raises:
        ValueError: the chunks do not hold ``total`` values per channel.

    Examples:
        >>> chunks = iter([torch.tensor([[1.0, 5.0]]), torch.tensor([[3.0, 2.0, 4.0]])])
        >>> top_quantile(chunks, 5, 0.25)
        tensor([4.])
    """
    if total < 1:
        raise ValueError("no values to take a quantile of")
    top: TopValues | None = None
    for chunk in values:
        top = top or TopValues(chunk.shape[0], total, quantile)
        top.add(chunk.detach().float().cpu().numpy()[None])
    if top is None:
        raise ValueError(f"expected {total} values per channel, got 0")
    return top.quantile()
