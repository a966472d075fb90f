"""The paper's evaluations: metrics, dataset readers, protocols, and a runner that scales.

The data flow: ``datasets`` reads a folder layout into samples (images and annotations;
:func:`open_dataset` detects the layout, ``coco`` holds COCO's file format);
a ``protocols`` object scores each image with a model (its maps, boxes, hits, correlations)
and summarizes the rows into the paper's tables, using ``metrics``; the ``runner`` streams
the samples through it in batches (in this process, local processes or Ray) and the
``store`` writes rows to Parquet and maps to ``.npz`` shards as they come, so runs resume.
"""

from gradcam.evaluate.datasets import (
    Annotation,
    Dataset,
    DatasetError,
    Sample,
    imagenet_synsets,
    open_dataset,
    read_coco,
    read_folder,
    read_imagenet,
    read_photos,
    read_synthetic,
    read_voc,
    write_benchmark,
)
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
from gradcam.evaluate.protocols import (
    ABLATIONS,
    Ablations,
    Faithfulness,
    Localization,
    Pointing,
    Protocol,
    ProtocolResult,
    Sanity,
)
from gradcam.evaluate.runner import ModelSpec, run
from gradcam.evaluate.store import read_maps, read_rows

__all__ = [
    "ABLATIONS",
    "Ablations",
    "Annotation",
    "Box",
    "Dataset",
    "DatasetError",
    "Faithfulness",
    "Localization",
    "ModelSpec",
    "Pointing",
    "Protocol",
    "ProtocolResult",
    "Sample",
    "Sanity",
    "area_under_curve",
    "box_iou",
    "imagenet_synsets",
    "localization_correct",
    "open_dataset",
    "pointing_hit",
    "pointing_point",
    "read_coco",
    "read_folder",
    "read_imagenet",
    "read_maps",
    "read_photos",
    "read_rows",
    "read_synthetic",
    "read_voc",
    "recall_hit",
    "run",
    "spearman",
    "write_benchmark",
]
