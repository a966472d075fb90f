"""The thresholds ``T_k``: streamed exactly, equal to ``torch.quantile`` for any chunking (which
rounds its rank and weight to float32: to 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcam.dissect import TopValues, top_quantile


@pytest.mark.parametrize("quantile", [0.005, 0.1, 0.5, 0.999])
@pytest.mark.parametrize("splits", [[1000], [1, 999], [300, 300, 400], [7] * 142 + [6]])
def test_top_quantile_equals_torch_quantile(quantile: float, splits: list[int]) -> None:
    torch.manual_seed(0)
    values = torch.randn(3, sum(splits))
    values[1] = values[1].round()  # ties
    values[2, ::2] = 0.0  # a ReLU's zeros
    chunks = iter(values.split(splits, dim=1))
    expected = torch.quantile(values, 1 - quantile, dim=1)
    assert torch.allclose(top_quantile(chunks, values.shape[1], quantile), expected, rtol=1e-6)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_blocks_of_maps_equal_the_quantile_of_every_position(batch: int) -> None:
    # (B, C, h, w) blocks as dissection folds them: no transposition to (C, n) needed.
    torch.manual_seed(1)
    maps = torch.randn(37, 4, 5, 6).relu()
    top = TopValues(4, 37 * 30, 0.005)
    for i in range(0, 37, batch):
        top.add(maps[i : i + batch].numpy())
    every = maps.transpose(0, 1).reshape(4, -1)
    assert torch.allclose(top.quantile(), torch.quantile(every, 0.995, dim=1), rtol=1e-6)
    # The same chunks in any grouping give the same values exactly.
    whole = TopValues(4, 37 * 30, 0.005)
    whole.add(maps.numpy())
    assert torch.equal(top.quantile(), whole.quantile())


def test_few_values_keep_them_all() -> None:
    # total 1: the only value; total 2 at the median: halfway between both.
    one = TopValues(2, 1, 0.5)
    one.add(np.array([[[3.0], [-1.0]]], dtype=np.float32))
    assert one.quantile().tolist() == [3.0, -1.0]
    two = TopValues(1, 2, 0.5)
    two.add(np.array([[[1.0, 4.0]]], dtype=np.float32))
    assert two.quantile().tolist() == [2.5]


def test_exception_wrong_count() -> None:
    with pytest.raises(ValueError, match="got 3"):
        top_quantile(iter([torch.zeros(1, 3)]), 10)
    with pytest.raises(ValueError, match="no values"):
        top_quantile(iter([]), 0)
    top = TopValues(1, 4)
    top.add(np.zeros((1, 1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="expected 4 values per channel, got 5"):
        top.quantile()
