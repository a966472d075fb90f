"""The Gradio page of ``gradcam serve``, and :func:`serve`, which starts it.

The page is a thin layout over :class:`gradcam.demo.session.DemoSession`: upload a photo (or
pick a bundled one), see the top-5 predictions, and for the chosen class and layer the Grad-CAM,
counterfactual, Guided Backprop and Guided Grad-CAM maps and the localization box, with the
maps (``.npz``) and the figure (PNG) to download. Every tab is a function that lays out its
components inside the page (:data:`Tab`); :func:`serve` adds the Captioning and VQA tabs of
:mod:`gradcam.demo.vl_tabs` (section 8, the shipped scene models) by passing more of them to
:func:`build_app`, and, given a video model (``gradcam serve --video-model r3d_18``), the
Video tab of :mod:`gradcam.demo.video_tab` (a short clip in, the animated overlay out).

The page works with no internet: analytics, version checks, share links and server-side
rendering are off, and the theme uses the system's fonts (no Google Fonts). The server binds to
127.0.0.1 unless told otherwise, and uploads are limited in size.

The same callbacks are an API for ``gradio_client``::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    summary, top5, chosen, box, cam, why_not, gb, ggcam, npz, png = client.predict(
        handle_file("cat.jpg"), "espresso", "_head_act", "gradcam", api_name="/explain")

The fourth input names the first panel's method (any heatmap method of the registry:
:func:`gradcam.demo.session.heatmap_choices`); the other three panels are the paper's.
"""

from __future__ import annotations

import os

# Before Gradio is imported: it reads these at import time. Nothing may call home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import atexit
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from gradcam.demo.session import (
    METHODS,
    SLOW_NOTE,
    DemoSession,
    clean_stale_folders,
    heatmap_choices,
    is_slow,
)
from gradcam.errors import GradCAMError
from gradcam.methods import method_spec
from gradcam.methods.registry import DEFAULT_METHOD
from gradcam.models import DEFAULT_MODEL, load_model
from gradcam.util import warnings_as_messages
from gradcam.viz import side_by_side

__all__ = [
    "MAX_QUEUE",
    "OUTPUTS",
    "PICTURES",
    "Tab",
    "build_app",
    "bundled_photos",
    "download_outputs",
    "explain_outputs",
    "serve",
    "sweep_outputs",
    "text_outputs",
    "theme",
    "view_outputs",
]

#: A tab of the page: called inside ``gr.Blocks()``; it lays out its own ``gr.Tab``.
Tab = Callable[[DemoSession], None]

#: The pictures shown for a photo and class, in order.
PICTURES = ("Localization", "Chosen method", *list(METHODS.values())[1:])
#: Requests waiting for a worker, at most (beyond it a visitor is told the queue is full).
MAX_QUEUE = 64
#: Outputs of ``/explain``, in order (the ``gradio_client`` result tuple).
OUTPUTS = ("summary", "top5", "class", *PICTURES, "maps", "figure")


