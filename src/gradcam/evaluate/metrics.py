"""Metrics of the paper's evaluations, on plain maps, boxes and masks.

Boxes are ``(x0, y0, x1, y1)`` in pixels, inclusive (the form of
:func:`gradcam.maps.bounding_box` and of PASCAL VOC annotations made 0-based); boxes of volumes
and clips are ``(x0, y0, z0, x1, y1, z1)`` in voxels, lows then highs, fastest axis first (the
form of :func:`gradcam.maps.region_box`; ``z`` is a clip's frame). Maps are 2-D tensors or
arrays, or 3-D ones for volumes and clips. Every function is pure and never returns NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from gradcam.maps import peak_point

__all__ = [
    "Box",
    "area_under_curve",
    "box_iou",
    "localization_correct",
    "pointing_hit",
    "pointing_point",
    "recall_hit",
    "spearman",
]

#: An inclusive box: ``(x0, y0, x1, y1)``, or ``(x0, y0, z0, x1, y1, z1)`` in 3-D.
Box = tuple[int, ...]


def _array(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two inclusive boxes of the same rank (pixels or voxels).

    Examples:
        >>> box_iou((0, 0, 9, 9), (5, 0, 14, 9))  # 50 of 150 pixels
        0.3333333333333333
        >>> box_iou((0, 0, 0, 1, 1, 1), (1, 0, 0, 2, 1, 1))  # 4 of 12 voxels
        0.3333333333333333
    """
    if len(a) != len(b) or len(a) % 2 or not a:
        raise ValueError(f"boxes of different or odd ranks: {a} and {b}")
    rank = len(a) // 2
    inter = area_a = area_b = 1
    for k in range(rank):
        inter *= max(min(a[k + rank], b[k + rank]) - max(a[k], b[k]) + 1, 0)
        area_a *= a[k + rank] - a[k] + 1
        area_b *= b[k + rank] - b[k] + 1
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def localization_correct(
    predicted_class: int,
    predicted_box: Box,
    ground_truth: Sequence[tuple[int, Box]],
    iou_threshold: float = 0.5,
) -> bool:
    """ILSVRC localization (section 4.1): the class is right and the box overlaps a
    ground-truth box *of that class* with IoU >= ``iou_threshold``.

    Examples:
        >>> localization_correct(3, (0, 0, 9, 9), [(3, (1, 1, 9, 9)), (5, (0, 0, 9, 9))])
        True
    """
    return any(
        c == predicted_class and box_iou(predicted_box, box) >= iou_threshold
        for c, box in ground_truth
    )


#: The point a map points at, by the one rule of :func:`gradcam.maps.peak_point` (``None`` for
#: an empty or constant map; the first maximum in row-major order on ties); ``(x, y)`` of an
#: image's map, ``(x, y, z)`` of a volume's or clip's.
pointing_point = peak_point


def _distance_to_box(point: tuple[int, ...], box: Box) -> float:
    rank = len(point)
    if len(box) != 2 * rank:
        raise ValueError(f"box {box} does not fit a point of {rank} coordinates")
    gaps = [max(box[k] - point[k], 0, point[k] - box[k + rank]) for k in range(rank)]
    return float(np.sqrt(sum(g * g for g in gaps)))


def pointing_hit(
    map2d: Tensor | np.ndarray,
    boxes: Sequence[Box] = (),
    masks: Sequence[Tensor | np.ndarray] = (),
    tolerance: float = 15.0,
) -> bool:
    """The pointing game (section 4.3, Zhang et al. 2016): does the map's maximum fall within
    ``tolerance`` pixels of an annotated instance of the class (a box or a boolean mask of the
    map's size)?

    A constant map points nowhere and misses. A (d, h, w) map of a volume or clip plays the
    same game in voxels, with 3-D boxes and masks: for a clip, a hit with tolerance 0 is a
    maximum on the object in the frame where it is.

    Examples:
        >>> m = torch.zeros(50, 50); m[10, 40] = 1.0
        >>> pointing_hit(m, boxes=[(0, 0, 30, 30)])  # 10 pixels to the right of the box
        True
        >>> v = torch.zeros(4, 8, 8); v[3, 2, 2] = 1.0
        >>> pointing_hit(v, boxes=[(0, 0, 0, 7, 7, 2)], tolerance=0)  # frame 3, box ends at 2
        False
    """
    point = pointing_point(map2d)
    if point is None:
        return False
    if any(_distance_to_box(point, box) <= tolerance for box in boxes):
        return True
    index = tuple(reversed(point))
    for mask in masks:
        instance = _array(mask) > 0
        if instance.shape != _array(map2d).shape:
            raise ValueError(
                f"mask shape {instance.shape} differs from the map's {_array(map2d).shape}"
            )
        if not instance.any():
            continue
        from scipy import ndimage  # here: the commands' parsers import this module

        distance = ndimage.distance_transform_edt(~instance)
        if float(distance[index]) <= tolerance:
            return True
    return False


def recall_hit(map_max: float, threshold: float, class_present: bool, pointed: bool) -> bool:
    """The paper's recall variant of the pointing game (section 4.3, appendix D).

    A map for one of the top-5 predicted classes whose maximum (before normalization) is below
    ``threshold`` rejects the class: a hit when the class is absent from the image. Otherwise
    the map must point at an instance (``pointed``) of a class that is present.

    Examples:
        >>> recall_hit(0.1, 0.5, class_present=False, pointed=False)  # a correct rejection
        True
    """
    if map_max < threshold:
        return not class_present
    return class_present and pointed


def spearman(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape (ties get average ranks).

    Used to compare a method's map with the occlusion map (section 5.3). A constant map has
    no ranking: the correlation is then 0.0, never NaN.

    Examples:
        >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 30.0, 20.0]))
        0.5
    """
    x, y = _array(a).ravel(), _array(b).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps differ in size: {x.size} and {y.size} values")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic)


def area_under_curve(values: Sequence[float] | Tensor | np.ndarray) -> float:
    """Trapezoidal area under a curve sampled at evenly spaced fractions from 0 to 1 (the
    deletion and insertion curves of Petsiuk et al. 2018).

    Examples:
        >>> area_under_curve([1.0, 0.5, 0.0])
        0.5
    """
    curve = _array(values if isinstance(values, (Tensor, np.ndarray)) else np.asarray(values))
    curve = curve.ravel()
    if curve.size < 2:
        return float(curve[0]) if curve.size else 0.0
    return float(np.trapezoid(curve, dx=1.0 / (curve.size - 1)))
