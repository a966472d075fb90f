"""Does a class rely on something other than its object? Dataset bias (section 6.3, Fig. 8).

For every image, the Grad-CAM map ``L^c`` of its labeled class ``c`` (or of the predicted
class) is compared with every annotated region kind ``r`` in the image (any COCO category or
mask given with the data that is not one of the model's classes: a background texture, a
badge, a face) and with the class's own object: the fraction of the map's mass on it,
``f(c, r) = sum(L^c * M_r) / sum(L^c)``. Per class and region kind, the mean fraction over
the images that have the region, with a Student-t confidence interval, tells what the class
looks at; a region the class puts more mass on than on its own object is flagged (the
paper's nurse classifier looking at faces and hair rather than at the stethoscope).

Dataset categories are matched to the model's classes by name; the other categories are the
region kinds. With a dataset whose labels are the model's class indices (no category names,
such as the shipped photos), only the own object is measured.

Examples:
    >>> mean_interval([0.5, 0.6, 0.7])  # mean, and the 95% t-interval
    (0.6, 0.35158..., 0.84841...)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from scipy import stats

from gradcam.checks import check_number
from gradcam.diagnose.regions import mass_inside, region_mask
from gradcam.diagnose.report import HtmlReport
from gradcam.engine import check_input
from gradcam.errors import GradCAMError
from gradcam.evaluate.base import (
    Progress,
    Protocol,
    ProtocolResult,
    Scored,
    Scorer,
    heatmaps,
)
from gradcam.evaluate.datasets import Dataset, Sample
from gradcam.evaluate.runner import ModelSpec, run
from gradcam.evaluate.store import plain
from gradcam.layers import resolve_layer
from gradcam.maps import upsample
from gradcam.methods import create_method
from gradcam.methods.planner import explain_built
from gradcam.methods.registry import GRAD_CAM
from gradcam.models import LoadedModel
from gradcam.outputs import output_folder
from gradcam.targets import as_logits

__all__ = ["Bias", "RegionStat", "diagnose_bias", "mean_interval", "summarize_bias"]

#: The region name of a class's own annotated object.
OWN = "(own object)"


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The mean of fractions in [0, 1] and its Student-t confidence interval, clipped to
    [0, 1]: ``mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n)``.

    One value has no spread to estimate: its interval is all of [0, 1]. Never NaN.

    Examples:
        >>> mean_interval([0.2, 0.2])
        (0.2, 0.2, 0.2)
    """
    if not values:
        raise ValueError("mean_interval needs at least one value")
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if array.size < 2:
        return mean, 0.0, 1.0
    spread = float(array.std(ddof=1)) / math.sqrt(array.size)
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, array.size - 1)) * spread
    return mean, max(0.0, mean - half), min(1.0, mean + half)


@dataclass(frozen=True)
class RegionStat:
    """How much of one class's maps falls on one region kind.

    Attributes:
        class_name: the explained class.
        region: the region kind (:data:`OWN` for the class's own object).
        images: the images with both the class and the region.
        mean: the mean fraction of the map's mass on the region.
        low: lower end of the confidence interval.
        high: upper end.
        flagged: the class puts more mass on this region than on its own object.
        significant: flagged, and the intervals do not overlap.
    """

    class_name: str
    region: str
    images: int
    mean: float
    low: float
    high: float
    flagged: bool = False
    significant: bool = False