def bundled_photos() -> list[Path]:
    """Real photos that ship with installed packages: gradcam's own, matplotlib's, skimage's."""
    import matplotlib

    photos = [Path(__file__).parents[1] / "data" / "cat_and_coffee.jpg"]
    photos.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        photos += [folder / name for name in ("chelsea.png", "coffee.png", "astronaut.png")]
    except ImportError:  # scikit-image is a dev extra; its photos are a bonus
        pass
    return [p for p in photos if p.is_file()]


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts, so no font is fetched from the web."""
    return gr.themes.Default(
        font=("ui-sans-serif", "system-ui", "sans-serif"),
        font_mono=("ui-monospace", "Consolas", "monospace"),
    )


def view_outputs(
    session: DemoSession,
    path: str | None,
    class_name: str | None,
    layer: str | None,
    method: str | None = None,
) -> tuple[Any, ...]:
    """What the page shows first for a photo, class, layer and method: the first 8 of
    :data:`OUTPUTS`.

    A Markdown summary (or the error message), the top-5 ``{name: probability}``, the explained
    class name, then the photo with its localization box and the four maps (the first one by
    ``method``, Grad-CAM by default). A bad upload, class, layer or method gives the message
    and empty pictures; the server stays up.
    """
    empty = (None,) * len(PICTURES)
    if not path:
        return "Upload a photo, or pick one of the examples.", None, None, *empty
    try:
        views = session.explain(path, class_name or None, layer or None, method or None)
    except GradCAMError as exc:
        return f"**Error:** {exc}", None, None, *empty
    top5 = {p.name: p.probability for p in views.predictions}
    return session.summary(views), top5, views.class_name, *views.pictures.values()


def download_outputs(
    session: DemoSession,
    path: str | None,
    class_name: str | None,
    layer: str | None,
    method: str | None = None,
) -> tuple[str | None, str | None]:
    """The paths of the ``.npz`` maps and the PNG figure (written on first request).

    The page asks for them after the pictures are shown, so writing them never delays the maps.
    """
    if not path:
        return None, None
    try:
        views = session.explain(path, class_name or None, layer or None, method or None)
    except GradCAMError:
        return None, None
    return str(session.write_maps(views)), str(session.write_figure(views))


def explain_outputs(
    session: DemoSession,
    path: str | None,
    class_name: str | None,
    layer: str | None,
    method: str | None = None,
) -> tuple[Any, ...]:
    """The ``/explain`` API: :func:`view_outputs` then :func:`download_outputs`, in one call.

    ``class_name`` empty explains the top-1 class (the explained name is the third output).
    An error (a bad upload, class, layer or method) returns its message and no files.
    """
    shown = view_outputs(session, path, class_name, layer, method)
    if shown[2] is None:  # nothing was explained: no files of another class
        return *shown, None, None
    return *shown, *download_outputs(session, path, class_name, layer, method)


def sweep_outputs(
    session: DemoSession, path: str | None, class_name: str | None
) -> tuple[Image.Image | None, str]:
    """The ``/layer_sweep`` callback: one picture of titled panels, and a line of Markdown.

    Grad-CAM of the class (empty: the top-1) at each of :attr:`DemoSession.sweep_layers`,
    shallowest first, three panels a row.
    """
    if not path:
        return None, "Upload a photo, or pick one of the examples."
    try:
        panels = session.layer_sweep(path, class_name or None)
    except GradCAMError as exc:
        return None, f"**Error:** {exc}"
    rows = [side_by_side(panels[i : i + 3]) for i in range(0, len(panels), 3)]
    grid = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    top = 0
    for row in rows:
        grid.paste(row, (0, top))
        top += row.height
    chosen = class_name or "the top-1 class"
    return grid, f"Grad-CAM of **{chosen}** at {len(panels)} depths."


def text_outputs(
    session: DemoSession, path: str | None, class_name: str | None
) -> tuple[str, list[tuple[Image.Image, str]]]:
    """The ``/text_explanation`` callback: Markdown (the sentence and the ranked units) and
    the named units' activation maps over the photo, as ``(picture, caption)`` pairs.

    Section 7 of the paper: the top-5 positive and bottom-5 negative units of the model's
    named layer by Grad-CAM's ``alpha_k^c`` (:meth:`DemoSession.text_explanation`). An error
    (a bad upload or class, a model without names) returns its message and no pictures.
    """
    if not path:
        return "Upload a photo, or pick one of the examples.", []
    try:
        found = session.text_explanation(path, class_name or None)
    except GradCAMError as exc:
        return f"**Error:** {exc}", []
    return session.text_summary(found), [(picture, caption) for caption, picture in found.pictures]


def _text_panel(session: DemoSession, photo: gr.File, chosen: gr.Dropdown) -> None:
    """The textual-explanation accordion of the classification tab (models with names)."""
    names = session.names
    if names is None:
        return
    with gr.Accordion("Textual explanation: named neurons (section 7, Fig. 9)", open=False):
        gr.Markdown(
            f"The units of `{names.layer}` ranked by Grad-CAM's weights α for the chosen class: "
            "the top-5 positive and bottom-5 negative, with their names, as the paper's Fig. 9 "
            f"prints them, and each named unit's activation map. {len(names.named())} of "
            f"{names.channels} units are named, by Network Dissection on {names.images} "
            "generated concept images (colours, textures and shapes: a small stand-in for "
            "Broden, so most units stay unnamed), computed once by "
            "`scripts/ship_lite0_names.py` and shipped."
        )
        button = gr.Button("Explain in words", elem_id="text-button")
        note = gr.Markdown("", elem_id="text-note")
        gallery = gr.Gallery(
            label="Named units' activation maps", format="jpeg", columns=5, elem_id="text-units"
        )

    def explain_in_words(path: str | None, class_name: str | None) -> Any:
        return text_outputs(session, path, class_name)

    def clear() -> Any:
        return "", []

    button.click(explain_in_words, [photo, chosen], [note, gallery], api_name="text_explanation")
    # A new photo or class makes the shown sentence stale: clear it until asked again.
    hidden: dict[str, Any] = {"api_visibility": "private"}
    photo.change(clear, None, [note, gallery], **hidden)
    chosen.input(clear, None, [note, gallery], **hidden)


def _picture(title: str, index: int) -> gr.Image:
    # JPEG: encoding five pictures takes a few ms, where WebP (Gradio's default) takes 100.
    return gr.Image(
        label=title, type="pil", format="jpeg", interactive=False, elem_id=f"view-{index}"
    )


def classification_tab(session: DemoSession) -> None:
    """The image-classification tab: photo in, predictions and the paper's maps out.

    Long on purpose: Gradio lays a page out in nested ``with`` blocks, and its components are
    wired to their callbacks in the same scope; split, each part would take and return all
    of them."""
    size = session.loaded.preprocess.size
    layer_choices = [
        (f"{name}  ({c} maps, {h}×{w} at {size} px)", name) for name, (c, h, w) in session.layers
    ]
    with gr.Tab("Classification"):
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.File(
                    label="Photo (JPEG, PNG, WebP, TIFF...)", type="filepath", elem_id="photo"
                )
                gr.Examples([[str(p)] for p in bundled_photos()], inputs=[photo], label="Photos")
                located = _picture("Localization", 0)
            with gr.Column(scale=1):
                top5 = gr.Label(label="Top-5 predictions", num_top_classes=5, elem_id="top5")
                chosen = gr.Dropdown(
                    list(session.class_names),
                    value=None,
                    label="Class to explain (type to search)",
                    filterable=True,
                    allow_custom_value=True,  # our own message names a bad class
                    elem_id="class",
                )
                layer = gr.Dropdown(
                    layer_choices,
                    value=session.default_layer,
                    label="Layer A (deepest spatial layer preselected; appendix B, Fig. 13)",
                    filterable=True,
                    allow_custom_value=True,
                    elem_id="layer",
                )
                method = gr.Dropdown(
                    [
                        (method_spec(name).title + (" (slow)" if is_slow(name) else ""), name)
                        for name in heatmap_choices()
                    ],
                    value=DEFAULT_METHOD,
                    label="Method of the first map (Grad-CAM by default)",
                    info=SLOW_NOTE,
                    filterable=True,
                    allow_custom_value=True,  # our own message names a bad method
                    elem_id="method",
                )
        summary = gr.Markdown("Upload a photo, or pick one of the examples.", elem_id="summary")
        titles = ["Chosen method", *list(METHODS.values())[1:]]
        maps_shown = []
        for row in range(0, len(titles), 2):
            with gr.Row():
                maps_shown += [
                    _picture(title, 1 + row + i) for i, title in enumerate(titles[row : row + 2])
                ]
        pictures = [located, *maps_shown]
        with gr.Row():
            maps = gr.File(label="Maps (.npz)", interactive=False, elem_id="maps")
            figure = gr.File(label="Figure (PNG)", interactive=False, elem_id="figure")
        depths = ", ".join(f"`{name}`" for name in session.sweep_layers)
        with gr.Accordion("Layer sweep (appendix B, Fig. 13)", open=False):
            gr.Markdown(
                "Grad-CAM of the chosen class at the deepest layer of each resolution "
                f"({depths}): shallow maps are fine but not class-specific; deeper ones "
                "coarsen and localize the class. One forward and backward pass per layer."
            )
            sweep_button = gr.Button("Sweep the layers", elem_id="sweep-button")
            sweep = gr.Image(
                label="Grad-CAM by layer",
                type="pil",
                format="jpeg",
                interactive=False,
                elem_id="sweep",
            )
            sweep_note = gr.Markdown("", elem_id="sweep-note")
        _text_panel(session, photo, chosen)
        shown = [summary, top5, chosen, *pictures]
        files = [maps, figure]

        def on_choice(
            path: str | None, class_name: str | None, layer_name: str | None, name: str | None
        ) -> Any:
            return view_outputs(session, path, class_name, layer_name, name)

        def new_photo(path: str | None, layer_name: str | None, name: str | None) -> Any:
            return view_outputs(session, path, None, layer_name, name)

        def downloads(
            path: str | None, class_name: str | None, layer_name: str | None, name: str | None
        ) -> Any:
            return download_outputs(session, path, class_name, layer_name, name)

        # A new photo is explained for its top-1 class; the class list then shows that class.
        # Class and layer changes listen to user input only, so setting them here re-runs nothing.
        # The download files follow the pictures, as a second step that reads the cache.
        inputs = [photo, chosen, layer, method]
        hidden: dict[str, Any] = {"api_visibility": "private"}
        photo.change(new_photo, [photo, layer, method], shown, **hidden).then(
            downloads, inputs, files, **hidden
        )
        for control in (chosen, layer, method):
            control.input(on_choice, inputs, shown, **hidden).then(
                downloads, inputs, files, **hidden
            )

        def explain(
            path: str | None,
            class_name: str | None,
            layer_name: str | None,
            name: str | None = DEFAULT_METHOD,
        ) -> Any:
            return explain_outputs(session, path, class_name, layer_name, name)

        def layer_sweep(path: str | None, class_name: str | None) -> Any:
            return sweep_outputs(session, path, class_name)

        sweep_button.click(
            layer_sweep, [photo, chosen], [sweep, sweep_note], api_name="layer_sweep"
        )

        # The API in one call: an event of an invisible button, so it has its own name.
        endpoint = gr.Button(visible=False)
        endpoint.click(explain, inputs, [*shown, *files], api_name="explain")


def build_app(session: DemoSession, tabs: Sequence[Tab] = (classification_tab,)) -> gr.Blocks:
    """Lay out the page: a title, then one tab per entry of ``tabs``."""
    # Visitors' photos and their maps are deleted from Gradio's cache after an hour.
    app = gr.Blocks(
        title="gradcam: why did the network say that?",
        analytics_enabled=False,
        delete_cache=(600, 3600),
    )
    with app:
        gr.Markdown(
            "## gradcam: why did the network say that?\n"
            f"Model **{session.loaded.name}**. Grad-CAM (Selvaraju et al.) shows where the "
            "evidence for a class lies; the counterfactual map, what argues against it; Guided "
            "Grad-CAM, the fine detail. Everything runs on this machine."
            + (
                ""
                if session.loaded.pretrained
                else "\n\n**Warning:** this model has random weights (no weights file given): "
                "its predictions and maps are meaningless."
            )
        )
        for tab in tabs:
            tab(session)
    return app


def _size_limit(megabytes: float) -> int:
    if not megabytes > 0:
        raise GradCAMError(f"--max-file-size must be positive, got {megabytes}")
    return int(megabytes * 2**20)


def serve(
    model: str = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_file_size_mb: float = 20.0,
    concurrency: int = 4,
    vl: bool = True,
    video_model: str | None = None,
    video_weights: str | os.PathLike[str] | None = None,
    block: bool = True,
    quiet: bool = False,
) -> gr.Blocks:
    """Load a model and serve the demo page on ``http://host:port/``.

    Args:
        model: the model to serve, as :func:`gradcam.load_model` reads it; an ``hf:``
            captioner or VQA model is served in the Captioning or VQA tab instead of the
            shipped scene model (:func:`gradcam.demo.vl.vl_session`), the classification tab
            then serves the default classifier.
        weights: its weights file, as :func:`gradcam.load_model` reads it.
        host: the address to bind; the default serves this machine only.
        port: the TCP port.
        max_file_size_mb: largest upload accepted, in MiB.
        concurrency: requests handled at once (model passes are serialized anyway; decoding and
            rendering overlap).
        vl: add the Captioning and VQA tabs (section 8) with the shipped scene models
            (:mod:`gradcam.demo.vl_tabs`).
        video_model: a model taking clips (``"r3d_18"``, ...), as :func:`gradcam.load_model`
            reads it: adds the Video tab (:mod:`gradcam.demo.video_tab`); ``None``: no tab.
        video_weights: its weights file, as :func:`gradcam.load_model` reads it.
        block: wait until interrupted; ``False`` returns the running app (call ``.close()``).
        quiet: do not print Gradio's start-up lines.

    Raises:
        GradCAMError: a bad model, video model, weights file, port, or a port already in use.

    Examples:
        ``serve()`` blocks and serves http://127.0.0.1:7860/ (``gradcam serve`` in a shell);
        the page it serves can be built without a server:

        >>> session = DemoSession(load_model("shapes"))
        >>> type(build_app(session)).__name__  # what serve launches
        'Blocks'
        >>> session.close()
        >>> serve("shapes", port=0)
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: --port must be in 1..65535, got 0
    """
    if not 0 < port < 65536:
        raise GradCAMError(f"--port must be in 1..65535, got {port}")
    limit = _size_limit(max_file_size_mb)
    if video_weights is not None and video_model is None:
        raise GradCAMError("--video-weights given without --video-model: name the video model")
    from gradcam.vl.hf import hf_vl_task

    # An hf: captioner or VQA model goes in its own tab; the classification tab keeps the
    # default classifier (gradcam.demo.vl.vl_session).
    vl_model = model if vl and hf_vl_task(model) in ("captioning", "vqa") else None
    vl_weights = os.fspath(weights) if vl_model is not None and weights is not None else None
    if vl_model is not None:
        model, weights = DEFAULT_MODEL, None
    with warnings_as_messages():
        loaded = load_model(model, weights)
        clips = None if video_model is None else load_model(video_model, video_weights)
    for stale in clean_stale_folders():
        print(f"gradcam: removed {stale}, left by a demo server that stopped", file=sys.stderr)
    session = DemoSession(loaded, max_bytes=limit)
    if clips is not None:
        from gradcam.demo.video import VideoSession
        from gradcam.demo.video_tab import video_tab

        try:  # its files go with the download files: one folder removal cleans both
            video = VideoSession(clips, max_bytes=limit, folder=session.folder / "videos")
        except GradCAMError:
            session.close()
            raise
    # Gradio's uploads and outputs go to the server's own folder (Gradio reads this when the
    # page is built), deleted with it and bounded as it is (MAX_CACHE_BYTES).
    os.environ["GRADIO_TEMP_DIR"] = str(session.cache_folder)
    stop_pruning = _keep_pruned(session)
    tabs: list[Tab] = [classification_tab]
    if vl:
        try:
            tabs += _vl_tabs(session, vl_model, vl_weights, limit)
        except GradCAMError:
            stop_pruning.set()
            session.close()
            raise
    if clips is not None:
        tabs.append(video_tab(video))
    app = build_app(session, tabs)
    # Waiting requests are bounded too: beyond MAX_QUEUE, a visitor is told the queue is full.
    app.queue(default_concurrency_limit=concurrency, max_size=MAX_QUEUE)
    restore = _stop_on_sigterm() if block else None
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            max_file_size=limit,
            show_error=True,
            quiet=quiet,
            ssr_mode=False,
            mcp_server=False,
            run_history=False,
            theme=theme(),
            prevent_thread_lock=not block,
        )
    except OSError as exc:
        stop_pruning.set()
        session.close()
        raise GradCAMError(f"cannot serve on {host}:{port}: {exc}") from None
    finally:
        if block:  # stopped (Ctrl-C, SIGTERM, an error): the visitors' files go with it
            stop_pruning.set()
            session.close()
        if restore is not None:
            restore()
    if not block:  # the caller stops the app; the files go when the process ends
        atexit.register(session.close)
    return app


def _vl_tabs(session: DemoSession, model: str | None, weights: str | None, limit: int) -> list[Tab]:
    """The Captioning and VQA tabs: the shipped scene models, or the ``hf:`` ``model``.

    Raises:
        GradCAMError: the ``hf:`` model asked for cannot be served (without one, a broken
            install only leaves the tabs out, with a warning).
    """
    from gradcam.demo.vl import vl_session
    from gradcam.demo.vl_tabs import vl_tabs

    try:
        # The example scenes go with the download files: one folder removal cleans both.
        with warnings_as_messages():
            scenes = vl_session(model, weights, max_bytes=limit, folder=session.folder / "scenes")
    except GradCAMError as exc:
        if model is not None:
            raise
        print(f"gradcam: warning: no Captioning and VQA tabs: {exc}", file=sys.stderr)
        return []
    return vl_tabs(scenes)


#: Seconds between two prunings of Gradio's cache (a request adds about 4.6 MB).
PRUNE_SECONDS = 5.0


def _keep_pruned(session: DemoSession) -> threading.Event:
    """Prune the session's Gradio cache every :data:`PRUNE_SECONDS` in a daemon thread, until
    the returned event is set."""
    stop = threading.Event()

    def prune() -> None:
        while not stop.wait(PRUNE_SECONDS):
            session.prune_cache()

    threading.Thread(target=prune, name="gradcam-demo-prune", daemon=True).start()
    return stop


def _stop_on_sigterm() -> Callable[[], None] | None:
    """Make SIGTERM stop the server as Ctrl-C does, so its files are deleted; returns a
    function restoring the previous handler (``None`` off the main thread, where Python
    cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
