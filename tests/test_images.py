"""load_image on every kind of file a user may have, and Preprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.photos import SKIMAGE_DATA, photo
from PIL import Image

from gradcam import ImageLoadError, Preprocess, load_image


def _save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def test_real_photo(tmp_path: Path) -> None:
    image = load_image(SKIMAGE_DATA / "chelsea.png")
    assert image.mode == "RGB" and image.size == (451, 300)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    source = photo("chelsea.png")  # 451 x 300, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: should display as portrait
    path = _save(source, tmp_path / "rotated.jpg", exif=exif)
    assert load_image(path).size == (300, 451)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "1"])
def test_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    image = photo("coffee.png").convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    loaded = load_image(_save(image, tmp_path / f"img{suffix}"))
    assert loaded.mode == "RGB" and loaded.size == image.size


def test_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(_save(image, tmp_path / "clear.png")).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_png_keeps_its_range(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    gray = np.asarray(load_image(path))[..., 0]
    assert gray.min() == 0 and gray.max() == 255
    assert abs(int(gray[32, 32]) - round(int(values[32, 32]) / 257)) <= 1


def test_decompression_bomb_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 10000 px > 2x the limit: an error
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # between 1x and 2x: a warning in PIL
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, this is text\n", "not an image file"),
        (b"", "not an image file"),
        ("truncated", "corrupt or truncated"),
    ],
    ids=["text", "empty", "truncated"],
)
def test_bad_files(tmp_path: Path, content: bytes | str, message: str) -> None:
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        photo("chelsea.png").save(path, quality=90)
        path.write_bytes(path.read_bytes()[:3000])
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(ImageLoadError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)


def test_preprocess_keeps_aspect_and_normalizes() -> None:
    pre = Preprocess(224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = pre(Image.new("RGB", (640, 480), (255, 0, 128)))
    assert x.shape == (1, 3, 224, 299)
    assert np.allclose(x[0, :, 0, 0].numpy(), [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)
    assert pre.input_size(100, 10_000) == (896, 224)  # the long side is capped


# A palette PNG of 9000 x 9000 (81 Mpx, under Pillow's 89 Mpx bomb warning) is 10 KB on disk;
# decoded at full size and converted it took over a gigabyte, and `gradcam explain` 10.8 GB.
_PEAK = """
import resource, sys
from PIL import Image
from gradcam.images import MAX_PIXELS, load_image
Image.new("P", (9000, 9000)).save(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_image(sys.argv[1], max_pixels=MAX_PIXELS)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(image.width, image.height, grown // 1024)
"""


def test_huge_palette_png_is_decoded_small(tmp_path: Path) -> None:
    import subprocess
    import sys

    from gradcam.images import MAX_PIXELS

    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(tmp_path / "huge.png")],
        capture_output=True,
        text=True,
        check=True,
    )
    width, height, grown_mb = map(int, done.stdout.split())
    assert (width, height) == (1800, 1800)  # 9000 / 5: the smallest factor that fits
    assert width * height <= MAX_PIXELS
    # The palette image itself is 81 MB; full-size RGBA conversions were over 1 GB.
    assert grown_mb < 400


def test_reduction_averages_blocks(tmp_path: Path) -> None:
    values = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    path = _save(Image.fromarray(values), tmp_path / "gray.png")
    loaded = np.asarray(load_image(path, max_pixels=9))[..., 0]  # 36 px > 9: halved to 3 x 3
    expected = values.reshape(3, 2, 3, 2).astype(float).mean(axis=(1, 3))
    assert loaded.shape == (3, 3)
    assert np.abs(loaded - expected).max() <= 0.5 + 1e-9  # Pillow rounds each average


def test_reduction_in_bands_equals_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradcam.images as images

    path = _save(photo("coffee.png").convert("P"), tmp_path / "palette.png")
    whole = np.asarray(load_image(path, max_pixels=50_000))
    monkeypatch.setattr(images, "_BAND_PIXELS", 1000)  # a few rows per band
    banded = np.asarray(load_image(path, max_pixels=50_000))
    assert banded.shape == whole.shape == (134, 200, 3)  # 400 x 600 divided by 3
    assert np.array_equal(banded, whole)


def test_large_jpeg_is_decoded_at_reduced_size_with_its_orientation(tmp_path: Path) -> None:
    source = photo("chelsea.png").resize((1804, 1200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: portrait
    path = _save(source, tmp_path / "large.jpg", exif=exif, quality=95)
    reduced = load_image(path, max_pixels=200_000)
    assert reduced.size == (300, 451)  # 1804 x 1200 / 4 (DCT scaling), then turned
    full = load_image(path).resize(reduced.size, Image.Resampling.BOX)
    difference = np.abs(np.asarray(reduced, float) - np.asarray(full, float)).mean()
    assert difference < 4  # the same picture, smaller


def test_large_png_keeps_orientation_transparency_and_depth(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = Image.new("RGBA", (400, 200), (255, 0, 0, 0))
    reduced = load_image(_save(rgba, tmp_path / "clear.png", exif=exif), max_pixels=20_000)
    assert reduced.size == (100, 200)  # 400 x 200 halved, then turned
    assert reduced.getpixel((0, 0)) == (255, 255, 255)  # flattened on white
    deep = np.linspace(0, 65535, 400 * 400).reshape(400, 400).astype(np.uint16)
    gray = np.asarray(
        load_image(_save(Image.fromarray(deep), tmp_path / "d.png"), max_pixels=10_000)
    )
    assert gray.shape == (100, 100, 3) and gray.max() >= 254 and gray.min() <= 1


def test_small_images_and_no_limit_are_untouched(tmp_path: Path) -> None:
    path = SKIMAGE_DATA / "chelsea.png"
    exact = np.asarray(load_image(path))
    assert np.array_equal(np.asarray(load_image(path, max_pixels=451 * 300)), exact)
    with pytest.raises(ImageLoadError, match="max_pixels"):
        load_image(path, max_pixels=0)
