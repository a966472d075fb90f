"""Pictures: heatmaps blended over the photo, pixel-space gradients, side-by-side figures."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from gradcam.errors import GradCAMError
from gradcam.maps import normalize, upsample

__all__ = ["gradient_image", "overlay", "side_by_side"]


def _rgb_floats(image: Image.Image | np.ndarray) -> np.ndarray:
    """An image as (H, W, 3) float32 RGB in [0, 1]: a PIL image (any mode), a uint8 array, or
    a float array already in [0, 1] (pytorch-grad-cam's style), (H, W) gray or (H, W, 3)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise GradCAMError(
            f"image must be a PIL image or an (H, W, 3) or (H, W) array, got shape {array.shape}"
        )
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array).all()
        if not finite or (array.size and (array.min() < 0.0 or array.max() > 1.0)):
            raise GradCAMError(
                "a float image must hold values in [0, 1] (divide a 0-255 image by 255, or "
                "pass it as uint8)"
            )
        values = array.astype(np.float32)
    else:
        raise GradCAMError(f"image arrays must be uint8 or float in [0, 1], got {array.dtype}")
    return values if values.ndim == 3 else np.repeat(values[..., None], 3, axis=-1)


def overlay(
    image: Image.Image | np.ndarray,
    map: Tensor | np.ndarray,
    colormap: str = "jet",
    alpha: float = 0.5,
    box: tuple[int, int, int, int] | None = None,
    normalized: bool = False,
) -> Image.Image:
    """Blend a heatmap over ``image`` at the image's own size and aspect.

    ``map`` is one 2-D map of any size (layer resolution or input resolution); it is resized
    bilinearly to the image and min-max normalized, so raw or normalized maps both work.

    Args:
        image: the original photo: a PIL image (any mode; shown as RGB), a uint8 array or a
            float array in [0, 1] (pytorch-grad-cam's style), (H, W, 3) RGB or (H, W) gray;
            the same picture gives the same result in each form.
        map: (h, w) tensor or array.
        colormap: any matplotlib colormap name; the paper's figures use ``"jet"``.
        alpha: heatmap opacity in [0, 1].
        box: optional ``(x0, y0, x1, y1)`` box in image pixels, drawn in green.
        normalized: the map is already on a shared [0, 1] scale (one frame of a clip, one
            slice of a volume): it is resized and clipped to [0, 1], not stretched to its own
            minimum and maximum, so a weak frame stays weak.

    Returns:
        A new RGB image; ``image`` is not modified.

    Examples:
        >>> result = gradcam.GradCAM(model)(x)  # the star of ``scene``, class 3
        >>> picture = overlay(scene.image, result.raw[0, 0], box=scene.objects[0].box)
        >>> picture.size, picture.mode
        ((128, 128), 'RGB')
        >>> picture.save("star_gradcam.png")
        >>> rgb = np.asarray(scene.image.convert("RGB")) / 255.0  # pytorch-grad-cam's float RGB
        >>> overlay(rgb, result.raw[0, 0]) == overlay(scene.image, result.raw[0, 0])
        True
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    values = torch.as_tensor(np.asarray(map) if not isinstance(map, Tensor) else map.detach())
    if values.dim() != 2:
        raise ValueError(f"map must be 2-D (h, w), got shape {tuple(values.shape)}")
    values = torch.nan_to_num(values.float().cpu())
    base = _rgb_floats(image)
    height, width = base.shape[:2]
    resized = upsample(values, (height, width))
    resized = resized.clamp(0.0, 1.0) if normalized else normalize(resized)
    import matplotlib  # here: `gradcam --help` and `import gradcam` need no matplotlib

    colors = matplotlib.colormaps[colormap](resized.numpy())[..., :3]
    blended = (1.0 - alpha) * base + alpha * colors
    result = Image.fromarray(np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if box is not None:
        line = max(2, round(min(width, height) / 150))
        ImageDraw.Draw(result).rectangle(box, outline=(0, 255, 0), width=line)
    return result


def gradient_image(gradient: Tensor, size: tuple[int, int] | None = None) -> Image.Image:
    """Render a pixel-space map (Guided Backprop, Guided Grad-CAM, ...) as the paper shows it.

    The (C, H, W) gradient is standardized over the whole image, scaled so that one standard
    deviation spans 0.1 around mid-gray, and clipped: mid-gray is zero, bright and colored
    pixels are the strongest positive evidence. A zero map renders mid-gray (never NaN).

    Args:
        gradient: (C, H, W) with C = 3 (RGB) or 1 (gray).
        size: ``(width, height)`` to resize to, e.g. the original photo's size.

    Examples:
        >>> maps = gradcam.GuidedBackprop(model)(x).maps  # (B, K, 3, H, W)
        >>> picture = gradient_image(maps[0, 0], size=(256, 256))
        >>> picture.size, picture.getpixel((0, 0))  # mid-gray where the gradient is ~0
        ((256, 256), (128, 128, 128))
        >>> picture.save("star_guided_backprop.png")
    """
    values = gradient.detach().float().cpu()
    if values.dim() != 3 or values.shape[0] not in (1, 3):
        raise ValueError(f"gradient must be (C, H, W) with C in (1, 3); got {tuple(values.shape)}")
    centered = values - values.mean()
    std = float(centered.std()) if centered.numel() > 1 else 0.0
    scaled = centered / std * 0.1 + 0.5 if std > 0 else torch.full_like(centered, 0.5)
    array = (scaled.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")
    return picture if size is None else picture.resize(size, Image.Resampling.BILINEAR)


def side_by_side(
    panels: list[tuple[str, Image.Image]], height: int | None = None, gap: int = 6
) -> Image.Image:
    """Place titled panels in one row on white, like the paper's Fig. 1.

    Args:
        panels: ``(title, picture)`` pairs, left to right.
        height: height of every panel in pixels (default: the first panel's, at most 400).
        gap: white space between panels.
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    height = height or min(panels[0][1].height, 400)
    resized = [
        (title, img.convert("RGB").resize((max(1, round(img.width * height / img.height)), height)))
        for title, img in panels
    ]
    font = ImageFont.load_default()
    title_h = 18
    width = sum(img.width for _, img in resized) + gap * (len(resized) - 1)
    figure = Image.new("RGB", (width, height + title_h), "white")
    draw = ImageDraw.Draw(figure)
    left = 0
    for title, img in resized:
        figure.paste(img, (left, title_h))
        draw.text((left + 2, 3), title, fill="black", font=font)
        left += img.width + gap
    return figure
