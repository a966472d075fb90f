"""pytorch-grad-cam's ``pytorch_grad_cam.utils.image``: preprocessing and overlays, numpy in and
out (overlays need OpenCV's colormaps: ``pip install gradcam[compat]``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from gradcam.compat.pytorch_grad_cam.base_cam import scale_maps
from gradcam.errors import GradCAMError

__all__ = [
    "create_labels_legend",
    "deprocess_image",
    "preprocess_image",
    "scale_cam_image",
    "show_cam_on_image",
    "show_factorization_on_image",
]

_COLORMAP_JET = 2  # cv2.COLORMAP_JET


def preprocess_image(
    img: np.ndarray,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> torch.Tensor:
    """An (H, W, C) image as a normalized (1, C, H, W) tensor: ``(img - mean) / std``, a uint8
    image first divided by 255 (torchvision's ``ToTensor`` then ``Normalize``).

    Examples:
        >>> preprocess_image(np.ones((2, 2, 3), dtype=np.float32)).shape
        torch.Size([1, 3, 2, 2])
    """
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    if tensor.dtype == torch.uint8:
        tensor = tensor.to(torch.get_default_dtype()).div(255)
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype)[:, None, None]
    std_t = torch.as_tensor(std, dtype=tensor.dtype)[:, None, None]
    return ((tensor - mean_t) / std_t).unsqueeze(0)


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """A gradient image as uint8 for display: standardized, scaled so that one standard
    deviation spans 0.1 around 0.5, clipped to [0, 1], times 255.

    Examples:
        >>> deprocess_image(np.zeros((2, 2, 3))).max()
        np.uint8(127)
    """
    centered = img - np.mean(img)
    scaled = centered / (np.std(centered) + 1e-5) * 0.1 + 0.5
    result: np.ndarray = (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    return result


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int = _COLORMAP_JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Blend a [0, 1] ``mask`` (H, W), colored by an OpenCV ``colormap``, over a float
    ``img`` (H, W, 3) in [0, 1]: ``image_weight * img + (1 - image_weight) * heatmap``,
    divided by its maximum, as uint8. The heatmap is BGR unless ``use_rgb``.

    Raises:
        GradCAMError: for an image above 1 or an ``image_weight`` outside [0, 1].

    Examples:
        >>> show_cam_on_image(np.zeros((2, 2, 3)), np.ones((2, 2)), use_rgb=True)[0, 0]
        array([255,   0,   0], dtype=uint8)
    """
    try:
        import cv2
    except ImportError:  # pragma: no cover - an install without the compat extra
        raise GradCAMError(
            "show_cam_on_image needs OpenCV's colormaps: pip install gradcam[compat]"
        ) from None
    heatmap = cv2.applyColorMap((255 * np.asarray(mask)).astype(np.uint8), colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    colors = np.float32(heatmap) / 255
    if np.max(img) > 1:
        raise GradCAMError("show_cam_on_image needs a float image in [0, 1] (divide by 255)")
    if not 0 <= image_weight <= 1:
        raise GradCAMError(f"image_weight must be in [0, 1], got {image_weight}")
    blended = (1 - image_weight) * colors + image_weight * img
    return (255 * (blended / np.max(blended))).astype(np.uint8)


def scale_cam_image(cam: Any, target_size: tuple[int, int] | None = None) -> np.ndarray:
    """Each (h, w) map of ``cam`` (N, h, w) shifted to a minimum of 0, divided by its maximum
    plus 1e-7, and resized bilinearly to ``target_size`` = (width, height) (OpenCV's order);
    float32.

    Examples:
        >>> scale_cam_image(np.array([[[1.0, 3.0]]]), (4, 1)).shape
        (1, 1, 4)
    """
    maps = torch.as_tensor(np.asarray(cam, dtype=np.float32))
    if maps.dim() != 3:
        raise NotImplementedError(
            f"scale_cam_image on maps of shape {tuple(maps.shape)}: only (N, h, w) 2-D maps"
        )
    size = None if target_size is None else (int(target_size[1]), int(target_size[0]))
    return scale_maps(maps, size).numpy()  # type: ignore[no-any-return]


def create_labels_legend(
    concept_scores: np.ndarray, labels: Mapping[int, str], top_k: int = 2
) -> list[str]:
    """Per concept (a row of ``concept_scores`` (n, N)), its ``top_k`` classes, best first, as
    ``"label:score"`` lines (a label cut at its third comma-separated name).

    Examples:
        >>> create_labels_legend(np.array([[0.1, 0.7, 0.2]]), {0: "a", 1: "b,c,d,e", 2: "f"})
        ['b,c,d:0.70\\nf:0.20']
    """
    scores = np.asarray(concept_scores)
    legend = []
    for row in scores:
        best = np.argsort(row)[::-1][:top_k]
        lines = [f"{','.join(labels[int(c)].split(',')[:3])}:{row[c]:.2f}" for c in best]
        legend.append("\n".join(lines))
    return legend


def show_factorization_on_image(
    img: np.ndarray,
    explanations: np.ndarray,
    colors: Sequence[np.ndarray] | None = None,
    image_weight: float = 0.5,
    concept_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """The concepts' maps ``explanations`` (n, H, W) in [0, 1] over a float RGB image
    ``img`` (H, W, 3) in [0, 1]: each pixel takes the color of its strongest concept, with
    that concept's map as its HSV value (the other concepts' maps are zeroed there, in place
    as pytorch-grad-cam does), blended ``image_weight * img + (1 - image_weight) * colors``
    as uint8. ``colors`` default to matplotlib's ``gist_rainbow`` at ``i / n``. With
    ``concept_labels``, a legend of the same size (matplotlib) is placed to the right.

    Examples:
        >>> maps = np.stack([np.eye(2), 1 - np.eye(2)])
        >>> show_factorization_on_image(np.zeros((2, 2, 3)), maps).shape
        (2, 2, 3)
    """
    try:
        import cv2
        from matplotlib import colormaps
    except ImportError:  # pragma: no cover - an install without the compat extra
        raise GradCAMError(
            "show_factorization_on_image needs OpenCV and matplotlib: pip install gradcam[compat]"
        ) from None
    count = explanations.shape[0]
    if colors is None:
        cmap = colormaps["gist_rainbow"]
        colors = [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / count)]
    strongest = explanations.argmax(axis=0)
    total = np.zeros((img.shape[0], img.shape[1], 3), dtype=np.float32)
    for i in range(count):
        explanations[i][strongest != i] = 0
        hsv = cv2.cvtColor(
            np.full((img.shape[0], img.shape[1], 3), np.uint8(np.asarray(colors[i][:3]) * 255)),
            cv2.COLOR_RGB2HSV,
        )
        hsv[:, :, 2] = np.uint8(255 * explanations[i])
        total += np.float32(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)) / 255
    result: np.ndarray = ((img * image_weight + total * (1 - image_weight)) * 255).astype(np.uint8)
    if concept_labels is None:
        return result
    height, width = result.shape[:2]
    return np.hstack((result, _legend((height, width), colors, concept_labels, cv2)))


def _legend(
    size: tuple[int, int], colors: Sequence[np.ndarray], labels: Sequence[str], cv2: Any
) -> np.ndarray:
    """An (H, W, 3) uint8 picture of the concepts' colors and labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    height, width = size
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.axis("off")
    width_of_line = 5 * height / 256
    font = int(14 * height / 256 / max(1, len(labels) / 6))
    axes.legend(
        [Line2D([0], [0], color=tuple(c), lw=width_of_line) for c in colors],
        list(labels),
        mode="expand",
        fancybox=True,
        shadow=True,
        fontsize=max(font, 1),
    )
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # type: ignore[no-untyped-call]
    data = np.asarray(canvas.buffer_rgba())[..., :3].copy()  # type: ignore[no-untyped-call]
    return cv2.resize(data, (width, height))  # type: ignore[no-any-return]
