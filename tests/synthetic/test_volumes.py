"""The volumetric benchmark's generator: exact solids, tight 3-D boxes, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from gradcam.synthetic.volumes import SOLIDS, benchmark_volume, make_volume, solid_mask


def test_ball_voxels_by_hand() -> None:
    # Radius 1: the center and its 6 face neighbours; radius 1.5 adds the 12 edge
    # neighbours (distance sqrt 2) but not the 8 corners (sqrt 3).
    assert solid_mask("sphere", (3.0, 3.0, 3.0), 1.0, shape=(7, 7, 7)).sum() == 7
    assert solid_mask("sphere", (3.0, 3.0, 3.0), 1.5, shape=(7, 7, 7)).sum() == 19


def test_cube_and_cylinder_voxels_by_hand() -> None:
    # Cube of radius 1.8: half-side 1.8 / sqrt 3 = 1.04, so 3 voxels per axis.
    cube = solid_mask("cube", (3.0, 3.0, 3.0), 1.8, shape=(7, 7, 7))
    assert cube.sum() == 27 and cube[2:5, 2:5, 2:5].all()
    # Cylinder of radius 5 along the depth axis: disk radius 2.75 (21 pixels: the center,
    # 4 + 4 + 4 at distances 1, sqrt 2, 2, and 8 at sqrt 5) times 9 slices (|z| <= 4).
    cylinder = solid_mask("cylinder", (8.0, 8.0, 8.0), 5.0, shape=(17, 17, 17))
    assert cylinder.sum() == 9 * 21
    assert cylinder[4:13].any(axis=(1, 2)).all() and not cylinder[:4].any()


def test_rotation_turns_the_cylinder() -> None:
    # Columns of the rotation are the solid's axes: w (the cylinder's) along x.
    turn = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    lying = solid_mask("cylinder", (8.0, 8.0, 8.0), 5.0, turn, shape=(17, 17, 17))
    standing = solid_mask("cylinder", (8.0, 8.0, 8.0), 5.0, shape=(17, 17, 17))
    assert np.array_equal(lying, standing.transpose(2, 1, 0))


def test_torus_has_a_hole() -> None:
    torus = solid_mask("torus", (8.0, 8.0, 8.0), 6.0, shape=(17, 17, 17))
    assert not torus[8, 8, 8] and torus[8, 8, 8 + 4]  # ring radius 4.2, tube 1.8


def test_volume_annotations_are_exact() -> None:
    for seed in range(8):
        v = make_volume(seed)
        x0, y0, z0, x1, y1, z1 = v.box
        zs, ys, xs = np.nonzero(v.mask)
        assert (x0, y0, z0, x1, y1, z1) == (
            xs.min(),
            ys.min(),
            zs.min(),
            xs.max(),
            ys.max(),
            zs.max(),
        )
        # Never cut by the border, and painted brighter than the background around it.
        assert x0 > 0 and y0 > 0 and z0 > 0 and x1 < 31 and y1 < 31 and z1 < 31
        inside = v.array[0][v.mask].mean()
        assert inside > v.array[0][~v.mask].mean() + 0.25


def test_same_seed_same_bytes() -> None:
    a, b = make_volume(11, solid="torus"), make_volume(11, solid="torus")
    assert a.array.tobytes() == b.array.tobytes() and np.array_equal(a.mask, b.mask)
    assert make_volume(12).array.tobytes() != a.array.tobytes()


def test_benchmark_is_balanced_and_independent_of_count() -> None:
    solids = [benchmark_volume(i, seed=3).solid for i in range(8)]
    assert sorted(solids) == sorted(SOLIDS * 2)
    assert (
        benchmark_volume(5, seed=3).array.tobytes() == benchmark_volume(5, seed=3).array.tobytes()
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown solid 'cone'"):
        make_volume(0, solid="cone")
    with pytest.raises(ValueError, match="max_radius"):
        make_volume(0, max_radius=20.0)
    with pytest.raises(ValueError, match="unknown solid"):
        solid_mask("pyramid", (1.0, 1.0, 1.0), 1.0)
