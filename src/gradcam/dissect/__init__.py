"""Textual explanations through named neurons (section 7 of the paper, appendix F).

* :mod:`.concepts`: concept images with labelled pixels: :func:`read_broden` (Broden's own
  layout) and :func:`generated_concepts` (a small offline stand-in with exact masks);
* :mod:`.dissect`: Network Dissection (Bau et al., 2017), :func:`dissect`, names each unit of a
  layer by the concept its top activations overlap most (IoU > 0.05), with the thresholds of
  :mod:`.quantile` and the IoU counts of :mod:`.counting`;
* :mod:`.text`: with Grad-CAM's neuron importances ``alpha_k^c`` (eq. 1), the top-5 positive
  and bottom-5 negative units and their names: :func:`explain_text`.

Examples:
    >>> from gradcam import load_model
    >>> from gradcam.dissect import dissect, generated_concepts
    >>> names = dissect(load_model("shapes"), generated_concepts(50, size=64))
    >>> len(names.units), [(u.unit, u.name) for u in names.named()[:3]]
    (128, [(20, 'ring'), (53, 'ring'), (32, 'ring')])
"""

from gradcam.dissect.concepts import (
    BRODEN_COLORS,
    MAX_CONCEPT_PIXELS,
    MAX_GENERATED_SIZE,
    TEXTURES,
    Concept,
    ConceptError,
    ConceptImage,
    ConceptSet,
    decode_labels,
    generated_concepts,
    read_broden,
    read_concepts,
    read_mask,
)
from gradcam.dissect.dissect import (
    IOU_THRESHOLD,
    Dissection,
    DissectionError,
    DissectPass,
    Unit,
    dissect,
    layer_activations,
    load_dissection,
    shipped_names,
)
from gradcam.dissect.quantile import QUANTILE, TopValues, top_quantile

__all__ = [
    "BRODEN_COLORS",
    "IOU_THRESHOLD",
    "MAX_CONCEPT_PIXELS",
    "MAX_GENERATED_SIZE",
    "QUANTILE",
    "TEXTURES",
    "Concept",
    "ConceptError",
    "ConceptImage",
    "ConceptSet",
    "DissectPass",
    "Dissection",
    "DissectionError",
    "TopValues",
    "Unit",
    "decode_labels",
    "dissect",
    "generated_concepts",
    "layer_activations",
    "load_dissection",
    "read_broden",
    "read_concepts",
    "read_mask",
    "shipped_names",
    "top_quantile",
]
