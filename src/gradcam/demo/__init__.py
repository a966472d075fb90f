"""The web demo (``gradcam serve``): the paper's online demo (section 1, footnote 1), rebuilt.

:mod:`gradcam.demo.session` holds the page's callbacks as plain, typed functions (no Gradio
import), and :mod:`gradcam.demo.vl` those of the Captioning and VQA tabs (section 8);
:mod:`gradcam.demo.app` and :mod:`gradcam.demo.vl_tabs` lay them out as a Gradio page, and
:func:`gradcam.demo.app.serve` serves it. Gradio is an optional extra:
``pip install 'gradcam[demo]'``.
"""

from gradcam.demo.session import DemoSession, Photo, Prediction, Views
from gradcam.demo.vl import AnswerViews, CaptionViews, VLSession

__all__ = [
    "AnswerViews",
    "CaptionViews",
    "DemoSession",
    "Photo",
    "Prediction",
    "VLSession",
    "Views",
]
