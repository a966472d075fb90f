"""Pictures of :mod:`gradcam.viz` on tiny arrays: exact pixel values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam.errors import GradCAMError
from gradcam.viz import gradient_image, overlay, side_by_side


def _pixels(picture: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in p) for p in np.asarray(picture).reshape(-1, 3)]


def test_overlay_blends_the_jet_colors() -> None:
    # jet(0) = (0, 0, 0.5) and jet(1) = (0.5, 0, 0); half of each over black: 0.25 * 255 -> 64.
    black = Image.new("RGB", (2, 1))
    picture = overlay(black, torch.tensor([[0.0, 1.0]]))
    assert picture.size == (2, 1) and picture.mode == "RGB"
    assert _pixels(picture) == [(0, 0, 64), (64, 0, 0)]
    assert _pixels(black) == [(0, 0, 0), (0, 0, 0)]  # the photo is not modified


def test_overlay_normalizes_raw_maps_and_arrays() -> None:
    black = Image.new("RGB", (2, 1))
    raw = overlay(black, np.array([[-3.0, 5.0]]))  # min-max normalized: the same as [0, 1]
    assert _pixels(raw) == [(0, 0, 64), (64, 0, 0)]
    flat = overlay(black, torch.full((1, 2), 7.0))  # a constant map is all zeros, never NaN
    assert _pixels(flat) == [(0, 0, 64), (0, 0, 64)]


def test_overlay_alpha_and_box() -> None:
    gray = Image.new("L", (4, 4), 100)
    assert _pixels(overlay(gray, torch.rand(2, 2), alpha=0.0)) == [(100, 100, 100)] * 16
    big = Image.new("L", (8, 8), 100)
    boxed = overlay(big, torch.zeros(2, 2), alpha=0.0, box=(0, 0, 7, 7))
    assert boxed.getpixel((1, 4)) == (0, 255, 0)  # the green outline, 2 pixels wide
    assert boxed.getpixel((4, 4)) == (100, 100, 100)  # inside: the photo


def test_overlay_bad_input() -> None:
    photo = Image.new("RGB", (2, 2))
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay(photo, torch.zeros(2, 2), alpha=1.5)
    with pytest.raises(ValueError, match="map must be 2-D"):
        overlay(photo, torch.zeros(1, 2, 2))


def test_gradient_image_standardizes_around_gray() -> None:
    # [-1, 1]: mean 0, std sqrt(2); 0.5 -+ 0.1 / sqrt(2) -> 109 and 146 out of 255.
    picture = gradient_image(torch.tensor([[[-1.0, 1.0]]]))
    assert picture.size == (2, 1) and picture.mode == "RGB"
    assert _pixels(picture) == [(109, 109, 109), (146, 146, 146)]
    zero = gradient_image(torch.zeros(3, 2, 2), size=(5, 3))
    assert zero.size == (5, 3) and set(_pixels(zero)) == {(128, 128, 128)}
    with pytest.raises(ValueError, match="C in"):
        gradient_image(torch.zeros(2, 2, 2))


def test_side_by_side_places_panels_in_a_row() -> None:
    red, blue = Image.new("RGB", (4, 2), "red"), Image.new("RGB", (2, 2), "blue")
    figure = side_by_side([("a", red), ("b", blue)], height=4, gap=1)
    assert figure.size == (8 + 1 + 4, 4 + 18)  # panels scaled to height 4, titles 18 px
    assert figure.getpixel((0, 21)) == (255, 0, 0)
    assert figure.getpixel((8, 21)) == (255, 255, 255)  # the gap
    assert figure.getpixel((12, 21)) == (0, 0, 255)
    with pytest.raises(ValueError, match="at least one panel"):
        side_by_side([])


def test_overlay_takes_pil_uint8_and_float_rgb_alike() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    heat = torch.rand(5, 7)
    want = np.asarray(overlay(Image.fromarray(pixels), heat))
    np.testing.assert_array_equal(np.asarray(overlay(pixels, heat)), want)
    np.testing.assert_array_equal(np.asarray(overlay(pixels / 255.0, heat)), want)  # float64
    np.testing.assert_array_equal(np.asarray(overlay(np.float32(pixels) / 255, heat)), want)
    gray = pixels[..., 0]
    np.testing.assert_array_equal(
        np.asarray(overlay(gray, heat)), np.asarray(overlay(Image.fromarray(gray), heat))
    )


def test_overlay_refuses_arrays_it_cannot_read() -> None:
    heat = torch.rand(5, 7)
    with pytest.raises(GradCAMError, match=r"\[0, 1\]"):
        overlay(np.full((4, 4, 3), 200.0), heat)  # a 0-255 float image
    with pytest.raises(GradCAMError, match="shape"):
        overlay(np.zeros((4, 4, 4), dtype=np.uint8), heat)
    with pytest.raises(GradCAMError, match="int64"):
        overlay(np.zeros((4, 4, 3), dtype=np.int64), heat)
