"""Why did the model get it wrong? Failure modes of a classifier (section 6.1, Fig. 6).

For every misclassified image (the top-1 class is not a label of the image, or with ``top5``
no label is among the five best classes), Grad-CAM and Guided Grad-CAM explain both the true
class ``c`` (the image's label the model scores highest) and the predicted class ``p``:
``L^c = ReLU(sum_k alpha_k^c A^k)`` with ``alpha_k^c = 1/Z sum_ij dy^c / dA^k_ij``, and Guided
Grad-CAM ``= GuidedBackprop^c * upsample(L^c)`` (section 3.2).

Where the dataset annotates the true object (boxes or masks), each map's mass inside it is
measured, ``sum(L * M) / sum(L)``, and the failure is put in one of two kinds by where the
predicted class's Grad-CAM map points (its maximum, within ``tolerance`` pixels, as in the
pointing game):

* ``right-object``: it points at the true object: the model looked at the right thing and
  named it wrong (the paper's "seemingly unreasonable predictions have reasonable
  explanations");
* ``wrong-object``: it points elsewhere: the model looked at the wrong thing.

Failures without annotations are ``unannotated``. The rows stream to Parquet through the
evaluation runner (:func:`gradcam.evaluate.run`: progress bar, bounded memory, ``resume``),
and :func:`write_failures_report` writes the self-contained HTML report.

Examples:
    >>> from gradcam import load_model
    >>> from gradcam.evaluate.datasets import read_photos
    >>> photos = read_photos(annotated=True)
    >>> result = diagnose_failures(load_model(), photos, "failures", progress=False)
    >>> [row["predicted_name"] for row in result.rows if row["misclassified"]]
    ['drilling platform']
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

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
    by_shape,
    check_classes,
    heatmaps,
)
from gradcam.evaluate.datasets import Dataset, Sample
from gradcam.evaluate.metrics import pointing_hit
from gradcam.evaluate.runner import ModelSpec, run
from gradcam.evaluate.store import read_rows
from gradcam.layers import resolve_layer
from gradcam.maps import upsample
from gradcam.methods import CAMResult, create_method
from gradcam.methods.planner import explain_built
from gradcam.methods.registry import GRAD_CAM
from gradcam.models import LoadedModel
from gradcam.outputs import output_folder
from gradcam.targets import as_logits
from gradcam.viz import gradient_image, overlay

__all__ = ["KINDS", "METHODS", "Failures", "diagnose_failures", "write_failures_report"]

#: The maps of Fig. 6, for the true and the predicted class.
METHODS = (GRAD_CAM, "guided-gradcam")
#: The kinds of failure, in the report's order.
KINDS = ("right-object", "wrong-object", "unannotated")
_TITLES = {
    "right-object": "Looked at the right object, named it wrong",
    "wrong-object": "Looked at the wrong thing",
    "unannotated": "No annotated object to compare with",
}


@dataclass(frozen=True)
class Failures(Protocol):
    """The failure-mode protocol: see the module docstring.

    Attributes:
        top5: a failure is an image none of whose labels is among the five best classes
            (default: the top-1 class is not a label).
        tolerance: pointing tolerance in photo pixels (the pointing game's 15).
        layer: the layer ``A`` (default: the model's).
        panel_height: height in pixels of the stored pictures of each failure.
    """

    name: ClassVar[str] = "failures"
    top5: bool = False
    tolerance: float = 15.0
    layer: str | None = None
    panel_height: int = 160

    def __post_init__(self) -> None:
        check_number("tolerance", self.tolerance, 0, unit=" pixels")
        check_number("panel_height", self.panel_height, 1, 4096, integer=True, unit=" pixels")

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        layer = self.layer or loaded.default_layer
        tell = progress or (lambda done: None)
        built = {name: create_method(name, loaded.module, layer) for name in METHODS}
        classes = len(loaded.class_names)
        top_k = min(5, classes)

        def score(samples: Sequence[Sample], images: Sequence[Image.Image]) -> list[Scored]:
            for sample in samples:
                _check_labels(sample, classes)
            xs = [loaded.preprocess(image) for image in images]
            scored: list[Scored] = [({}, {})] * len(xs)
            for group in by_shape(xs):
                x = check_input(torch.cat([xs[i] for i in group]), loaded.module)
                with torch.no_grad():
                    logits = as_logits(loaded.module(x)).float().cpu()
                rows = [
                    _prediction(logits[j], samples[i], loaded, top_k, self.top5)
                    for j, i in enumerate(group)
                ]
                wrong = [j for j, row in enumerate(rows) if row["misclassified"]]
                maps: dict[int, dict[str, np.ndarray]] = {}
                if wrong:
                    targets = torch.tensor(
                        [[rows[j]["true_class"], rows[j]["predicted_class"]] for j in wrong]
                    )
                    found = explain_built(built, loaded.module, x[wrong], targets)
                    for n, j in enumerate(wrong):
                        i = group[j]
                        maps[j] = self._explained(found, n, rows[j], images[i], samples[i])
                for j, i in enumerate(group):
                    scored[i] = (rows[j], maps.get(j, {}))
                tell(len(group))
            return scored

        return score

    def _explained(
        self,
        found: dict[str, Any],
        n: int,
        row: dict[str, Any],
        image: Image.Image,
        sample: Sample,
    ) -> dict[str, np.ndarray]:
        """Measure and draw failure ``n`` of the batch; fills ``row``, returns its arrays."""
        cam: CAMResult = found[GRAD_CAM]
        guided = found["guided-gradcam"]
        height, width = guided.maps.shape[-2:]
        cam_heat = upsample(heatmaps(cam)[n], (height, width))
        guided_heat = heatmaps(guided)[n]
        truth = [a for a in sample.annotations if a.class_id == row["true_class"]]
        try:
            mask = region_mask(truth, image.size, (height, width))
        except GradCAMError as exc:
            # The runner adds the image's path.
            raise GradCAMError(f"the true object ({row['true_name']}): {exc}") from None
        if mask is not None:
            for name, heat in (("gradcam", cam_heat), ("guided", guided_heat)):
                row[f"{name}_true_mass"] = mass_inside(heat[0], mask)
                row[f"{name}_predicted_mass"] = mass_inside(heat[1], mask)
            scale = height / image.height
            pointed = pointing_hit(cam_heat[1], masks=[mask], tolerance=self.tolerance * scale)
            row["points_at_object"] = bool(pointed)
            row["kind"] = "right-object" if pointed else "wrong-object"
        else:
            row["kind"] = "unannotated"
        shown = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        photo = shown.copy()
        if mask is not None:
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
            ImageDraw.Draw(photo).rectangle(box, outline=(0, 255, 0), width=2)
        pictures = [
            photo,
            overlay(shown, cam.raw[n, 0]),
            overlay(shown, cam.raw[n, 1]),
            gradient_image(guided.maps[n, 0]),
            gradient_image(guided.maps[n, 1]),
        ]
        size = (max(1, round(width * self.panel_height / height)), self.panel_height)
        panels = np.stack([np.asarray(p.resize(size, Image.Resampling.BILINEAR)) for p in pictures])
        return {GRAD_CAM: cam.raw[n].cpu().numpy(), "panels": panels}

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = [row for row in rows if row.get("error") is None]
        failed = [row for row in done if row.get("misclassified")]
        summary: dict[str, Any] = {
            "images": len(done),
            "misclassified": len(failed),
            "error_rate": round(100.0 * len(failed) / len(done), 2) if done else None,
        }
        for kind in KINDS:
            summary[kind] = sum(row.get("kind") == kind for row in failed)
        for key in ("gradcam_true_mass", "gradcam_predicted_mass"):
            values = [row[key] for row in failed if row.get(key) is not None]
            summary[f"mean_{key}"] = round(float(np.mean(values)), 4) if values else None
        return [summary]


def _check_labels(sample: Sample, classes: int) -> None:
    if not sample.labels:
        raise GradCAMError(f"{sample.path}: no class label, so no way to tell a mistake")
    bad = [c for c in sample.labels if not 0 <= c < classes]
    if bad:
        raise GradCAMError(f"{sample.path}: label {bad[0]} is not one of the model's classes")


def _prediction(
    logits: Tensor, sample: Sample, loaded: LoadedModel, top_k: int, top5: bool
) -> dict[str, Any]:
    """The row of one image: its true and predicted classes, scores and probabilities."""
    probs = logits.softmax(-1)
    top = logits.topk(top_k).indices.tolist()
    # Of several labels, the one the model believes most is the one it missed least.
    true = max(sample.labels, key=lambda c: float(logits[c]))
    predicted = top[0]
    wrong = not any(c in sample.labels for c in top) if top5 else predicted not in sample.labels
    return {
        "true_class": true,
        "true_name": loaded.class_names[true],
        "true_score": float(logits[true]),
        "true_prob": float(probs[true]),
        "predicted_class": predicted,
        "predicted_name": loaded.class_names[predicted],
        "predicted_score": float(logits[predicted]),
        "predicted_prob": float(probs[predicted]),
        "top5": top,
        "misclassified": wrong,
        "kind": None,
        "points_at_object": None,
        "gradcam_true_mass": None,
        "gradcam_predicted_mass": None,
        "guided_true_mass": None,
        "guided_predicted_mass": None,
    }


def diagnose_failures(
    model: LoadedModel | ModelSpec,
    dataset: Dataset,
    out: str | os.PathLike[str],
    *,
    top5: bool = False,
    tolerance: float = 15.0,
    layer: str | None = None,
    resume: bool = False,
    limit: int | None = None,
    batch_size: int = 8,
    workers: int = 1,
    ray: bool | str = False,
    ray_timeout: float = 30.0,
    progress: bool = True,
    report_limit: int | None = 200,
) -> ProtocolResult:
    """Find, explain and group the model's mistakes on ``dataset``; write rows and report.

    Args:
        model: the model (:func:`gradcam.load_model`), or a
            :class:`~gradcam.evaluate.runner.ModelSpec` that each worker loads itself; the
            dataset's class indices must be the model's own.
        dataset: labeled images (any reader of :mod:`gradcam.evaluate.datasets`); boxes or
            masks, where given, tell the two kinds of failure apart.
        out: the run folder: ``rows/*.parquet``, ``maps/*.npz`` (Grad-CAM maps and the
            pictures of each failure), ``summary.json`` and ``report.html``.
        top5: count an image as a failure only when no label is among the top 5.
        tolerance: pointing tolerance in photo pixels.
        layer: the layer ``A`` (default: the model's).
        resume: continue the run in ``out``, skipping the images already done.
        limit: only the first ``limit`` images.
        batch_size: images per batch (the unit of work and of writing).
        workers: local processes (or Ray actors), as for :func:`gradcam.evaluate.runner.run`.
        ray: run on Ray Data (``True``: a local Ray; a string: a cluster address).
        ray_timeout: seconds to wait for a Ray cluster to answer.
        progress: show a progress bar on stderr.
        report_limit: failures shown per kind in ``report.html`` (``None``: all).

    Returns:
        The summary (counts per kind, mean masses) and one row per image.

    Raises:
        GradCAMError: a negative or non-finite ``tolerance``, a negative ``report_limit``,
            an empty or unlabeled dataset, classes that are not the model's, a layer the
            model does not have, or an ``out`` that cannot be a folder (all before any work).
    """
    protocol = Failures(top5=top5, tolerance=tolerance, layer=layer)
    _check_report_limit(report_limit)
    loaded = model.load() if isinstance(model, ModelSpec) else model
    if not dataset.samples:
        raise GradCAMError(f"no images in dataset {dataset.name!r}")
    if not any(sample.labels for sample in dataset.samples):
        raise GradCAMError(
            f"dataset {dataset.name!r} has no class labels: failures need the true class"
        )
    check_classes(loaded, dataset)
    resolve_layer(loaded.module, layer or loaded.default_layer)
    output_folder(out)
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
    write_failures_report(out, result.summary, report_limit)
    return result


def _check_report_limit(limit: int | None) -> None:
    if limit is not None:
        check_number("report_limit", limit, 0, integer=True)


def _stored_panels(folder: Path, wanted: set[int]) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, panels)`` of the wanted failures, reading one shard and one picture set at a
    time (bounded memory however large the run)."""
    for shard in sorted((folder / "maps").glob("part-*.npz")):
        with np.load(shard) as data:
            for key in data.files:
                index, _, name = key.partition("/")
                if name == "panels" and int(index) in wanted:
                    yield int(index), data[key]


def write_failures_report(
    folder: str | os.PathLike[str],
    summary: list[dict[str, Any]] | None = None,
    limit: int | None = 200,
) -> Path:
    """Write ``report.html`` of a failures run folder: the counts, then the failures with
    their pictures, grouped by kind, at most ``limit`` per kind (``None``: all; every
    failure is in the rows either way). Returns the report's path.

    Raises:
        GradCAMError: ``limit`` is not ``None`` or an integer of at least 0.
    """
    _check_report_limit(limit)
    root = Path(folder)
    rows = [r for r in read_rows(root) if r.get("error") is None and r.get("misclassified")]
    bad = [r for r in read_rows(root) if r.get("error") is not None]
    path = root / "report.html"
    with HtmlReport(path, "gradcam diagnose failures") as report:
        report.paragraph(
            "For each misclassified image: the photo (the true object boxed in green), "
            "Grad-CAM and Guided Grad-CAM for the true class and for the predicted class. "
            "A failure 'looked at the right object' when the predicted class's Grad-CAM map "
            "points at the true object."
        )
        report.table(summary or [])
        for kind in KINDS:
            group = [r for r in rows if r.get("kind") == kind]
            report.heading(f"{_TITLES[kind]} ({len(group)})")
            shown = group if limit is None else group[:limit]
            if len(shown) < len(group):
                report.paragraph(
                    f"The first {len(shown)} are shown; all {len(group)} are in the rows "
                    f"({root / 'rows'})."
                )
            by_index = {int(r["index"]): r for r in shown}
            for index, panels in _stored_panels(root, set(by_index)):
                row = by_index[index]
                titles = [
                    f"{Path(row['image']).name}",
                    f"Grad-CAM: {row['true_name']} (true)",
                    f"Grad-CAM: {row['predicted_name']} (predicted)",
                    f"Guided Grad-CAM: {row['true_name']}",
                    f"Guided Grad-CAM: {row['predicted_name']}",
                ]
                report.figure(
                    [(t, Image.fromarray(p)) for t, p in zip(titles, panels, strict=True)],
                    caption=_caption(row),
                )
        if bad:
            report.heading(f"Images that could not be read ({len(bad)})")
            report.table([{"image": r["image"], "error": r["error"]} for r in bad])
    return path


def _caption(row: dict[str, Any]) -> str:
    text = (
        f"{row['image']}: true {row['true_name']} (score {row['true_score']:.3g}, "
        f"p={row['true_prob']:.3g}); predicted {row['predicted_name']} "
        f"(score {row['predicted_score']:.3g}, p={row['predicted_prob']:.3g})"
    )
    if row.get("gradcam_true_mass") is not None:
        text += (
            f"; mass inside the true object: Grad-CAM {row['gradcam_true_mass']:.2f} (true) / "
            f"{row['gradcam_predicted_mass']:.2f} (predicted), Guided Grad-CAM "
            f"{row['guided_true_mass']:.2f} / {row['guided_predicted_mass']:.2f}"
        )
    return text
