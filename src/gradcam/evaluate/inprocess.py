"""The protocols run in this process, by name: one call, the protocol's own defaults.

Each function builds its protocol from ``settings`` (any of the protocol's dataclass fields;
the others keep the class's defaults, which live only on the class), checks the model's
classes against the dataset where the protocol scores labels, and runs it with
:func:`gradcam.evaluate.runner.run` (with its progress bar on stderr). Use that function
itself to stream to disk, resume, or use local processes or Ray.

Examples:
    >>> from gradcam.evaluate import read_synthetic
    >>> result = localization(shapes, read_synthetic("bench", 4), threshold=0.2)
    >>> result.protocol, result.summary[0]["images"]
    ('localization', 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gradcam.evaluate.base import ProtocolResult, check_classes
from gradcam.evaluate.datasets import Dataset
from gradcam.evaluate.registry import protocol_spec
from gradcam.evaluate.runner import run
from gradcam.models import LoadedModel

__all__ = ["ablations", "faithfulness", "localization", "pointing", "run_protocol", "sanity"]


def run_protocol(
    name: str,
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    limit: int | None = None,
    **settings: Any,
) -> ProtocolResult:
    """Run the protocol called ``name`` with ``settings`` in this process.

    Sequences given for tuple settings (``methods``, ``variants``) are taken as tuples.

    Raises:
        GradCAMError: an unknown protocol or setting, a refused value, or a dataset whose
            classes are not the model's.
    """
    spec = protocol_spec(name)
    fixed = {
        k: tuple(v) if isinstance(v, (list, Sequence)) and not isinstance(v, str) else v
        for k, v in settings.items()
    }
    protocol = spec.create(**fixed)
    if spec.needs_labels:
        check_classes(loaded, dataset)
    return run(protocol, loaded, dataset, limit=limit)


def localization(loaded: LoadedModel, dataset: Dataset, **settings: Any) -> ProtocolResult:
    """Run :class:`~gradcam.evaluate.protocols.Localization` in this process."""
    return run_protocol("localization", loaded, dataset, **settings)


def ablations(loaded: LoadedModel, dataset: Dataset, **settings: Any) -> ProtocolResult:
    """Run :class:`~gradcam.evaluate.protocols.Ablations` in this process."""
    return run_protocol("ablations", loaded, dataset, **settings)


def pointing(loaded: LoadedModel, dataset: Dataset, **settings: Any) -> ProtocolResult:
    """Run :class:`~gradcam.evaluate.protocols.Pointing` in this process."""
    return run_protocol("pointing", loaded, dataset, **settings)


def faithfulness(loaded: LoadedModel, dataset: Dataset, **settings: Any) -> ProtocolResult:
    """Run :class:`~gradcam.evaluate.protocols.Faithfulness` in this process."""
    return run_protocol("faithfulness", loaded, dataset, **settings)


def sanity(loaded: LoadedModel, dataset: Dataset, **settings: Any) -> ProtocolResult:
    """Run :class:`~gradcam.evaluate.protocols.Sanity` in this process."""
    return run_protocol("sanity", loaded, dataset, **settings)
