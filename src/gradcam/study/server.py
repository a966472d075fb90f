"""The participants' web pages of ``gradcam study serve``: server-rendered HTML on FastAPI.

* ``/p/TOKEN``: the participant's next item (their own seeded order), with the progress; a
  form posts the answer back to the same address, which stores it and redirects to the next
  item (post/redirect/get, so a reload never posts twice). A participant who comes back
  continues where they left off; when every item is answered, a thank-you page.
* ``/report/OWNER``: the report (and ``/report/OWNER/answers.csv``), for the owner's token
  only (printed by ``gradcam study create`` and ``invite``).

Pages work offline: no external fonts, scripts or styles (the pictures are inline ``data:``
URIs, and a Content-Security-Policy forbids anything else). An unknown token gets a plain
404 page; an answer that could not be written (full disk, read-only file) gets a 503 page
saying it was not saved, and nothing of it is stored. The token is checked before the body
of a POST is read, and the body is read up to :data:`MAX_FORM_BYTES` (413 beyond); the item
number must be 1 to 9 ASCII digits (400 otherwise). A study that cannot be read while served
(deleted, replaced, corrupted) gets a 503 "not available" page on every request until it is
back; it is never created anew, and no page names the server's files.
"""

from __future__ import annotations

import base64
import html
import os
import re
import secrets
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.requests import ClientDisconnect

from gradcam.study.store import (
    DEFAULT_PORT,
    TRUST_SCALE,
    AnswerNotSaved,
    AnswerRefused,
    StudyError,
    StudyStore,
    open_study,
)

__all__ = ["MAX_FORM_BYTES", "create_app", "serve"]

MAX_FORM_BYTES = 8192
"""The largest answer form read, in bytes (413 beyond): the form is an item number and one
of the item's answers, a few hundred bytes even URL-encoded."""

# ASCII digits only: str.isdigit() also accepts "²", which int() refuses; 9 digits bound it.
_ITEM_NUMBER = re.compile(r"[0-9]{1,9}")

