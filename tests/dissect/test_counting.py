"""The IoU counts: each image's masks equal thresholded float64 ``F.interpolate``, hand-computed
counts, plateaus at ``T_k``, and bad label maps."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradcam.dissect import ConceptError
from gradcam.dissect.counting import Counts, upsampling_axis


def _masks(maps: torch.Tensor, thresholds: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) the masks :meth:`Counts.add` counts, read back through labels that give
    every pixel its own concept."""
    pixels = size[0] * size[1]
    counts = Counts.zeros(maps.shape[0], pixels, 1)
    labels = np.arange(1, pixels + 1).reshape(size)
    counts.add(maps.numpy()[None], thresholds.double().numpy(), [[(0, labels)]])
    assert counts.labelled[1:].tolist() == [1.0] * pixels
    return counts.intersection[:, 1:].reshape(-1, *size) > 0


def _exact_pixel(cells: np.ndarray, y: int, x: int, size: tuple[int, int]) -> Fraction:
    """Pixel (y, x) of ``cells`` upsampled to ``size`` (``align_corners=False``), in rationals."""
    (side_y, side_x), corners = cells.shape, []
    for pixel, pixels, side in ((y, size[0], side_y), (x, size[1], side_x)):
        source = max(Fraction((2 * pixel + 1) * side - pixels, 2 * pixels), Fraction(0))
        first = min(int(source), side - 1)
        corners.append((first, min(first + 1, side - 1), source - first))
    (y0, y1, b), (x0, x1, a) = corners
    v = [[Fraction(float(cells[r, c])) for c in (x0, x1)] for r in (y0, y1)]
    return (1 - b) * ((1 - a) * v[0][0] + a * v[0][1]) + b * ((1 - a) * v[1][0] + a * v[1][1])


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 3, 5])
@pytest.mark.parametrize("kind", ["normal", "ties", "relu6"])
def test_masks_equal_interpolate_and_exact_arithmetic(factor: int, kind: str) -> None:
    torch.manual_seed(factor)
    for trial in range(12):
        side_y, side_x = (int(n) for n in torch.randint(2, 10, (2,)))
        maps = torch.randn(6, side_y, side_x)
        if kind == "ties":
            maps = (maps * 4).round() / 4
        elif kind == "relu6":  # plateaus at 6, and T_k = 6 for the saturated units
            maps = (maps * 8).clamp(0, 6)
        thresholds = maps.flatten(1).quantile(0.8, dim=1)
        if trial % 2:
            thresholds = maps.flatten(1).amax(dim=1) * 0.999
        size = (side_y * factor + trial % 3, side_x * factor)
        up = F.interpolate(maps[None].double(), size=size, mode="bilinear")[0]
        gap = up - thresholds.double()[:, None, None]
        expected = (gap > 0).numpy()
        # Where float64 rounding could decide (plateaus and borders exactly at T_k), the exact
        # value decides: the masks are those of exact arithmetic.
        for k, y, x in zip(*np.nonzero((gap.abs() < 1e-9).numpy()), strict=True):
            exact = _exact_pixel(maps[k].numpy(), int(y), int(x), size)
            expected[k, y, x] = exact > Fraction(float(thresholds[k]))
        assert np.array_equal(_masks(maps, thresholds, size), expected)


@pytest.mark.parametrize(
    ("side", "size"), [((9, 7), (4, 5)), ((9, 7), (1, 3)), ((9, 7), (9, 2)), ((1, 7), (3, 14))]
)
def test_label_maps_smaller_than_the_maps_and_single_rows(
    side: tuple[int, int], size: tuple[int, int]
) -> None:
    # Down-sampling (an early layer against half-size segmentations): the same formula, some
    # cells with no pixel of their own; and maps one cell high.
    torch.manual_seed(2)
    maps = torch.randn(5, *side)
    thresholds = maps.flatten(1).quantile(0.7, dim=1)
    up = F.interpolate(maps[None].double(), size=size, mode="bilinear")[0]
    expected = (up > thresholds.double()[:, None, None]).numpy()
    assert np.array_equal(_masks(maps, thresholds, size), expected)


def test_plateau_at_threshold_is_not_above() -> None:
    # Every pixel between cells equal to T_k is exactly T_k: none passes, at any factor.
    maps = torch.tensor([[[6.0, 6.0, 2.0], [6.0, 6.0, 1.0]]])
    for size in [(4, 6), (6, 9), (7, 11)]:
        assert not _masks(maps, torch.tensor([6.0]), size).any()
        assert _masks(maps, torch.tensor([5.9]), size).any()


def test_counts_by_hand_across_layers() -> None:
    # 1 x 1 maps: unit 0's single cell is above T_k everywhere, unit 1's nowhere.
    maps = np.array([[[2.0]], [[0.5]]], dtype=np.float32)
    shapes = np.array([[1, 1], [0, 2]])  # category 0
    colours = np.array([[3, 0], [3, 3]])  # category 1
    more_shapes = np.array([[2, 2], [2, 2]])  # category 0 again
    counts = Counts.zeros(channels=2, concepts=3, categories=2)
    counts.add(maps[None], np.array([1.0, 1.0]), [[(0, shapes), (1, colours), (0, more_shapes)]])
    # All 4 pixels pass for unit 0: concept 2 is in two layers and counts in both.
    assert counts.intersection.tolist() == [[0, 2, 1 + 4, 3], [0, 0, 0, 0]]
    assert counts.labelled.tolist() == [0, 2, 5, 3]
    # |M| counts once per category the image is annotated in, however many layers.
    assert counts.activated.tolist() == [[4, 4], [0, 0]]
    category_of = np.array([-1, 0, 0, 1])
    assert counts.iou(category_of)[0].tolist() == [2 / 4, 5 / (4 + 5 - 5), 3 / (4 + 3 - 3)]


