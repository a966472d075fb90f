"""The Video tab of ``gradcam serve --video-model NAME``: a short clip in, the animated
Grad-CAM overlay and the top-5 classes out.

A thin Gradio layout over :class:`gradcam.demo.video.VideoSession`; :func:`video_outputs` is
its callback as a plain function. :func:`gradcam.demo.app.serve` adds the tab only when given
a video model: without one the page is unchanged.

The same callback is an API for ``gradio_client``::

    summary, top5, class_name, overlay_webp, key_frames, files = client.predict(
        handle_file("clip.mp4"), "", api_name="/explain_video")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from gradcam.demo.session import DemoSession
from gradcam.demo.video import VideoSession
from gradcam.errors import GradCAMError
from gradcam.media.video import VIDEO_SUFFIXES

__all__ = ["VIDEO_OUTPUTS", "example_clips", "video_outputs", "video_tab"]

#: Outputs of ``/explain_video``, in order (the ``gradio_client`` result tuple).
VIDEO_OUTPUTS = ("summary", "top5", "class", "overlay", "key_frames", "files")

_PROMPT = "Upload a short clip, or pick the example."


def example_clips() -> list[Path]:
    """Real clips that ship with installed packages: scikit-image's animated GIF."""
    try:
        import skimage
    except ImportError:  # scikit-image is a dev extra; its clip is a bonus
        return []
    gif = Path(skimage.__file__).parent / "data" / "no_time_for_that_tiny.gif"
    return [gif] if gif.is_file() else []


def video_outputs(video: VideoSession, path: str | None, class_name: str | None) -> tuple[Any, ...]:
    """What the Video tab shows for a clip and class: the outputs of :data:`VIDEO_OUTPUTS`.

    A Markdown summary (or the error message), the top-5 ``{name: probability}``, the
    explained class name, the animated WebP overlay and the key frames (paths), and the MP4
    and maps (``.npz``) to download. A bad upload or class gives the one-line message and
    ``None`` for the rest; the server stays up.
    """
    if not path:
        return _PROMPT, None, None, None, None, None
    try:
        views = video.explain(path, class_name or None)
    except GradCAMError as exc:
        return f"**Error:** {exc}", None, None, None, None, None
    top5 = {p.name: p.probability for p in views.predictions}
    return (
        video.summary(views),
        top5,
        views.class_name,
        str(views.overlay),
        str(views.key_frames),
        [str(views.video), str(views.maps)],
    )


def video_tab(video: VideoSession) -> Callable[[DemoSession], None]:
    """The Video tab for ``video``'s model, as a tab of :func:`gradcam.demo.app.build_app`."""

    def tab(_: DemoSession) -> None:
        with gr.Tab("Video"):
            limit = video.max_bytes / 2**20
            gr.Markdown(
                f"Model **{video.loaded.name}**. Grad-CAM over a short clip (at most "
                f"{video.max_frames} frames and {limit:g} MiB; {', '.join(VIDEO_SUFFIXES)}): "
                "the model's clip is sampled and cropped as the model expects, and the map on "
                "its frames is blended over every frame of the upload."
                + (
                    ""
                    if video.loaded.pretrained
                    else "\n\n**Warning:** this video model has random weights: its predictions "
                    "and maps are meaningless."
                )
            )
            with gr.Row():
                with gr.Column(scale=1):
                    clip = gr.File(label="Clip", type="filepath", elem_id="clip")
                    examples = [[str(p)] for p in example_clips()]
                    if examples:
                        gr.Examples(examples, inputs=[clip], label="Clips")
                    chosen = gr.Dropdown(
                        list(video.class_names),
                        value=None,
                        label="Class to explain (type to search; empty: the top-1)",
                        filterable=True,
                        allow_custom_value=True,  # our own message names a bad class
                        elem_id="video-class",
                    )
                    top5 = gr.Label(
                        label="Top-5 predictions", num_top_classes=5, elem_id="video-top5"
                    )
                with gr.Column(scale=1):
                    overlay = gr.Image(
                        label="Grad-CAM over the clip (animated)",
                        type="filepath",
                        interactive=False,
                        elem_id="video-overlay",
                    )
            summary = gr.Markdown(_PROMPT, elem_id="video-summary")
            key_frames = gr.Image(
                label="Key frames", type="filepath", interactive=False, elem_id="video-keyframes"
            )
            files = gr.File(
                label="Overlay (MP4) and maps per frame (.npz)",
                file_count="multiple",
                interactive=False,
                elem_id="video-files",
            )
            shown = [summary, top5, chosen, overlay, key_frames, files]

            def explain(path: str | None, class_name: str | None) -> Any:
                return video_outputs(video, path, class_name)

            def new_clip(path: str | None) -> Any:
                return video_outputs(video, path, None)

            hidden: dict[str, Any] = {"api_visibility": "private"}
            clip.change(new_clip, [clip], shown, **hidden)
            chosen.input(explain, [clip, chosen], shown, **hidden)
            endpoint = gr.Button(visible=False)
            endpoint.click(explain, [clip, chosen], shown, api_name="explain_video")

    return tab
