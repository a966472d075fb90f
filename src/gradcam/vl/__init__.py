"""Grad-CAM for image captioning and visual question answering (section 8), offline.

The project ships its own small models, trained on generated two-object scenes by
``scripts/train_vl.py``:

* :mod:`gradcam.vl.text`: vocabulary, captions and questions of a scene, each word grounded
  in an object mask;
* :mod:`gradcam.vl.scenes`: the scenes, from a seed;
* :mod:`gradcam.vl.models`: the CNN + LSTM :class:`Captioner` and :class:`VQAModel`, their
  adapters for Grad-CAM and their shipped weights;
* :mod:`gradcam.vl.explain`: a map per caption word or per answer (``gradcam caption`` and
  ``gradcam vqa``);
* :mod:`gradcam.vl.evaluate`: the paper's evaluations of section 8 on the scenes.

Examples:
    >>> from gradcam import GradCAM
    >>> from gradcam.maps import peak
    >>> from gradcam.targets import CaptionWord
    >>> from gradcam.vl import VL_LAYER, VL_PREPROCESS, caption, load_captioner, vl_scene
    >>> scene = vl_scene(0)
    >>> caption(scene).text
    'a red circle above a purple cross'
    >>> tokens = caption(scene).tokens                      # its ids and <end>
    >>> adapter = load_captioner().explainable(tokens)      # takes the image alone
    >>> maps = GradCAM(adapter, VL_LAYER)(VL_PREPROCESS(scene.image), CaptionWord(tokens, 2)).maps
    >>> maps.shape, peak(maps[0, 0])                        # the word "circle": (x, y) of its peak
    (torch.Size([1, 1, 96, 96]), (28, 60))
"""

from gradcam.vl.models import (
    CAPTIONER_WEIGHTS,
    VL_LAYER,
    VQA_WEIGHTS,
    Captioner,
    SceneEncoder,
    TeacherForced,
    VQAModel,
    WithQuestion,
    load_captioner,
    load_vqa,
)
from gradcam.vl.scenes import VL_MEAN, VL_PREPROCESS, VL_SIZE, VL_STD, make_vl_scene, vl_scene
from gradcam.vl.text import (
    ANSWERS,
    VL_COLORS,
    VL_SHAPES,
    VOCAB,
    Caption,
    Question,
    TextError,
    caption,
    decode,
    encode,
    questions,
)

__all__ = [
    "ANSWERS",
    "CAPTIONER_WEIGHTS",
    "VL_COLORS",
    "VL_LAYER",
    "VL_MEAN",
    "VL_PREPROCESS",
    "VL_SHAPES",
    "VL_SIZE",
    "VL_STD",
    "VOCAB",
    "VQA_WEIGHTS",
    "Caption",
    "Captioner",
    "Question",
    "SceneEncoder",
    "TeacherForced",
    "TextError",
    "VQAModel",
    "WithQuestion",
    "caption",
    "decode",
    "encode",
    "load_captioner",
    "load_vqa",
    "make_vl_scene",
    "questions",
    "vl_scene",
]
