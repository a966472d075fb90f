"""Network Dissection's IoU counts: each image's upsampled, thresholded maps against its labels.

For unit ``k`` with threshold ``T_k`` and an image annotated at ``H x W`` (Bau et al., 2017):

* ``S^k``: its map ``A^k`` (``h x w``) upsampled bilinearly to ``H x W``
  (``align_corners=False``, as ``F.interpolate`` and NetDissect do)::

      S^k[Y, X] = (1 - b) ((1 - a) A[y0, x0] + a A[y0, x1]) + b ((1 - a) A[y1, x0] + a A[y1, x1])

  with ``y = max((Y + 1/2) h / H - 1/2, 0)``, ``y0 = min(floor(y), h - 1)``,
  ``y1 = min(y0 + 1, h - 1)``, ``b = y - y0`` (at most 1), and likewise ``x0, x1, a`` for
  column ``X``;
* the mask ``M_k = S^k > T_k``;
* the counts, summed over the images: ``I[k, c] += |M_k & L_c|`` for each label map,
  ``L[c] += |L_c|``, and ``A[k, g] += |M_k|`` for each category ``g`` the image is annotated
  in; :meth:`Counts.iou` turns them into ``IoU[k, c] = I[k, c] / (A[k, g(c)] + L[c] - I[k, c])``.

The pixels are never stored: a pixel is a convex combination of its four cells, so only the
pixels between four cells of which one is above ``T_k`` are computed (``T_k`` is the top 0.5%
of the activations: a few blocks per map), by a loop that numba compiles once (cached on disk)
and that runs without the GIL. They are computed in float64 with integer weights
(:func:`upsampling_axis`), so that the masks are those of exact arithmetic: a pixel exactly at
``T_k`` (between equal cells, on a plateau such as ReLU6's 6, at a border) is not above it,
where float32 upsampling would decide by its rounding. Elsewhere they equal ``F.interpolate``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradcam.dissect.concepts import ConceptError
from gradcam.util import compiled

__all__ = ["Counts", "upsampling_axis"]


@functools.lru_cache(maxsize=64)
def upsampling_axis(size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear upsampling of ``side`` cells to ``size`` pixels along one axis
    (``align_corners=False``), in integers: each pixel's weight of its next cell times
    ``2 * size``, and each cell's pixels.

    Pixel ``Y``'s source is ``y = max((2 Y + 1) side - size, 0) / (2 size)``; its first cell
    ``y0 = min(floor(y), side - 1)``, its weight of the next ``y - y0``. Kept as the integer
    ``2 size (y - y0)``, the weights are exact (a float64 ``y - y0`` is not, unless
    ``side / size`` is dyadic).

    Returns:
        (size,) the weights times ``2 * size`` (float64 holding integers), and (side + 1,)
        ``start``: the pixels whose first cell is ``r`` are ``start[r]:start[r + 1]``.

    Examples:
        Sources 0 (clamped), 0.25, 0.75 and 1.25 (weights 0, 1/4, 3/4, 1/4 times 8); the last
        pixel's next cell is its own.

        >>> weights, start = upsampling_axis(4, 2)
        >>> weights.tolist(), start.tolist()
        ([0.0, 2.0, 6.0, 2.0], [0, 3, 4])
    """
    numerators = np.maximum((2 * np.arange(size) + 1) * side - size, 0)
    first = np.minimum(numerators // (2 * size), side - 1)
    weights = (numerators - first * 2 * size).astype(np.float64)
    start = np.searchsorted(first, np.arange(side + 1)).astype(np.int64)
    return weights, start


@compiled
def _count_images(
    maps: np.ndarray,
    images: np.ndarray,
    thresholds: np.ndarray,
    weights_y: np.ndarray,
    start_y: np.ndarray,
    weights_x: np.ndarray,
    start_x: np.ndarray,
    labels: np.ndarray,
    categories: np.ndarray,
    intersection: np.ndarray,
    activated: np.ndarray,
    labelled: np.ndarray,
) -> None:  # pragma: no cover - compiled; its results are tested against exact arithmetic
    """Image ``images[i]`` of ``maps`` (B, C, h, w) against ``labels[i]`` (L, H, W), whose
    layers are in ``categories[i]`` (L,) (-1: no layer)."""
    channels, height, width = maps.shape[1:]
    layers = labels.shape[1]
    scale_y, scale_x = 2.0 * labels.shape[2], 2.0 * labels.shape[3]
    for i in range(images.shape[0]):
        image = labels[i]
        for layer in range(layers):
            if categories[i, layer] < 0:
                continue
            # Labels come in regions: adding runs, not pixels, keeps one bin's adds off a chain.
            flat = image[layer].ravel()
            run, concept = 0, flat[0]
            for pixel in flat:
                if pixel == concept:
                    run += 1
                else:
                    labelled[concept] += run
                    run, concept = 1, pixel
            labelled[concept] += run
        labelled[0] = 0
        for k in range(channels):
            cells = maps[images[i], k]
            limit = thresholds[k]
            live = False
            for value in cells.ravel():  # no cell above T, no pixel: most maps (the top 0.5%)
                if value > limit:
                    live = True
                    break
            if not live:
                continue
            # S > T as (2 H)(2 W) S > (2 H)(2 W) T with integer weights: float32 cells times
            # integers up to 2^13 twice, exact in float64 (for label maps up to 4096 pixels and
            # cells of like magnitude), so plateaus, borders and ties at T_k are decided exactly.
            scaled = limit * scale_y * scale_x
            above = 0
            for r in range(height):
                r1 = min(r + 1, height - 1)
                for c in range(width):
                    c1 = min(c + 1, width - 1)
                    v00 = np.float64(cells[r, c])
                    v01 = np.float64(cells[r, c1])
                    v10 = np.float64(cells[r1, c])
                    v11 = np.float64(cells[r1, c1])
                    if not (v00 > limit or v01 > limit or v10 > limit or v11 > limit):
                        continue
                    x0, x1 = start_x[c], start_x[c + 1]
                    if x0 == x1:
                        continue
                    # A pixel's value is linear in its column weight a, which grows along the
                    # block's columns: a row whose first and last pixels are not above T has none
                    # above it (exact products: the computed values are the exact ones).
                    a0, a1 = weights_x[x0], weights_x[x1 - 1]
                    for y in range(start_y[r], start_y[r + 1]):
                        b = weights_y[y]
                        left = (scale_y - b) * v00 + b * v10
                        right = (scale_y - b) * v01 + b * v11
                        if not (
                            (scale_x - a0) * left + a0 * right > scaled
                            or (scale_x - a1) * left + a1 * right > scaled
                        ):
                            continue
                        for x in range(x0, x1):
                            a = weights_x[x]
                            if (scale_x - a) * left + a * right > scaled:
                                above += 1
                                for layer in range(layers):
                                    concept = image[layer, y, x]
                                    if concept > 0:
                                        intersection[k, concept] += 1
            if above:
                for layer in range(layers):
                    category = categories[i, layer]
                    repeated = category < 0
                    for before in range(layer):
                        repeated = repeated or categories[i, before] == category
                    if not repeated:
                        activated[k, category] += above


def _id_type(samples: Sequence[Sequence[tuple[int, np.ndarray]]], images: list[int]) -> np.dtype:
    """uint8 or uint16 when the label maps are (the compiled loop is compiled once per type, and
    small ids keep the copies small), else int64."""
    kind = np.result_type(*(ids.dtype for j in images for _, ids in samples[j]))
    return kind if kind in (np.uint8, np.uint16) else np.dtype(np.int64)


@dataclass
class Counts:
    """The streamed IoU counts of a dissection: a few MB whatever the number of images.

    The counts are integers held in float64, so the order in which images or partial counts
    are added never changes them.

    Attributes:
        intersection: (C, N + 1) ``I[k, c]``: pixels of unit ``k``'s masks labelled ``c``.
        activated: (C, G) ``A[k, g]``: pixels of unit ``k``'s masks in images annotated in
            category ``g``.
        labelled: (N + 1,) ``L[c]``: pixels labelled ``c`` (column 0, unlabelled, unused).

    Examples:
        A 2 x 2 map upsampled to 4 x 4 (rows ``[2.5, 2.75, 3.25, 3.5]`` and ``[3, 3.25, 3.75,
        4]`` at the bottom): 5 pixels are above ``T = 3.2``, 3 of them labelled 1 and 2
        labelled 2.

        >>> counts = Counts.zeros(channels=1, concepts=2, categories=1)
        >>> maps = np.array([[[1.0, 2.0], [3.0, 4.0]]], dtype=np.float32)
        >>> labels = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [0, 2, 1, 2]])
        >>> counts.add(maps[None], np.array([3.2]), [[(0, labels)]])
        >>> counts.intersection.tolist(), counts.activated.tolist(), counts.labelled.tolist()
        ([[0.0, 3.0, 2.0]], [[5.0]], [0.0, 5.0, 2.0])
        >>> counts.iou(np.array([-1, 0, 0])).round(3).tolist()  # 3 / (5 + 5 - 3), 2 / (5 + 2 - 2)
        [[0.429, 0.4]]
    """

    intersection: np.ndarray
    activated: np.ndarray
    labelled: np.ndarray

    @classmethod
    def zeros(cls, channels: int, concepts: int, categories: int) -> Counts:
        """Zero counts for ``channels`` units, ``concepts`` concepts in ``categories``."""
        return cls(
            np.zeros((channels, concepts + 1)),
            np.zeros((channels, categories)),
            np.zeros(concepts + 1),
        )

    def empty_like(self) -> Counts:
        """Zero counts of the same shapes."""
        return Counts(
            np.zeros_like(self.intersection),
            np.zeros_like(self.activated),
            np.zeros_like(self.labelled),
        )

    def fold(self, other: Counts) -> None:
        """Move ``other``'s counts into these (``other`` is left at zero)."""
        for mine, theirs in (
            (self.intersection, other.intersection),
            (self.activated, other.activated),
            (self.labelled, other.labelled),
        ):
            mine += theirs
            theirs[...] = 0

    def add(
        self,
        maps: np.ndarray,
        thresholds: np.ndarray,
        samples: Sequence[Sequence[tuple[int, np.ndarray]]],
        first: int = 0,
    ) -> None:
        """Add a batch of images: ``maps`` (B, C, h, w) their units' maps, ``thresholds`` (C,)
        the ``T_k``, ``samples[j]`` image ``j``'s ``(category, labels)`` pairs, each labels map
        (H, W) of concept ids at the segmentation's size (0: unlabelled; no pairs: the image is
        not annotated, and skipped). A concept in two layers counts in both.

        Raises:
            ConceptError: an image's label maps differ in size, or hold an id out of range
                (``first``: the batch's first image number, for the message).
        """
        groups: dict[tuple[int, ...], list[int]] = {}
        for j, layers in enumerate(samples):
            sizes = {ids.shape for _, ids in layers}
            if len(sizes) > 1 or any(len(size) != 2 for size in sizes):
                raise ConceptError(
                    f"concept image {first + j}: label maps of sizes {sorted(sizes)}, not one "
                    "(H, W) size"
                )
            if sizes:
                groups.setdefault(next(iter(sizes)), []).append(j)
        width = self.intersection.shape[1]
        limits = np.ascontiguousarray(thresholds, dtype=np.float64)
        cells = np.ascontiguousarray(maps, dtype=np.float32)
        for (height, width_px), images in groups.items():
            depth = max(len(samples[j]) for j in images)
            labels = np.zeros(
                (len(images), depth, height, width_px), dtype=_id_type(samples, images)
            )
            categories = np.full((len(images), depth), -1, dtype=np.int64)
            for i, j in enumerate(images):
                for layer, (category, ids) in enumerate(samples[j]):
                    labels[i, layer] = ids
                    categories[i, layer] = category
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= width:
                raise ConceptError(
                    f"concept images {first + images[0]}..{first + images[-1]}: label ids "
                    f"{low}..{high} outside 0..{width - 1}"
                )
            weights_y, start_y = upsampling_axis(height, maps.shape[2])
            weights_x, start_x = upsampling_axis(width_px, maps.shape[3])
            _count_images(
                cells,
                np.asarray(images, dtype=np.int64),
                limits,
                weights_y,
                start_y,
                weights_x,
                start_x,
                labels,
                categories,
                self.intersection,
                self.activated,
                self.labelled,
            )

    def iou(self, category_of: np.ndarray) -> np.ndarray:
        """(C, N) ``I / (A + L - I)``, 0 where nothing was activated nor labelled;
        ``category_of`` (N + 1,): each concept id's category (id 0: -1)."""
        cats = np.maximum(category_of[1:], 0)
        inter = self.intersection[:, 1:]
        union = self.activated[:, cats] + self.labelled[None, 1:] - inter
        out: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        return out
