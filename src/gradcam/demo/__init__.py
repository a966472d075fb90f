"""The web demo (``gradcam serve``): the paper's online demo (section 1, footnote 1), rebuilt.

:mod:`gradcam.demo.session` holds the page's callbacks as plain, typed functions (no Gradio
import); :mod:`gradcam.demo.app` lays them out as a Gradio page and serves it. Gradio is an
optional extra: ``pip install 'gradcam[demo]'``.
"""

from gradcam.demo.session import DemoSession, Photo, Prediction, Views

__all__ = ["DemoSession", "Photo", "Prediction", "Views"]