def test_fold_moves_counts_and_order_never_matters() -> None:
    rng = np.random.default_rng(0)
    images = [
        (rng.random((3, 4, 4), dtype=np.float32), [(0, rng.integers(0, 5, (16, 16)))])
        for _ in range(6)
    ]
    thresholds = np.full(3, 0.8)
    whole = Counts.zeros(3, 4, 1)
    for maps, layers in images:
        whole.add(maps[None], thresholds, [layers])
    halves = [Counts.zeros(3, 4, 1), Counts.zeros(3, 4, 1)]
    for i, (maps, layers) in enumerate(reversed(images)):
        halves[i % 2].add(maps[None], thresholds, [layers])
    total = whole.empty_like()
    for half in halves:
        total.fold(half)
        assert not half.intersection.any() and not half.labelled.any()
    for mine, theirs in [
        (total.intersection, whole.intersection),
        (total.activated, whole.activated),
        (total.labelled, whole.labelled),
    ]:
        assert np.array_equal(mine, theirs)
    assert whole.intersection.sum() > 0


def test_a_batch_counts_as_its_images_one_by_one() -> None:
    # Images of two label sizes, with 0 to 3 layers: grouped by size, padded to one depth.
    rng = np.random.default_rng(1)
    maps = rng.random((6, 3, 4, 4), dtype=np.float32)
    samples = [
        [(0, rng.integers(0, 5, (8, 8))), (1, rng.integers(0, 5, (8, 8)))],
        [(1, rng.integers(0, 5, (12, 10)))],
        [],
        [
            (0, rng.integers(0, 5, (8, 8))),
            (0, rng.integers(0, 5, (8, 8))),
            (1, rng.integers(0, 5, (8, 8))),
        ],
        [(1, rng.integers(0, 5, (12, 10))), (0, rng.integers(0, 5, (12, 10)))],
        [(0, rng.integers(0, 5, (8, 8)))],
    ]
    thresholds = np.full(3, 0.7)
    batch, single = Counts.zeros(3, 4, 2), Counts.zeros(3, 4, 2)
    batch.add(maps, thresholds, samples)
    for j, layers in enumerate(samples):
        single.add(maps[j : j + 1], thresholds, [layers])
    assert np.array_equal(batch.intersection, single.intersection)
    assert np.array_equal(batch.activated, single.activated)
    assert np.array_equal(batch.labelled, single.labelled)
    assert batch.activated[:, 1].sum() > 0


def test_labels_of_any_integer_type() -> None:
    maps = np.array([[[1.0, 2.0], [3.0, 4.0]]], dtype=np.float32)
    labels = np.array([[0, 1, 1, 2]] * 4)
    results = []
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        counts = Counts.zeros(1, 2, 1)
        counts.add(maps[None], np.array([2.5]), [[(0, labels.astype(dtype))]])
        results.append(counts.intersection.tolist())
    assert results[1:] == results[:-1]


def test_unannotated_image_counts_nothing() -> None:
    counts = Counts.zeros(1, 2, 1)
    counts.add(np.ones((1, 1, 2, 2), dtype=np.float32), np.array([0.0]), [[]])
    assert not counts.intersection.any() and not counts.activated.any()


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([(0, np.zeros((4, 4), int)), (1, np.zeros((4, 5), int))], "image 8: .* one .H, W. size"),
        ([(0, np.zeros(4, int))], "image 8: .* one .H, W. size"),
        ([(0, np.full((4, 4), 3))], "images 8..8: label ids 3..3 outside 0..2"),
        ([(0, np.full((4, 4), -1))], "images 8..8: label ids -1..-1 outside 0..2"),
    ],
)
def test_exception_bad_label_maps(layers: list[tuple[int, np.ndarray]], message: str) -> None:
    counts = Counts.zeros(1, 2, 2)
    with pytest.raises(ConceptError, match=message):
        counts.add(np.ones((2, 1, 2, 2), dtype=np.float32), np.array([0.5]), [[], layers], first=7)


@pytest.mark.parametrize(("size", "side"), [(8, 2), (9, 4), (3, 7), (224, 7), (5, 5)])
def test_upsampling_axis_matches_torch_weights(size: int, side: int) -> None:
    # Upsampling a ramp 0, 1, ..., side - 1 gives each pixel's source position y0 + weight.
    weights, start = upsampling_axis(size, side)
    ramp = torch.arange(side, dtype=torch.float64)[None, None, None, :]
    source = F.interpolate(ramp, size=(1, size), mode="bilinear")[0, 0, 0].numpy()
    first = np.repeat(np.arange(side), np.diff(start))
    assert start[0] == 0 and start[-1] == size
    at_end = first == side - 1  # the last cell's next cell is itself
    fraction = weights / (2 * size)
    assert np.array_equal(weights, weights.round()) and (fraction <= 1).all()
    np.testing.assert_allclose(np.where(at_end, first, first + fraction), source, atol=1e-12)