def summarize_bias(
    records: Iterable[tuple[str, str, float]], confidence: float = 0.95
) -> list[RegionStat]:
    """Aggregate ``(class, region, fraction)`` records into one :class:`RegionStat` per class
    and region, sorted by class then by mean fraction (largest first), own object flagged
    against.

    Examples:
        >>> found = summarize_bias([("nurse", OWN, 0.2), ("nurse", "face", 0.6)])
        >>> [(s.region, s.flagged) for s in found]
        [('face', True), ('(own object)', False)]
    """
    groups: dict[tuple[str, str], list[float]] = {}
    for class_name, region, fraction in records:
        groups.setdefault((class_name, region), []).append(float(fraction))
    found = []
    for (class_name, region), values in groups.items():
        mean, low, high = mean_interval(values, confidence)
        found.append(RegionStat(class_name, region, len(values), mean, low, high))
    own = {s.class_name: s for s in found if s.region == OWN}
    flagged = []
    for s in found:
        mine = own.get(s.class_name)
        if s.region != OWN and mine is not None and s.mean > mine.mean:
            s = RegionStat(**{**s.__dict__, "flagged": True, "significant": s.low > mine.high})
        flagged.append(s)
    return sorted(flagged, key=lambda s: (s.class_name, -s.mean, s.region))


@dataclass(frozen=True)
class Bias(Protocol):
    """The bias protocol: see the module docstring.

    Attributes:
        class_names: the dataset's category names (empty: labels are model class indices).
        regions: the region kinds to measure (default: every category not a model class).
        explain: ``"label"`` (each labeled class of the image) or ``"predicted"`` (top 1).
        confidence: of the intervals.
        layer: the layer ``A`` (default: the model's).
    """

    name: ClassVar[str] = "bias"
    class_names: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    explain: str = "label"
    confidence: float = 0.95
    layer: str | None = None

    def settings(self) -> dict[str, Any]:
        # As JSON reads them back (lists, not tuples), so that a resumed run matches.
        settings: dict[str, Any] = plain(super().settings())
        return settings

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        layer = self.layer or loaded.default_layer
        cam = {GRAD_CAM: create_method(GRAD_CAM, loaded.module, layer)}
        to_model, kinds = _split_categories(self.class_names, loaded, self.regions)

        tell = progress or (lambda done: None)

        def score(samples: Sequence[Sample], images: Sequence[Image.Image]) -> list[Scored]:
            scored: list[Scored] = []
            for sample, image in zip(samples, images, strict=True):
                x = check_input(loaded.preprocess(image), loaded.module)
                if self.explain == "predicted":
                    with torch.no_grad():
                        classes = [int(as_logits(loaded.module(x))[0].argmax())]
                else:
                    classes = sorted({to_model[c] for c in sample.labels if c in to_model})
                    if not classes:
                        raise GradCAMError(f"{sample.path}: no label that is a model class")
                result = explain_built(cam, loaded.module, x, [*classes])[GRAD_CAM]
                heat = upsample(heatmaps(result)[0], (x.shape[-2], x.shape[-1]))
                size = (x.shape[-2], x.shape[-1])
                fractions = []
                for k, c in enumerate(classes):
                    name = loaded.class_names[c]
                    own = [a for a in sample.annotations if to_model.get(a.class_id) == c]
                    pairs = [(OWN, own)] + [
                        (kind, [a for a in sample.annotations if a.class_id == category])
                        for category, kind in kinds.items()
                    ]
                    for region, instances in pairs:
                        try:
                            mask = region_mask(instances, image.size, size)
                        except GradCAMError as exc:
                            # The runner adds the image's path.
                            raise GradCAMError(f"region {region!r}: {exc}") from None
                        if mask is not None:
                            fraction = mass_inside(heat[k], mask)
                            fractions.append(
                                {"class": name, "region": region, "fraction": fraction}
                            )
                scored.append(({"explained": classes, "fractions": fractions}, {}))
                tell(1)
            return scored

        return score

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        records = [
            (f["class"], f["region"], f["fraction"])
            for row in rows
            if row.get("error") is None
            for f in row.get("fractions") or []
        ]
        return [
            {
                "class": s.class_name,
                "region": s.region,
                "images": s.images,
                "mean_fraction": round(s.mean, 4),
                "ci_low": round(s.low, 4),
                "ci_high": round(s.high, 4),
                "flagged": s.flagged,
                "significant": s.significant,
            }
            for s in summarize_bias(records, self.confidence)
        ]


