"""The paper's evaluations: metrics on maps and boxes, dataset readers, protocols.

This package is being built in slices (issue 4): the metrics and the dataset readers are here;
the protocol runners (localization, pointing, faithfulness, sanity, ablations), streaming
results to disk, ``--workers`` and Ray come next.
"""

from gradcam.evaluate.metrics import (
    Box,
    area_under_curve,
    box_iou,
    localization_correct,
    pointing_hit,
    pointing_point,
    recall_hit,
    spearman,
)

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
