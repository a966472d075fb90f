"""The page's Captioning and VQA tabs (section 8, Figs. 11-12), over :class:`VLSession`.

- **Captioning**: upload a scene (or pick a generated one); the model's caption appears as a
  row of words; clicking a word shows its Grad-CAM and Guided Grad-CAM (Fig. 11). A caption
  typed in the box is explained instead of the model's own.
- **VQA**: ask a question (or pick an example); the page shows the model's answer with its
  most probable answers and the answer's maps, and, for a *forced* answer chosen from the
  list, that answer's maps (Fig. 12: forcing another color moves the map to the object of
  that color).

The outputs are computed by plain functions (:func:`caption_outputs`, :func:`vqa_outputs`),
which are also the ``/caption`` and ``/vqa`` API endpoints::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    summary, caption, word, scene, cam, guided = client.predict(
        handle_file("scene.png"), "", "circle", api_name="/caption")
    summary, answers, answer, cam, guided, forced_cam, forced_guided = client.predict(
        handle_file("scene.png"), "what color is the circle?", "yellow", api_name="/vqa")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from gradcam.demo.session import DemoSession
from gradcam.demo.vl import VL_PICTURES, WHOLE_CAPTION, VLSession
from gradcam.errors import GradCAMError
from gradcam.methods.registry import GRAD_CAM

__all__ = [
    "CAPTION_OUTPUTS",
    "VQA_OUTPUTS",
    "caption_outputs",
    "captioning_tab",
    "vl_tabs",
    "vqa_outputs",
    "vqa_tab",
]

#: Outputs of ``/caption``, in order (the ``gradio_client`` result tuple).
CAPTION_OUTPUTS = ("summary", "caption", "word", "Scene", *VL_PICTURES.values())
#: Outputs of ``/vqa``, in order.
VQA_OUTPUTS = (
    "summary",
    "answers",
    "answer",
    *(f"{title}: answer" for title in VL_PICTURES.values()),
    *(f"{title}: forced answer" for title in VL_PICTURES.values()),
)

_WAIT_SCENE = "Upload a scene, or pick one of the examples."


def _ms(seconds: float, cached: bool) -> str:
    return "from the cache" if cached else f"in {seconds * 1000:.0f} ms"


def caption_outputs(
    vl: VLSession, path: str | None, text: str | None, word: str | None
) -> tuple[Any, ...]:
    """What the Captioning tab shows (:data:`CAPTION_OUTPUTS`): the ``/caption`` endpoint.

    Args:
        vl: the session.
        path: the uploaded scene.
        text: a caption to explain; empty explains the model's own caption.
        word: the word to show: a word of the caption (its first occurrence), its position
            (``"3"``), or empty (or ``"<caption>"``) for the whole caption's
            ``log p(caption | image)``.

    Returns:
        A Markdown summary (or ``"**Error:** ..."``), the caption explained, the word shown,
        the scene at display size, and its Grad-CAM overlay and Guided Grad-CAM picture. A bad
        upload, caption or word gives the message and ``None`` for the rest; the server stays up.
    """
    empty = (None,) * (len(CAPTION_OUTPUTS) - 1)
    if not path:
        return _WAIT_SCENE, *empty
    try:
        views = vl.caption(path, text)
        position = views.position(word)
        pictures = vl.caption_pictures(views, position)
    except GradCAMError as exc:
        return f"**Error:** {exc}", *empty
    explained = views.explanation
    whose = "the model's own" if explained.generated else "yours"
    lines = [
        f"Caption ({whose}): **{explained.caption}**, log p = {explained.log_prob:.2f}; "
        f"every word explained {_ms(views.seconds, views.cached)}."
    ]
    truth = vl.true_caption(views.photo)
    if truth is not None:
        lines.append(f"The scene shows: *{truth}*.")
    if position is None:
        shown = WHOLE_CAPTION
        lines.append("Maps of the whole caption's log-probability (section 8.1); click a word.")
    else:
        shown = views.words[position]
        score = views.map(GRAD_CAM, position).score
        lines.append(
            f"Maps of **{shown}** (word {position + 1}, score {score:.2f} at its step; "
            "section 8.1.1)."
        )
    return (
        "\n\n".join(lines),
        explained.caption,
        shown,
        views.photo.display,
        *(pictures[title] for title in VL_PICTURES.values()),
    )


def vqa_outputs(
    vl: VLSession, path: str | None, question: str | None, forced: str | None
) -> tuple[Any, ...]:
    """What the VQA tab shows (:data:`VQA_OUTPUTS`): the ``/vqa`` endpoint.

    Args:
        vl: the session.
        path: the uploaded scene.
        question: the question (words of the vocabulary, e.g. "what color is the circle?").
        forced: an answer of ``vl.answer_choices`` to explain besides the model's
            own (Fig. 12); empty for none.

    Returns:
        A Markdown summary (or ``"**Error:** ..."``), the five most probable answers
        ``{answer: probability}``, the model's answer, its Grad-CAM and Guided Grad-CAM, and
        those of the forced answer (``None`` without one). A bad upload, question or answer
        gives the message and ``None`` for the rest; the server stays up.
    """
    empty = (None,) * (len(VQA_OUTPUTS) - 1)
    if not path:
        return _WAIT_SCENE, *empty
    if not question or not question.strip():
        return "Type a question, or pick one of the examples.", *empty
    try:
        views = vl.answer(path, question)
        explained = views.explanation
        own = vl.answer_pictures(views, explained.answer)
        chosen = (forced or "").strip().lower()
        other = vl.answer_pictures(views, chosen) if chosen else None
    except GradCAMError as exc:
        return f"**Error:** {exc}", *empty
    probability = explained.probabilities.get(explained.answer, 0.0)
    lines = [
        f"**{explained.question}** The model answers **{explained.answer}** "
        f"(p = {probability:.2f}), {_ms(views.seconds, views.cached)}."
    ]
    truth = vl.true_answer(views.photo, question)
    if truth is not None:
        lines.append(f"The right answer is *{truth}*.")
    if chosen:
        lines.append(
            f"Forced answer **{chosen}**: its maps show what in the scene supports it (Fig. 12)."
        )
    else:
        lines.append("Force another answer to see where its evidence lies.")
    no_pictures = (None,) * len(VL_PICTURES)
    return (
        "\n\n".join(lines),
        dict(explained.probabilities),
        explained.answer,
        *(own[title] for title in VL_PICTURES.values()),
        *(no_pictures if other is None else (other[t] for t in VL_PICTURES.values())),
    )


def _picture(label: str, elem_id: str) -> gr.Image:
    return gr.Image(label=label, type="pil", format="jpeg", interactive=False, elem_id=elem_id)


def _word_choices(caption: str | None) -> list[tuple[str, str]]:
    words = [] if caption is None else caption.split()
    return [("whole caption", WHOLE_CAPTION)] + [(w, str(i)) for i, w in enumerate(words)]


def captioning_tab(vl: VLSession) -> Callable[[DemoSession], None]:
    """The Captioning tab (Fig. 11), as a tab function for :func:`gradcam.demo.app.build_app`."""

    def tab(_: DemoSession) -> None:
        with gr.Tab("Captioning"):
            with gr.Row():
                with gr.Column(scale=1):
                    scene = gr.File(
                        label="Scene (any image; the model knows two-object scenes)",
                        type="filepath",
                        elem_id="caption-scene",
                    )
                    gr.Examples([[str(p)] for p in vl.examples], inputs=[scene], label="Scenes")
                    text = gr.Textbox(
                        label="Your caption (empty: the model's own)",
                        placeholder="a red circle left of a blue square",
                        elem_id="caption-text",
                    )
                    go = gr.Button("Explain the caption", elem_id="caption-button")
                    shown = _picture("Scene", "caption-view-0")
                with gr.Column(scale=2):
                    summary = gr.Markdown(_WAIT_SCENE, elem_id="caption-summary")
                    caption = gr.Textbox(
                        label="Caption explained", interactive=False, elem_id="caption"
                    )
                    words = gr.Radio(
                        _word_choices(None),
                        value=WHOLE_CAPTION,
                        label="Click a word to see where it looks (section 8.1.1)",
                        elem_id="caption-words",
                    )
                    with gr.Row():
                        pictures = [
                            _picture(title, f"caption-view-{i + 1}")
                            for i, title in enumerate(VL_PICTURES.values())
                        ]
            word_shown = gr.Textbox(visible=False)
            # The text box as it was when the words were shown: a click explains those words,
            # even if the box was edited since.
            explained = gr.State("")
            hidden: dict[str, Any] = {"api_visibility": "private"}

            def explain(path: str | None, typed: str | None) -> Any:
                out = caption_outputs(vl, path, typed, WHOLE_CAPTION)
                radio = gr.Radio(choices=_word_choices(out[1]), value=WHOLE_CAPTION)
                return out[0], out[1], radio, *out[3:], typed or ""

            def click(path: str | None, typed: str | None, word: str | None) -> Any:
                out = caption_outputs(vl, path, typed, word)
                return out[0], *out[3:]

            page = [summary, caption, words, shown, *pictures, explained]
            scene.change(explain, [scene, text], page, **hidden)
            text.submit(explain, [scene, text], page, **hidden)
            go.click(explain, [scene, text], page, **hidden)
            words.input(click, [scene, explained, words], [summary, shown, *pictures], **hidden)

            def api(path: str | None, typed: str | None, word: str | None) -> Any:
                return caption_outputs(vl, path, typed, word)

            endpoint = gr.Button(visible=False)
            endpoint.click(
                api,
                [scene, text, word_shown],
                [summary, caption, word_shown, shown, *pictures],
                api_name="caption",
            )

    return tab


def vqa_tab(vl: VLSession) -> Callable[[DemoSession], None]:
    """The VQA tab (Fig. 12), as a tab function for :func:`gradcam.demo.app.build_app`."""

    def tab(_: DemoSession) -> None:
        with gr.Tab("VQA"):
            with gr.Row():
                with gr.Column(scale=1):
                    scene = gr.File(
                        label="Scene (any image; the model knows two-object scenes)",
                        type="filepath",
                        elem_id="vqa-scene",
                    )
                    question = gr.Textbox(
                        label="Question",
                        placeholder="what color is the circle?",
                        elem_id="question",
                    )
                    ask = gr.Button("Ask", elem_id="ask")
                    forced = gr.Dropdown(
                        list(vl.answer_choices),
                        value=None,
                        label="Force an answer (Fig. 12)",
                        allow_custom_value=True,  # our own message names a bad answer
                        elem_id="forced",
                    )
                    examples = gr.Examples(
                        [[str(path), asked] for path, asked in vl.example_questions],
                        inputs=[scene, question],
                        label="Scenes and questions",
                        examples_per_page=4,
                    )
                with gr.Column(scale=2):
                    summary = gr.Markdown(_WAIT_SCENE, elem_id="vqa-summary")
                    answers = gr.Label(label="Top answers", num_top_classes=5, elem_id="answers")
                    with gr.Row():
                        own = [
                            _picture(f"{title}: the model's answer", f"vqa-view-{i}")
                            for i, title in enumerate(VL_PICTURES.values())
                        ]
                    with gr.Row():
                        other = [
                            _picture(f"{title}: the forced answer", f"vqa-view-{i + 2}")
                            for i, title in enumerate(VL_PICTURES.values())
                        ]
            answer = gr.Textbox(visible=False)
            hidden: dict[str, Any] = {"api_visibility": "private"}

            def run(path: str | None, asked: str | None, force: str | None) -> Any:
                return vqa_outputs(vl, path, asked, force)

            inputs = [scene, question, forced]
            outputs = [summary, answers, answer, *own, *other]

            def example(path: str | None, asked: str | None) -> Any:
                return *vqa_outputs(vl, path, asked, None), None

            # An example sets the scene and the question at once: answered as one event, and
            # the forced answer is cleared (a scene change alone would race the question's).
            examples.load_input_event.then(example, [scene, question], [*outputs, forced], **hidden)
            scene.upload(run, inputs, outputs, **hidden)
            question.submit(run, inputs, outputs, **hidden)
            ask.click(run, inputs, outputs, **hidden)
            forced.input(run, inputs, outputs, **hidden)
            endpoint = gr.Button(visible=False)
            endpoint.click(run, inputs, outputs, api_name="vqa")

    return tab


def vl_tabs(vl: VLSession) -> list[Callable[[DemoSession], None]]:
    """The Captioning and VQA tabs, in the page's order."""
    return [captioning_tab(vl), vqa_tab(vl)]