def _split_categories(
    class_names: Sequence[str], loaded: LoadedModel, regions: Sequence[str]
) -> tuple[dict[int, int], dict[int, str]]:
    """``{dataset category: model class}`` for the categories that are model classes, and
    ``{dataset category: region kind}`` for the chosen others."""
    if not class_names:
        return {c: c for c in range(len(loaded.class_names))}, {}
    model = {n: i for i, n in enumerate(loaded.class_names)}
    to_model = {i: model[n] for i, n in enumerate(class_names) if n in model}
    kinds = {i: n for i, n in enumerate(class_names) if n not in model}
    if regions:
        unknown = [r for r in regions if r not in kinds.values()]
        if unknown:
            raise GradCAMError(
                f"no region kind {unknown[0]!r} in the dataset; its region kinds are "
                f"{', '.join(kinds.values()) or '(none)'}"
            )
        kinds = {i: n for i, n in kinds.items() if n in regions}
    return to_model, kinds


def diagnose_bias(
    model: LoadedModel | ModelSpec,
    dataset: Dataset,
    out: str | os.PathLike[str],
    *,
    regions: Sequence[str] = (),
    explain: str = "label",
    confidence: float = 0.95,
    layer: str | None = None,
    resume: bool = False,
    limit: int | None = None,
    batch_size: int = 8,
    workers: int = 1,
    ray: bool | str = False,
    ray_timeout: float = 30.0,
    progress: bool = True,
) -> ProtocolResult:
    """Measure, per class and region kind, the mean fraction of the class's Grad-CAM map on
    the region, with confidence intervals; rows stream to ``out`` (Parquet, ``resume``), the
    table goes to ``summary.json`` and ``report.html``.

    ``model`` is a loaded model or a :class:`~gradcam.evaluate.runner.ModelSpec` that each
    worker loads itself; ``resume``, ``limit``, ``batch_size``, ``workers``, ``ray`` and
    ``ray_timeout`` are :func:`gradcam.evaluate.runner.run`'s.

    Raises:
        GradCAMError: an empty dataset, no category or label that is a model class, an
            unknown region kind or layer, or ``explain`` not ``"label"``/``"predicted"``.
    """
    if not dataset.samples:
        raise GradCAMError(f"no images in dataset {dataset.name!r}")
    loaded = model.load() if isinstance(model, ModelSpec) else model
    if explain not in ("label", "predicted"):
        raise GradCAMError(f"explain must be 'label' or 'predicted', got {explain!r}")
    check_number("confidence", confidence, 0, 1, low_open=True, high_open=True)
    to_model, _ = _split_categories(dataset.class_names, loaded, regions)
    if explain == "label" and not any(c in to_model for s in dataset.samples for c in s.labels):
        raise GradCAMError(
            f"dataset {dataset.name!r} has no label that is one of the model's classes"
        )
    resolve_layer(loaded.module, layer or loaded.default_layer)
    output_folder(out)
    protocol = Bias(tuple(dataset.class_names), tuple(regions), explain, confidence, layer)
    result = run(
        protocol,
        model,
        dataset,
        out=out,
        resume=resume,
        limit=limit,
        batch_size=batch_size,
        workers=workers,
        ray=ray,
        ray_timeout=ray_timeout,
        progress=progress,
    )
    with HtmlReport(Path(out) / "report.html", "gradcam diagnose bias") as report:
        report.paragraph(
            "Per class and annotated region kind: the mean fraction of the class's Grad-CAM "
            f"map on the region, with its {confidence:.0%} t-interval. 'flagged': the class "
            "puts more of its map there than on its own object ('significant': the intervals "
            "do not overlap)."
        )
        report.table(result.summary)
        if result.failed:
            report.heading(f"Images that could not be used ({len(result.failed)})")
            report.table([{"image": r["image"], "error": r["error"]} for r in result.failed])
    return result
