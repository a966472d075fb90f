"""The paper's evaluations: metrics, dataset readers, protocols, and a runner that scales.

The data flow: ``datasets`` reads a folder layout into samples (images and annotations;
:func:`open_dataset` detects the layout, ``coco`` holds COCO's file format); a protocol
(``base`` says what one is, ``protocols`` holds the paper's, each registered once in
``registry``, which the CLI and the docs read) scores each image with a model (its maps,
boxes, hits, correlations) and summarizes the rows into the paper's tables, using
``metrics``; the ``runner`` streams the samples through it in batches (in this process, local
processes or Ray; ``inprocess`` runs one by name in one call) and the ``store`` writes rows
to Parquet and maps to ``.npz`` shards as they come, so runs resume.

Examples:
    >>> from gradcam.evaluate import localization, read_synthetic
    >>> localization(shapes, read_synthetic("bench", 4)).summary[0]["images"]
    4

Importing this package registers every protocol (each module registers its own when
imported), in this order: the paper's, then the field's (``road``, ``confidence``); the
registry needs no list of them.
"""

# isort: off
from gradcam.evaluate.protocols import (
    ABLATIONS,
    Ablations,
    Faithfulness,
    Localization,
    Pointing,
    Sanity,
)
from gradcam.evaluate.seeds import Seeds
from gradcam.evaluate.confidence import Confidence, Road

# isort: on
from gradcam.evaluate.base import Protocol, ProtocolResult
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
from gradcam.evaluate.inprocess import (
    ablations,
    faithfulness,
    localization,
    pointing,
    run_protocol,
    sanity,
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
from gradcam.evaluate.registry import (
    ProtocolSpec,
    create_protocol,
    protocol_names,
    protocol_spec,
    protocol_specs,
    register_protocol,
)
from gradcam.evaluate.runner import ModelSpec, run
from gradcam.evaluate.store import read_maps, read_rows

__all__ = [
    "ABLATIONS",
    "Ablations",
    "Annotation",
    "Box",
    "Confidence",
    "Dataset",
    "DatasetError",
    "Faithfulness",
    "Localization",
    "ModelSpec",
    "Pointing",
    "Protocol",
    "ProtocolResult",
    "ProtocolSpec",
    "Road",
    "Sample",
    "Sanity",
    "Seeds",
    "ablations",
    "area_under_curve",
    "box_iou",
    "create_protocol",
    "faithfulness",
    "imagenet_synsets",
    "localization",
    "localization_correct",
    "open_dataset",
    "pointing",
    "pointing_hit",
    "pointing_point",
    "protocol_names",
    "protocol_spec",
    "protocol_specs",
    "read_coco",
    "read_folder",
    "read_imagenet",
    "read_maps",
    "read_photos",
    "read_rows",
    "read_synthetic",
    "read_voc",
    "recall_hit",
    "register_protocol",
    "run",
    "run_protocol",
    "sanity",
    "spearman",
    "write_benchmark",
]
