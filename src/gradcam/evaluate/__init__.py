"""The paper's evaluations: metrics on maps and boxes, dataset readers, protocols.

``metrics`` (IoU localization, pointing game, rank correlation, curve areas), ``datasets``
(plain folders, ImageNet-style, PASCAL VOC, COCO) and ``protocols`` (localization, pointing,
faithfulness, sanity) run one image at a time in one process. Still to come (issue 4): the
ablations protocol, streaming results to Parquet with ``--resume``, ``--workers`` and Ray, and
the synthetic benchmark with its trained model.
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
