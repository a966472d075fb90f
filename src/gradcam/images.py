"""Reading photos safely and turning them into model input.

:func:`load_image` returns an 8-bit RGB ``PIL.Image`` for any common file: EXIF orientation is
applied; grayscale, palette, CMYK and 16-bit images are converted; transparency is flattened
on white; decompression bombs, truncated and non-image files raise :class:`ImageLoadError`.
With ``max_pixels`` (the CLI and the web demo pass :data:`MAX_PIXELS`), a larger photo is
decoded at reduced size: JPEGs by Pillow's DCT scaling (``Image.draft``), other formats by box
averaging a band of rows at a time, so memory stays near the file's own decoded size instead
of growing with every later step at full resolution.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from gradcam.errors import ImageLoadError

__all__ = ["MAX_PIXELS", "Preprocess", "load_image"]

#: The pixel limit of ``gradcam explain``, ``caption``, ``vqa`` and the web demo: a photo with
#: more pixels is decoded at reduced size (every side divided by the same integer). A model sees
#: a few hundred pixels a side; pictures are written at the decoded size.
MAX_PIXELS = 2048 * 2048

# Rows of a band when reducing: about this many pixels are converted at a time.
_BAND_PIXELS = 1 << 20


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            low, high = float(array.min()), float(array.max())
            array = (array - low) / (high - low) * 255.0 if high > low else array * 0.0
        else:
            # Pillow opens 16-bit files as "I" or "I;16": scale the 16-bit range to 8 bits.
            array = array / 257.0
        gray = np.clip(array + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _reduction(size: tuple[int, int], max_pixels: int | None) -> int:
    """The smallest integer that divides both sides so the photo fits in ``max_pixels``."""
    pixels = size[0] * size[1]
    if max_pixels is None or pixels <= max_pixels:
        return 1
    factor = math.ceil(math.sqrt(pixels / max_pixels))
    while math.ceil(size[0] / factor) * math.ceil(size[1] / factor) > max_pixels:
        factor += 1
    return factor


def _reducible_mode(image: Image.Image) -> str:
    """A mode that ``Image.reduce`` averages and :func:`_to_rgb` reads the same way."""
    if image.mode in ("RGB", "RGBA", "L", "I", "F"):
        return image.mode
    if image.mode.startswith("I;16"):
        return "I"
    if image.mode == "1":
        return "L"
    if image.mode in ("LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return "RGBA"
    return "RGB"


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """``image`` with each ``factor`` x ``factor`` block averaged into one pixel.

    Converting the whole photo first would hold it several times over at full size (a palette
    PNG of 81 Mpx as RGBA is 324 MB): one band of rows is converted and reduced at a time.
    """
    mode = _reducible_mode(image)
    width, height = image.size
    reduced = Image.new(mode, (math.ceil(width / factor), math.ceil(height / factor)))
    rows = factor * max(1, _BAND_PIXELS // (width * factor))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows))).convert(mode)
        reduced.paste(band.reduce(factor), (0, top // factor))
    exif = image.getexif()
    if exif:  # keep the orientation for exif_transpose
        reduced.info["exif"] = exif.tobytes()
    return reduced


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Image.Image:
    """Read an image file as an 8-bit RGB ``PIL.Image``, fully decoded.

    Args:
        path: the file.
        max_pixels: decode a photo with more pixels at reduced size: both sides divided by the
            smallest integer that makes it fit (JPEGs through Pillow's DCT scaling, others by
            box averaging a band at a time). ``None`` decodes every pixel, as evaluations with
            boxes in the file's own pixels need. :data:`MAX_PIXELS` is the CLI's and the
            demo's limit.

    Raises:
        ImageLoadError: naming the file and the reason: missing, a folder, not an image,
            corrupt or truncated, or too large (Pillow's decompression-bomb limit).

    Examples:
        >>> from pathlib import Path
        >>> import gradcam
        >>> photo = Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg"
        >>> load_image(photo).size
        (901, 300)
        >>> load_image(photo, max_pixels=100_000).size
        (451, 150)
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ImageLoadError(f"{name}: no such file")
    if os.path.isdir(name):
        raise ImageLoadError(f"{name}: is a folder, not an image file")
    if max_pixels is not None and max_pixels < 1:
        raise ImageLoadError(f"max_pixels must be at least 1, got {max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(name) as opened:
                factor = _reduction(opened.size, max_pixels)
                if factor > 1:
                    # JPEG and MPO files decode at 1/2, 1/4 or 1/8 size by DCT scaling, never
                    # below the size asked for; other formats ignore the request.
                    wanted = (-(-opened.width // factor), -(-opened.height // factor))
                    opened.draft(opened.mode, wanted)
                opened.load()
                factor = _reduction(opened.size, max_pixels)
                loaded = _reduce(opened, factor) if factor > 1 else opened
                image = ImageOps.exif_transpose(loaded) or loaded
                image.load()
                return _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{name}: image too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image file (unrecognized format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{name}: corrupt or truncated image ({exc})") from None


_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize a photo, keeping its aspect, and normalize it into a (1, 3, H, W) tensor.

    The shorter side becomes ``size`` (the longer side is capped at ``max_ratio * size``), and
    nothing is cropped: the map then covers the whole photo and maps back to it by scaling.

    Attributes:
        size: length of the shorter side, in pixels.
        mean: per-channel mean, on the [0, 1] scale.
        std: per-channel standard deviation, on the [0, 1] scale.
        max_ratio: longest side allowed, as a multiple of ``size``; ``1.0`` resizes every photo
            to ``size`` x ``size`` (for models that take one input size only).
        interpolation: the resampling filter: ``"bilinear"``, ``"bicubic"``, ``"nearest"``,
            ``"lanczos"``, ``"box"`` or ``"hamming"``.

    Examples:
        >>> Preprocess(224)(Image.new("RGB", (640, 480))).shape
        torch.Size([1, 3, 224, 299])
    """

    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_ratio: float = 4.0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _FILTERS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}: expected one of "
                f"{', '.join(_FILTERS)}"
            )

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """``(H, W)`` of the tensor made from a ``width`` x ``height`` photo."""
        scale = self.size / min(width, height)
        longest = round(self.size * self.max_ratio)
        new_w = max(1, min(longest, round(width * scale)))
        new_h = max(1, min(longest, round(height * scale)))
        return new_h, new_w

    def __call__(self, image: Image.Image) -> Tensor:
        """The normalized (1, 3, H, W) float32 tensor of an RGB image."""
        height, width = self.input_size(image.width, image.height)
        filter_ = _FILTERS[self.interpolation]
        resized = image.convert("RGB").resize((width, height), filter_)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return ((tensor - mean) / std).unsqueeze(0).contiguous()
