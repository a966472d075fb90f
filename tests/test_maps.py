"""Post-processing on hand-made maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_peak_of_maps_that_point_nowhere_is_none() -> None:
    assert peak(torch.zeros(4, 6)) is None
    assert peak(torch.full((4, 6), 0.3)) is None  # constant but positive: no place stands out
    assert peak(np.full((2, 2), -1.0)) is None
    assert peak(torch.zeros(0, 3)) is None
    assert peak(torch.full((3, 3), float("nan"))) is None


def test_peak_ignores_non_finite_values_and_works_below_zero() -> None:
    m = torch.full((3, 4), -2.0)
    m[2, 1] = -1.0
    m[0, 0] = float("nan")
    m[0, 1] = float("-inf")
    assert peak(m) == (1, 2)
    assert peak(np.array([[0.0, 0.0], [0.0, 1e-30]])) == (1, 1)


def test_peak_refuses_maps_that_are_not_2d() -> None:
    with pytest.raises(ValueError, match=r"\(h, w\) map"):
        peak(torch.zeros(1, 4, 4))


@pytest.mark.parametrize(
    "values",
    [
        torch.zeros(6, 6),
        torch.full((6, 6), 0.5),
        torch.eye(6),  # a tie along the diagonal
        torch.arange(36.0).reshape(6, 6).flip(0),
    ],
)
def test_every_caller_points_where_peak_points(values: torch.Tensor) -> None:
    """The explain summary, the pointing game and the two VL scores share one rule."""
    from PIL import Image

    from gradcam.evaluate.metrics import pointing_hit, pointing_point
    from gradcam.vl.evaluate import _on
    from gradcam.vl.explain import _image_peak

    point = peak(values)
    assert pointing_point(values) == point
    assert _image_peak(values, Image.new("RGB", (6, 6))) == point
    for y in range(6):
        for x in range(6):
            mask = np.zeros((6, 6), dtype=bool)
            mask[y, x] = True
            on = point == (x, y)
            assert _on(mask, values) == on
            assert pointing_hit(values, masks=[mask], tolerance=0) == on
