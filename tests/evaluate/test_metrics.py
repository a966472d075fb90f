"""Evaluation metrics on hand-made maps and boxes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcam.evaluate import (
    area_under_curve,
    box_iou,
    localization_correct,
    pointing_hit,
    pointing_point,
    recall_hit,
    spearman,
)
from gradcam.maps import bounding_box


class TestBoxes:
    def test_iou_by_hand(self) -> None:
        assert box_iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
        assert box_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
        assert box_iou((0, 0, 4, 4), (5, 5, 9, 9)) == 0.0  # touching corners do not overlap
        assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 1.0  # one pixel

    def test_localization_needs_the_right_class_and_iou(self) -> None:
        truth = [(3, (10, 10, 29, 29)), (5, (0, 0, 9, 9))]
        assert localization_correct(3, (10, 10, 29, 29), truth)
        assert not localization_correct(5, (10, 10, 29, 29), truth)  # box of another class
        assert not localization_correct(3, (20, 10, 39, 29), truth)  # IoU 1/3
        assert localization_correct(3, (20, 10, 39, 29), truth, iou_threshold=0.3)

    def test_two_blobs_where_the_smaller_has_the_max(self) -> None:
        m = torch.zeros(40, 40)
        m[2:5, 2:5] = 1.0
        m[20:38, 10:35] = 0.5
        box = bounding_box(m)
        assert box == (10, 20, 34, 37)
        assert localization_correct(7, box, [(7, (10, 20, 34, 37))])
        assert pointing_point(m) == (2, 2)
        assert not pointing_hit(m, boxes=[(10, 20, 34, 37)], tolerance=0)


class TestPointing:
    def test_tolerance_in_pixels(self) -> None:
        m = torch.zeros(50, 50)
        m[10, 40] = 1.0
        assert pointing_hit(m, boxes=[(0, 0, 30, 30)], tolerance=10)
        assert not pointing_hit(m, boxes=[(0, 0, 30, 30)], tolerance=9)
        assert pointing_hit(m, boxes=[(0, 0, 30, 30), (39, 9, 41, 11)], tolerance=0)

    def test_box_at_image_edge(self) -> None:
        m = torch.zeros(20, 30)
        m[19, 29] = 2.0
        assert pointing_hit(m, boxes=[(25, 15, 29, 19)], tolerance=0)

    def test_masks(self) -> None:
        m = np.zeros((20, 20))
        m[5, 5] = 1.0
        mask = np.zeros((20, 20), dtype=bool)
        mask[5, 8:12] = True  # 3 pixels to the right of the peak
        assert pointing_hit(m, masks=[mask], tolerance=3)
        assert not pointing_hit(m, masks=[mask], tolerance=2)
        with pytest.raises(ValueError, match="mask shape"):
            pointing_hit(m, masks=[np.ones((5, 5))])

    def test_ties_take_the_first_maximum(self) -> None:
        m = torch.zeros(10, 10)
        m[1, 8] = m[7, 2] = 1.0
        assert pointing_point(m) == (8, 1)
        assert pointing_hit(m, boxes=[(8, 1, 8, 1)], tolerance=0)
        assert not pointing_hit(m, boxes=[(2, 7, 2, 7)], tolerance=0)

    def test_constant_and_empty_maps_point_nowhere(self) -> None:
        everywhere = [(0, 0, 9, 9)]
        assert pointing_point(torch.zeros(10, 10)) is None
        assert not pointing_hit(torch.zeros(10, 10), boxes=everywhere)
        assert not pointing_hit(torch.full((10, 10), 0.7), boxes=everywhere)

    def test_recall_variant(self) -> None:
        assert recall_hit(0.1, 0.5, class_present=False, pointed=False)  # correct rejection
        assert not recall_hit(0.1, 0.5, class_present=True, pointed=True)  # wrong rejection
        assert recall_hit(0.9, 0.5, class_present=True, pointed=True)
        assert not recall_hit(0.9, 0.5, class_present=True, pointed=False)
        assert not recall_hit(0.9, 0.5, class_present=False, pointed=False)


class TestRankCorrelation:
    def test_by_hand(self) -> None:
        # ranks [1, 2, 3] and [1, 3, 2]: 1 - 6 * 2 / (3 * 8) = 0.5
        assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 30.0, 20.0])) == 0.5
        a = torch.rand(8, 8, generator=torch.Generator().manual_seed(0))
        assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
        assert spearman(a, -a) == pytest.approx(-1.0)

    def test_ties_use_average_ranks(self) -> None:
        # ranks [1.5, 1.5, 3] and [1, 2, 3]: Pearson of the ranks = sqrt(3) / 2
        assert spearman(np.array([0.0, 0.0, 1.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(
            np.sqrt(3) / 2
        )

    def test_constant_map_is_zero_not_nan(self) -> None:
        assert spearman(torch.zeros(4, 4), torch.rand(4, 4)) == 0.0
        with pytest.raises(ValueError, match="differ in size"):
            spearman(torch.zeros(4), torch.zeros(5))


def test_area_under_curve() -> None:
    assert area_under_curve([1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert area_under_curve(torch.ones(11)) == pytest.approx(1.0)
    assert area_under_curve([0.3]) == 0.3
