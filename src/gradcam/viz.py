"""Pictures: a heatmap blended over the original photo, with an optional box."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from gradcam.maps import normalize, upsample

__all__ = ["overlay"]


def overlay(
    image: Image.Image,
    map: Tensor | np.ndarray,
    colormap: str = "jet",
    alpha: float = 0.5,
    box: tuple[int, int, int, int] | None = None,
) -> Image.Image:
    """Blend a heatmap over ``image`` at the image's own size and aspect.

    ``map`` is one 2-D map of any size (layer resolution or input resolution); it is resized
    bilinearly to the image and min-max normalized, so raw or normalized maps both work.

    Args:
        image: the original photo (any PIL mode; shown as RGB).
        map: (h, w) tensor or array.
        colormap: any matplotlib colormap name; the paper's figures use ``"jet"``.
        alpha: heatmap opacity in [0, 1].
        box: optional ``(x0, y0, x1, y1)`` box in image pixels, drawn in green.

    Returns:
        A new RGB image; ``image`` is not modified.

    Example:
        >>> result = cam(x, TopK(1))
        >>> overlay(photo, result.raw[0, 0]).save("cat.png")
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    values = torch.as_tensor(np.asarray(map) if not isinstance(map, Tensor) else map.detach())
    if values.dim() != 2:
        raise ValueError(f"map must be 2-D (h, w), got shape {tuple(values.shape)}")
    values = torch.nan_to_num(values.float().cpu())
    resized = normalize(upsample(values, (image.height, image.width)))
    colors = matplotlib.colormaps[colormap](resized.numpy())[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = (1.0 - alpha) * base + alpha * colors
    result = Image.fromarray(np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if box is not None:
        width = max(2, round(min(image.size) / 150))
        ImageDraw.Draw(result).rectangle(box, outline=(0, 255, 0), width=width)
    return result
