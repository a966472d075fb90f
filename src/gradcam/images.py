"""Reading photos safely and turning them into model input.

:func:`load_image` returns an 8-bit RGB ``PIL.Image`` for any common file: EXIF orientation is
applied; grayscale, palette, CMYK and 16-bit images are converted; transparency is flattened
on white; decompression bombs, truncated and non-image files raise :class:`ImageLoadError`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from gradcam.errors import ImageLoadError

__all__ = ["Preprocess", "load_image"]


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


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read an image file as an 8-bit RGB ``PIL.Image``, fully decoded.

    Raises:
        ImageLoadError: naming the file and the reason: missing, a folder, not an image,
            corrupt or truncated, or too large (Pillow's decompression-bomb limit).

    Example:
        >>> img = load_image("photo.jpg")
        >>> img.mode
        'RGB'
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ImageLoadError(f"{name}: no such file")
    if os.path.isdir(name):
        raise ImageLoadError(f"{name}: is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(name) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened) or opened
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

    Example:
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