_HEADERS = {
    "Cache-Control": "no-store",
    # The token is in the address: never send it to anyone else.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
}

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
h1 { font-size: 1.3rem; }
.progress { color: #555; }
progress { width: 100%; height: 0.8rem; }
.pictures { display: flex; gap: 1.5rem; flex-wrap: wrap; margin: 1rem 0; }
figure { margin: 0; }
figure img { width: 100%; max-width: 400px; min-width: 256px; image-rendering: pixelated;
             border: 1px solid #ccc; }
form button { display: block; width: 100%; max-width: 28rem; margin: 0.4rem 0; padding: 0.6rem;
              font-size: 1rem; text-align: left; cursor: pointer; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
.simulated { background: #fff3cd; padding: 0.5rem; }
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(alt)}'>"


def _item_page(store: StudyStore, token: str) -> Any:
    item, done, total = store.next_item(token)
    if item is None:
        return _page(
            "Thank you",
            f"<h1>Thank you!</h1><p>You answered all {total} questions. Your answers are "
            "saved; you can close this page.</p>",
        )
    progress = (
        f"<p class='progress'>Question {done + 1} of {total}</p>"
        f"<progress value='{done}' max='{total}'></progress>"
    )
    if item.left_model is None:
        pictures = f"<figure>{_image(store.picture(item.id, 'map'), 'explanation')}</figure>"
        question = html.escape(store.question)
        labels = {c: c for c in item.choices}
    else:
        right = "B" if item.left_model == "A" else "A"
        pictures = (
            f"<figure>{_image(store.picture(item.id, item.left_model), 'left model')}"
            "<figcaption>Left model</figcaption></figure>"
            f"<figure>{_image(store.picture(item.id, right), 'right model')}"
            "<figcaption>Right model</figcaption></figure>"
        )
        question = (
            f"Both models predicted <b>{html.escape(item.truth)}</b>. "
            f"{html.escape(store.question.split('. ', 1)[-1])}"
        )
        labels = {str(value): text for value, text in TRUST_SCALE}
    buttons = "".join(
        f"<button type='submit' name='answer' value='{html.escape(c)}'>"
        f"{html.escape(labels[c])}</button>"
        for c in item.choices
    )
    form = (
        f"<form method='post' action='/p/{html.escape(token)}'>"
        f"<input type='hidden' name='item' value='{item.id}'>{buttons}</form>"
    )
    return _page(
        f"Question {done + 1} of {total}",
        f"{progress}<h1>{question}</h1><div class='pictures'>{pictures}</div>{form}",
    )


async def _read_form(request: Request) -> bytes | None:
    """The request's body, or ``None`` when it is larger than :data:`MAX_FORM_BYTES` (it is
    then read no further).

    Raises:
        ClientDisconnect: the client hung up before the whole body came.
    """
    declared = request.headers.get("content-length", "")
    if re.fullmatch(r"[0-9]+", declared) and (len(declared) > 9 or int(declared) > MAX_FORM_BYTES):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _unknown() -> HTMLResponse:
    return _page(
        "Unknown link",
        "<h1>This link is not valid</h1><p>The address does not belong to a participant of "
        "this study. Please check that you copied the whole link you were given.</p>",
        404,
    )


def _report_page(store: StudyStore, token: str) -> Any:
    from gradcam.study.report import report

    parts = [f"<h1>Study report: {html.escape(store.kind)}</h1>"]
    groups = [report(store)]
    if any(p.simulated for p in store.participants()):
        groups.append(report(store, simulated=True))
    for scored in groups:
        heading = "Simulated participants (not people)" if scored.simulated else "People"
        cls = " class='simulated'" if scored.simulated else ""
        parts.append(f"<h2{cls}>{heading}</h2><pre>{html.escape(scored.markdown())}</pre>")
    csv_link = f"/report/{html.escape(token)}/answers.csv"
    parts.append(f"<p><a href='{csv_link}'>every answer as CSV</a></p>")
    return _page("Study report", "".join(parts))


async def _answer(store: StudyStore, token: str, request: Request) -> Response:
    """A participant's answer: the token checked before the body is read, the body capped at
    :data:`MAX_FORM_BYTES`, the answer stored, then a redirect to the next question."""
    from urllib.parse import parse_qs

    from starlette.concurrency import run_in_threadpool

    # The token before the body: a stranger's body is never read.
    if await run_in_threadpool(store.participant, token) is None:
        return _unknown()
    try:
        body = await _read_form(request)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to read it
    if body is None:
        return _page(
            "Answer too large",
            f"<h1>The answer was larger than {MAX_FORM_BYTES} bytes</h1><p>It was not "
            "read. Please go back and choose one of the answers offered.</p>",
            413,
        )
    # Parsed here rather than by a form library: two short fields, no files.
    fields = parse_qs(body.decode("utf-8", "replace"))
    item_text = fields.get("item", [""])[0]
    choice = fields.get("answer", [""])[0]
    if not _ITEM_NUMBER.fullmatch(item_text):
        return _page("Bad answer", "<h1>The answer did not name a question.</h1>", 400)
    link = f"<p><a href='/p/{html.escape(token)}'>back to your question</a></p>"
    try:
        await run_in_threadpool(store.record, token, int(item_text), choice)
    except AnswerRefused as exc:
        # Its message names only what the participant sent.
        text = f"<h1>This answer was not accepted</h1><p>{html.escape(str(exc))}</p>"
        return _page("Not accepted", text + link, 400)
    except AnswerNotSaved as exc:
        print(f"gradcam study serve: {exc}", file=sys.stderr)
        text = (
            "<h1>Your answer was not saved</h1><p>The study could not store it just now; "
            "nothing of it was kept. Please go back and answer again in a moment.</p>"
        )
        return _page("Not saved", text + link, 503)
    # Post/redirect/get: the next item comes from a fresh GET, after the commit.
    return RedirectResponse(f"/p/{token}", status_code=303, headers=_HEADERS)


def create_app(path: str | os.PathLike[str]) -> FastAPI:
    """The FastAPI application serving the study file at ``path``.

    Raises:
        StudyError: when ``path`` is not a study, is damaged, or cannot be written
            (:func:`~gradcam.study.store.open_study` with ``writable``).

    Examples:
        Served with ``uvicorn.run(create_app("study.db"), port=7870)`` (or ``gradcam study
        serve``); here a test client asks for a participant's first page:

        >>> from fastapi.testclient import TestClient
        >>> from gradcam.study import create_class_discrimination, load_study_model, study_images
        >>> shapes = load_study_model("shapes")
        >>> study = create_class_discrimination(
        ...     "study.db", study_images("synthetic", shapes, count=4), shapes, ["gradcam"])
        >>> page = TestClient(create_app("study.db")).get(f"/p/{study.invite(1)[0]}")
        >>> page.status_code, "<title>Question 1 of 4</title>" in page.text
        (200, True)
    """

    store = open_study(path, writable=True)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StudyError)
    async def unavailable(request: Request, exc: StudyError) -> Response:
        # The owner's log names the file and the cause; the participant's page does not.
        print(f"gradcam study serve: {exc}", file=sys.stderr)
        return _page(
            "Study not available",
            "<h1>The study is not available just now</h1><p>Nothing was stored. Please try "
            "again later.</p>",
            503,
        )

    @app.get("/")
    def index() -> Any:
        return _page(
            "gradcam study",
            "<h1>gradcam study</h1><p>Please open the personal link you were given.</p>",
        )

    @app.get("/p/{token}")
    def next_item(token: str) -> Any:
        if store.participant(token) is None:
            return _unknown()
        return _item_page(store, token)

    @app.post("/p/{token}")
    async def answer(token: str, request: Request) -> Any:
        return await _answer(store, token, request)

    def _owner(token: str) -> bool:
        return secrets.compare_digest(token.encode(), store.owner_token.encode())

    @app.get("/report/{token}")
    def report_page(token: str) -> Any:
        if not _owner(token):
            return _unknown()
        return _report_page(store, token)

    @app.get("/report/{token}/answers.csv")
    def answers_csv(token: str) -> Any:
        from gradcam.study.report import answers_csv

        if not _owner(token):
            return _unknown()
        body = answers_csv(store)
        headers = {**_HEADERS, "Content-Disposition": "attachment; filename=answers.csv"}
        return Response(body, media_type="text/csv", headers=headers)

    return app


def serve(
    path: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = DEFAULT_PORT
) -> None:
    """Serve the study at ``path`` until interrupted (binds to this machine only by default).

    Raises:
        StudyError: ``path`` is not a study, or the port is out of range or in use.
    """
    import socket

    import uvicorn

    if not 0 < port < 65536:
        raise StudyError(f"--port must be in 1..65535, got {port}")
    app = create_app(path)
    # uvicorn reports a taken port in its log and exits; a one-line error is clearer.
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise StudyError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    print(
        f"serving {path} on http://{host}:{port} (participant links: gradcam study invite)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
