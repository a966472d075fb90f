"""A seeded fuzz of the study server (issue 30's probe classes): odd and unknown tokens, odd
item numbers (unicode digits, thousands of digits, signs), bodies past the cap, bytes that
are not UTF-8, wrong methods, and the study deleted under it. No request may get a 500, a
traceback or the server's file path."""

from __future__ import annotations

import random
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from gradcam.study import open_study
from gradcam.study.server import MAX_FORM_BYTES

ITEMS = ["1", "2", "99", "0", "²", "١٢", "𝟙", "1" * 5000, "-1", "+1", " 1", "1 ", "1.0",
         "0x1", "", "1e3", "999999999", "1000000000", "\x00", "%"]  # fmt: skip
TEXTS = ["ring", "star", "", "=HYPERLINK(\"x\")", "'; DROP TABLE answers; --", "\x00", "é" * 40,
         "\ud800", "<script>", "a" * 3000]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
REQUESTS = 300


def _body(rng: random.Random, choices: list[tuple[str, str]]) -> bytes:
    kind = rng.randrange(6)
    if kind == 4:
        item, answer = rng.choice(choices)  # a real answer
        return urllib.parse.urlencode({"item": item, "answer": answer}).encode()
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 600))  # not a form, maybe not UTF-8
    if kind == 1:
        return b"item=1&answer=" + b"x" * (MAX_FORM_BYTES + rng.randrange(1, 50_000))
    fields = [("item", rng.choice(ITEMS)), ("answer", rng.choice(TEXTS + [c for _, c in choices]))]
    if kind == 2:
        fields += fields  # the fields twice
    if kind == 3:
        fields = fields[rng.randrange(2) :]  # a field missing
    text = urllib.parse.urlencode(fields, errors="surrogatepass")
    return text.encode("utf-8", "surrogatepass")


def _requests(
    rng: random.Random, tokens: list[str], owner: str, choices: list[tuple[str, str]]
) -> list[tuple[str, str, bytes]]:
    odd = ["", "x", "%00", "%ff%fe", "..%2f..%2fetc", "é", "a" * 2000, "%F0%9F%98%80"]
    who = [*tokens, owner, *odd]
    paths = [
        lambda t: f"/p/{t}",
        lambda t: f"/report/{t}",
        lambda t: f"/report/{t}/answers.csv",
        lambda t: "/",
        lambda t: f"/p/{t}/extra",
        lambda t: "/docs",
    ]
    made = []
    for _ in range(REQUESTS):
        method = "POST" if rng.random() < 0.6 else rng.choice(METHODS)
        path = rng.choice(paths)(rng.choice(who))
        made.append((method, path, _body(rng, choices) if method != "GET" else b""))
    return made


def _assert_served(
    client: object, requests: list[tuple[str, str, bytes]], path: Path, allowed: set[int]
) -> set[int]:
    seen = set()
    started = time.monotonic()
    for method, url, body in requests:
        response = client.request(  # type: ignore[attr-defined]
            method,
            url,
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        seen.add(response.status_code)
        context = f"{method} {url[:80]} {body[:80]!r} -> {response.status_code}"
        assert response.status_code in allowed, context
        assert "Traceback" not in response.text, context
        assert str(path.parent) not in response.text, context
    assert time.monotonic() - started < 120  # bounded: every request is answered quickly
    return seen


def test_fuzzed_requests_never_get_a_500(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    from fastapi.testclient import TestClient

    from gradcam.study.server import create_app

    path = copy_study(cd_study_file)
    store = open_study(path)
    tokens = store.invite(3)
    choices = [(str(item.id), c) for item in store.items() for c in item.choices]
    rng = random.Random(30)
    requests = _requests(rng, tokens, store.owner_token, choices)
    client = TestClient(create_app(path), follow_redirects=False, raise_server_exceptions=True)
    seen = _assert_served(client, requests, path, {200, 303, 400, 404, 405, 413})
    assert {200, 303, 400, 404, 405, 413} <= seen  # the fuzz reached every kind of answer
    # Every stored answer is one the participant was offered, stored once.
    answers = store.answers()
    assert all(a.answer in store.item(a.item).choices for a in answers)
    assert len({(a.participant, a.item) for a in answers}) == len(answers)
    # The study deleted under the server: 503 pages (or pages that need no study), never a
    # new file in its place.
    path.unlink()
    _assert_served(client, requests[:100], path, {200, 404, 405, 413, 503})
    assert not path.exists()
