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
