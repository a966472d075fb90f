"""The video benchmark's generator: a moving square (the class is its direction), a static
twin, exact per-frame masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gradcam.synthetic.clips import DIRECTIONS, benchmark_clip, make_clip


def _corners(mask: np.ndarray) -> list[tuple[int, int]]:
    """(top, left) of the square in each frame."""
    out = []
    for frame in mask:
        ys, xs = np.nonzero(frame)
        out.append((int(ys.min()), int(xs.min())))
    return out


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_square_moves_in_its_direction(direction: str) -> None:
    step = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}[direction]
    for seed in range(5):
        clip = make_clip(seed, direction=direction)
        corners = _corners(clip.mask)
        side = int(np.sqrt(clip.mask[0].sum()))
        for t, frame in enumerate(clip.mask):
            top, left = corners[t]
            # One side x side square per frame, exactly.
            assert frame.sum() == side * side
            assert frame[top : top + side, left : left + side].all()
        moved = (corners[-1][0] - corners[0][0], corners[-1][1] - corners[0][1])
        # Along the direction: 7 frames at 1 to 2 pixels each; across it: not at all.
        along = moved[0] * step[0] + moved[1] * step[1]
        assert 7 <= along <= 14
        assert moved[0] * step[1] == 0 and moved[1] * step[0] == 0
        for a, b in itertools.pairwise(corners):
            assert (b[0] - a[0]) * step[0] + (b[1] - a[1]) * step[1] >= 0


def test_the_static_twin_looks_the_same_and_never_touches() -> None:
    for seed in range(10):
        clip = make_clip(seed)
        assert clip.distractor.sum() == clip.mask[0].sum()
        # The same brightness (up to the noise): no frame tells them apart.
        moving = clip.array[0][clip.mask].mean()
        static = clip.array[0][:, clip.distractor].mean()
        assert abs(moving - static) < 0.02
        path = clip.mask.any(axis=0)
        ys, xs = np.nonzero(clip.distractor)
        for y, x in zip(ys, xs, strict=True):
            assert not path[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3].any()


def test_box_spans_all_frames() -> None:
    clip = make_clip(3, direction="down")
    _, ys, xs = np.nonzero(clip.mask)
    assert clip.box == (xs.min(), ys.min(), 0, xs.max(), ys.max(), 7)


def test_same_seed_same_bytes_and_balanced_benchmark() -> None:
    assert make_clip(4).array.tobytes() == make_clip(4).array.tobytes()
    directions = [benchmark_clip(i, seed=2).direction for i in range(8)]
    assert sorted(directions) == sorted(DIRECTIONS * 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown direction 'north'"):
        make_clip(0, direction="north")
    with pytest.raises(ValueError, match="at least 2 frames"):
        make_clip(0, frames=1)
