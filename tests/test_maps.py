"""Post-processing on hand-made maps with known answers."""

from __future__ import annotations

import numpy as np
import torch

from gradcam.maps import bounding_box, normalize, peak, upsample


def test_box_takes_largest_segment_not_the_one_with_the_max() -> None:
    m = torch.zeros(20, 20)
    m[2:4, 2:4] = 1.0  # small blob with the maximum
    m[10:18, 5:15] = 0.6  # large blob
    assert bounding_box(m) == (5, 10, 14, 17)
    assert peak(m) == (2, 2)


def test_box_at_image_edge() -> None:
    m = torch.zeros(10, 12)
    m[6:, 9:] = 1.0
    assert bounding_box(m) == (9, 6, 11, 9)


def test_box_threshold_is_relative_to_max() -> None:
    m = torch.zeros(10, 10)
    m[4, 4] = 1.0
    m[4, 5:9] = 0.2
    assert bounding_box(m, threshold=0.15) == (4, 4, 8, 4)
    assert bounding_box(m, threshold=0.5) == (4, 4, 4, 4)


def test_box_diagonal_pixels_connect() -> None:
    m = np.zeros((5, 5))
    m[0, 0] = m[1, 1] = m[2, 2] = 1.0
    assert bounding_box(m) == (0, 0, 2, 2)


def test_constant_and_empty_maps() -> None:
    assert bounding_box(torch.full((4, 6), 0.3)) == (0, 0, 5, 3)
    assert bounding_box(torch.zeros(4, 6)) == (0, 0, 5, 3)
    assert torch.equal(normalize(torch.full((1, 4, 6), 2.0)), torch.zeros(1, 4, 6))


def test_peak_ties_take_first_in_row_major_order() -> None:
    m = torch.zeros(3, 3)
    m[1, 2] = m[2, 0] = 5.0
    assert peak(m) == (2, 1)


def test_normalize_per_map_without_changing_input() -> None:
    maps = torch.tensor([[[[1.0, 3.0]], [[-2.0, 2.0]]]])
    before = maps.clone()
    assert torch.equal(normalize(maps), torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]]]]))
    assert torch.equal(maps, before)


def test_upsample_keeps_leading_dims() -> None:
    out = upsample(torch.ones(2, 3, 7, 7), (20, 30))
    assert out.shape == (2, 3, 20, 30)
    assert torch.allclose(out, torch.ones_like(out))
