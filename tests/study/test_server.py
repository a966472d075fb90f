"""``gradcam study serve``: the participants' pages in-process, then a real server process
killed with SIGKILL mid-study, 24 participants answering at once over HTTP, and a participant
in Debian's chromium (Playwright; GRADCAM_SKIP_BROWSER=1 skips that one test)."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gradcam.study import open_study

CHROMIUM = os.environ.get("GRADCAM_CHROMIUM", "/usr/bin/chromium")
SRC = Path(__file__).parents[2] / "src"
ARTIFACTS = Path(__file__).parents[1] / "artifacts"


def _client(path: Path) -> Any:
    from fastapi.testclient import TestClient

    from gradcam.study.server import create_app

    return TestClient(create_app(path), follow_redirects=False)


def _form(page: str) -> tuple[int, list[str]]:
    """The item id and the answers offered on an item page."""
    item = re.search(r"name='item' value='(\d+)'", page)
    assert item is not None, page[:500]
    return int(item.group(1)), re.findall(r"name='answer' value='([^']*)'", page)


def _assert_offline(page: str) -> None:
    # Nothing is loaded from elsewhere: every src and href is local or an inline picture.
    for link in re.findall(r"(?:src|href)='([^']*)'", page):
        assert link.startswith(("/", "data:image/png;base64,")), link
    assert "http://" not in page and "https://" not in page and "@import" not in page


def test_participant_pages(cd_study_file: Path, copy_study: Callable[[Path], Path]) -> None:
    path = copy_study(cd_study_file)
    store = open_study(path)
    token = store.invite(1)[0]
    client = _client(path)
    first = client.get(f"/p/{token}")
    assert first.status_code == 200 and "Question 1 of 6" in first.text
    assert "Which of the two object categories is depicted?" in first.text
    assert "<progress value='0' max='6'>" in first.text
    assert "default-src 'none'" in first.headers["content-security-policy"]
    assert first.headers["referrer-policy"] == "no-referrer"
    _assert_offline(first.text)
    item, choices = _form(first.text)
    assert item == store.order(token)[0] and sorted(choices) == sorted(store.item(item).choices)
    posted = client.post(f"/p/{token}", data={"item": str(item), "answer": choices[0]})
    assert posted.status_code == 303 and posted.headers["location"] == f"/p/{token}"
    # The same form sent again (a reload, a double click) stores nothing more.
    client.post(f"/p/{token}", data={"item": str(item), "answer": choices[1]})
    assert [(a.item, a.answer) for a in store.answers()] == [(item, choices[0])]
    # A participant who comes back (another browser) continues at question 2.
    again = _client(path).get(f"/p/{token}")
    assert "Question 2 of 6" in again.text and _form(again.text)[0] == store.order(token)[1]
    for _ in range(5):
        item, choices = _form(client.get(f"/p/{token}").text)
        assert client.post(f"/p/{token}", data={"item": item, "answer": choices[0]}).is_redirect
    done = client.get(f"/p/{token}")
    assert done.status_code == 200 and "You answered all 6 questions" in done.text
    assert len(store.answers()) == 6


def test_unknown_token_and_bad_forms(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    path = copy_study(cd_study_file)
    store = open_study(path)
    token = store.invite(1)[0]
    client = _client(path)
    for response in (
        client.get("/p/not-a-token"),
        client.post("/p/not-a-token", data={"item": "1", "answer": "ring"}),
        client.get(f"/report/{token}"),  # a participant's token opens no report
        client.get("/report/guess/answers.csv"),
    ):
        assert response.status_code == 404 and "This link is not valid" in response.text
        assert "Traceback" not in response.text
    bad = client.post(f"/p/{token}", data={"item": "1", "answer": "giraffe"})
    assert bad.status_code == 400 and "not one of its answers" in bad.text
    assert client.post(f"/p/{token}", data={"answer": "ring"}).status_code == 400
    assert store.answers() == []
    assert client.get("/docs").status_code == 404  # no API pages to wander into


def test_report_pages_need_the_owner_token(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    from gradcam.study import simulate

    path = copy_study(cd_study_file)
    store = open_study(path)
    simulate(store, 3)
    client = _client(path)
    page = client.get(f"/report/{store.owner_token}")
    assert page.status_code == 200 and "Simulated participants (not people)" in page.text
    assert "human classification accuracy" in page.text
    _assert_offline(page.text)
    answers = client.get(f"/report/{store.owner_token}/answers.csv")
    assert answers.status_code == 200 and len(answers.text.strip().splitlines()) == 1 + 18


def test_trust_page(trust_study_file: Path, copy_study: Callable[[Path], Path]) -> None:
    path = copy_study(trust_study_file)
    store = open_study(path)
    token = store.invite(1)[0]
    page = _client(path).get(f"/p/{token}").text
    item, choices = _form(page)
    assert choices == ["2", "1", "0", "-1", "-2"]
    assert "Left model" in page and "Right model" in page and "clearly more reliable" in page
    assert f"Both models predicted <b>{store.item(item).truth}</b>" in page
    _assert_offline(page)


def test_failed_write_shows_an_error_and_keeps_nothing(
    cd_study_file: Path, copy_study: Callable[[Path], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradcam.study.store as store_module

    path = copy_study(cd_study_file)
    store = open_study(path)
    token = store.invite(1)[0]
    client = _client(path)
    item, choices = _form(client.get(f"/p/{token}").text)

    def read_only(where: Path, **kwargs: Any) -> sqlite3.Connection:
        db = sqlite3.connect(f"file:{where}?mode=ro", uri=True, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 5000")
        return db

    monkeypatch.setattr(store_module, "_connect", read_only)
    failed = client.post(f"/p/{token}", data={"item": item, "answer": choices[0]})
    assert failed.status_code == 503 and "Your answer was not saved" in failed.text
    monkeypatch.undo()
    assert store.answers() == []
    # The participant goes back and answers again: stored once.
    assert client.post(f"/p/{token}", data={"item": item, "answer": choices[0]}).is_redirect
    assert len(store.answers()) == 1


# ---------------------------------------------------------------------------------------------
# A real server process


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _server(path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "gradcam.cli", "study", "serve", str(path)]
    log = path.with_suffix(f".{port}.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"study serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"study serve did not start:\n{log.read_text()}")
                time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return str(response.read().decode())


def _answer(base: str, token: str, item: int, answer: str) -> str:
    """Post one answer; the reply is the next page (urllib follows the 303)."""
    body = urllib.parse.urlencode({"item": item, "answer": answer}).encode()
    with urllib.request.urlopen(f"{base}/p/{token}", data=body, timeout=60) as response:
        assert response.status == 200
        return str(response.read().decode())


def _participant(base: str, token: str, acknowledged: list[tuple[str, int]]) -> None:
    """Answer every question, in the order the pages give them; record each acknowledged
    answer (its POST came back with the next page)."""
    page = _get(f"{base}/p/{token}")
    while "You answered all" not in page:
        item, choices = _form(page)
        page = _answer(base, token, item, choices[0])
        acknowledged.append((token, item))


def test_sigkill_mid_study_loses_and_duplicates_nothing(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    path = copy_study(cd_study_file)
    store = open_study(path)
    tokens = store.invite(6)
    total = len(store.items())
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    acknowledged: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def run(token: str) -> None:
        try:
            _participant(base, token, acknowledged)
        except (OSError, AssertionError) as exc:  # the server died under it
            errors.append(exc)

    with _server(path, port) as proc:
        threads = [threading.Thread(target=run, args=(t,)) for t in tokens]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acknowledged) >= 10, errors[:3]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for thread in threads:
            thread.join(timeout=60)
    assert errors, "the kill came after every participant had finished"
    before = {(a.participant, a.item) for a in open_study(path).answers()}
    # Every acknowledged answer survived the kill.
    assert set(acknowledged) <= before
    with _server(path, port):
        for token in tokens:
            # A participant whose answer was cut off resends it: not stored twice.
            page = _get(f"{base}/p/{token}")
            if "You answered all" not in page:
                item, choices = _form(page)
                _answer(base, token, item, choices[0])
                _answer(base, token, item, choices[0])
            _participant(base, token, acknowledged)
    answers = open_study(path).answers()
    pairs = [(a.participant, a.item) for a in answers]
    assert len(pairs) == len(set(pairs)) == len(tokens) * total
    assert before <= set(pairs)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_24_participants_at_once(cd_study_file: Path, copy_study: Callable[[Path], Path]) -> None:
    path = copy_study(cd_study_file)
    store = open_study(path)
    tokens = store.invite(24)
    total = len(store.items())
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    acknowledged: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(tokens))

    def run(token: str) -> None:
        try:
            start.wait(timeout=60)
            _participant(base, token, acknowledged)
        except BaseException as exc:
            errors.append(exc)

    with _server(path, port):
        threads = [threading.Thread(target=run, args=(t,)) for t in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert not errors, errors[:3]
    answers = open_study(path).answers()
    assert len(acknowledged) == len(answers) == len(tokens) * total
    assert {(a.participant, a.item) for a in answers} == set(acknowledged)
    for token in tokens:
        assert sorted(a.item for a in answers if a.participant == token) == sorted(
            store.order(token)
        )


def test_participant_in_a_real_browser(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    if os.environ.get("GRADCAM_SKIP_BROWSER"):
        pytest.skip("GRADCAM_SKIP_BROWSER is set")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make browser`"
    from playwright.sync_api import expect, sync_playwright

    path = copy_study(cd_study_file)
    store = open_study(path)
    token = store.invite(1)[0]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    requests: list[str] = []
    with _server(path, port), sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(f"{base}/p/{token}")
            for number in range(1, 7):
                expect(page.locator(".progress")).to_have_text(f"Question {number} of 6")
                picture = page.locator("figure img")
                assert picture.evaluate("img => img.complete && img.naturalWidth > 0")
                item = int(page.locator("input[name=item]").get_attribute("value") or 0)
                truth = store.item(item).truth
                if number == 1:
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=ARTIFACTS / "study_page.png", full_page=True)
                # This participant always names the right category.
                page.get_by_role("button", name=truth, exact=True).click()
            expect(page.locator("h1")).to_have_text("Thank you!")
            # Closing and coming back shows the thank-you page again, not question 1.
            page.goto(f"{base}/p/{token}")
            expect(page.locator("h1")).to_have_text("Thank you!")
        finally:
            browser.close()
    answers = store.answers()
    assert len(answers) == 6 and all(a.correct for a in answers)
    assert all(url.startswith(base) or url.startswith("data:") for url in requests), requests


# ---------------------------------------------------------------------------------------------
# Hostile requests (issue 30): bounded bodies, strict item numbers, a study that goes away


def _post_asgi(path: Path, url: str, chunks: int, chunk: bytes, hang_up: bool = False) -> Any:
    """POST ``chunks`` pieces of ``chunk`` to the app itself, as a server would feed them;
    return ``(status, pieces the app read)``. With ``hang_up`` the client leaves after the
    first piece. An exception the app lets out (what a server logs as a traceback) raises."""
    import asyncio

    from gradcam.study.server import create_app

    app = create_app(path)
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        if hang_up and read > 1:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": url, "raw_path": url.encode(), "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 7870),
        "headers": [(b"content-type", b"application/x-www-form-urlencoded")],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], read


def test_post_body_is_read_after_the_token_and_bounded(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    from gradcam.study.server import MAX_FORM_BYTES

    path = copy_study(cd_study_file)
    token = open_study(path).invite(1)[0]
    # 64 MiB offered in 64 KiB pieces: a stranger's body is not read at all, a participant's
    # only up to the cap.
    piece = b"x" * 65536
    assert _post_asgi(path, "/p/stranger", 1024, piece) == (404, 0)
    status, read = _post_asgi(path, f"/p/{token}", 1024, piece)
    assert status == 413 and read * len(piece) <= MAX_FORM_BYTES + len(piece)
    client = _client(path)
    declared = client.post(f"/p/{token}", content=b"item=1&answer=" + b"a" * MAX_FORM_BYTES)
    assert declared.status_code == 413 and "larger than" in declared.text
    assert open_study(path).answers() == []


def test_client_hanging_up_mid_body_is_no_error(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    path = copy_study(cd_study_file)
    token = open_study(path).invite(1)[0]
    status, _ = _post_asgi(path, f"/p/{token}", 3, b"item=1&ans", hang_up=True)
    assert status == 400
    assert open_study(path).answers() == []


@pytest.mark.parametrize("item", ["²", "١", "1" * 5000, "-1", " 1", "1.0", "0x1", ""])
def test_item_number_is_ascii_digits(
    cd_study_file: Path, copy_study: Callable[[Path], Path], item: str
) -> None:
    path = copy_study(cd_study_file)
    store = open_study(path)
    token = store.invite(1)[0]
    page = _client(path).post(f"/p/{token}", data={"item": item, "answer": "ring"})
    assert page.status_code == 400 and "did not name a question" in page.text
    assert store.answers() == []


def test_error_pages_never_show_the_study_path(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    path = copy_study(cd_study_file)
    token = open_study(path).invite(1)[0]
    page = _client(path).post(f"/p/{token}", data={"item": "99", "answer": "ring"})
    assert page.status_code == 400 and "no item 99" in page.text
    assert str(path.parent) not in page.text and path.name not in page.text


@pytest.mark.parametrize("damage", ["delete", "garbage", "empty", "drop answers", "choices"])
def test_study_gone_while_serving(
    cd_study_file: Path, copy_study: Callable[[Path], Path], damage: str
) -> None:
    path = copy_study(cd_study_file)
    store = open_study(path)
    token, owner = store.invite(1)[0], store.owner_token
    client = _client(path)
    item, choices = _form(client.get(f"/p/{token}").text)
    if damage == "drop answers":
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE answers")
    elif damage == "choices":
        with sqlite3.connect(path) as db:
            db.execute("UPDATE items SET choices = '[not json'")
    else:
        path.unlink()
        if damage != "delete":
            path.write_bytes(b"" if damage == "empty" else os.urandom(8192))
    before = path.read_bytes() if path.exists() else None
    for response in (
        client.get(f"/p/{token}"),
        client.post(f"/p/{token}", data={"item": item, "answer": choices[0]}),
        client.get(f"/report/{owner}"),
        client.get(f"/report/{owner}/answers.csv"),
    ):
        assert response.status_code == 503, response.text[:300]
        assert "not available" in response.text or "not saved" in response.text
        assert str(path.parent) not in response.text
    # Never created anew, never changed.
    assert (path.read_bytes() if path.exists() else None) == before
    if damage == "delete":
        assert sorted(p.name for p in path.parent.iterdir()) == []
