"""``gradcam serve`` end to end: a real server process, two API clients, a real browser.

The server is the real command in a subprocess on a free port. The browser is Debian's
``chromium`` driven by Playwright (``make browser`` installs it); set GRADCAM_SKIP_BROWSER=1 to
skip that one test on a machine without it. The browser test also proves the page works
offline: every request it makes goes to the local server.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from helpers.photos import ESPRESSO, GRACE_HOPPER, SKIMAGE_DATA
from PIL import Image

import gradcam
from gradcam.cli import main

BUNDLED = Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg"
CHROMIUM = os.environ.get("GRADCAM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 240
    while True:
        if proc.poll() is not None:
            pytest.fail(f"gradcam serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gradcam serve did not answer in time:\n{log.read_text()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a ``gradcam serve`` process on a free port, stopped after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(log.parent / "gradio")}
    command = [sys.executable, "-m", "gradcam.cli", "serve", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(proc, url, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _library_raw(lite0: gradcam.LoadedModel, path: Path, class_id: int | None) -> torch.Tensor:
    x = lite0.preprocess(gradcam.load_image(path))
    targets = gradcam.TopK(1) if class_id is None else [class_id]
    return gradcam.GradCAM(lite0.module)(x, targets).raw[0, 0]


def test_two_clients_at_once_get_the_library_maps(server: str, lite0: gradcam.LoadedModel) -> None:
    from gradio_client import Client, handle_file

    photos = {"cat": SKIMAGE_DATA / "chelsea.png", "coffee": SKIMAGE_DATA / "coffee.png"}
    barrier = threading.Barrier(len(photos))
    results: dict[tuple[str, str], tuple[object, ...]] = {}
    errors: list[BaseException] = []

    def visit(name: str) -> None:
        try:
            client = Client(server, verbose=False)
            barrier.wait()
            for chosen in ("", "espresso"):  # the top-1 class, then a class by name
                results[(name, chosen)] = client.predict(
                    handle_file(str(photos[name])), chosen, "", api_name="/explain"
                )
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=visit, args=(name,)) for name in photos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for (name, chosen), outputs in results.items():
        summary, top5, class_name, *pictures, maps, figure = outputs
        class_id = ESPRESSO if chosen else None
        expected = _library_raw(lite0, photos[name], class_id)
        with np.load(str(maps), allow_pickle=False) as arrays:
            torch.testing.assert_close(
                torch.from_numpy(arrays["raw"]), expected, rtol=1e-5, atol=1e-6
            )
            if chosen:
                assert arrays["classes"].tolist() == [ESPRESSO]
        assert isinstance(top5, dict) and len(top5["confidences"]) == 5
        assert class_name == (chosen or top5["label"])
        assert all(Image.open(str(p)).size == Image.open(photos[name]).size for p in pictures)
        assert Image.open(str(figure)).format == "PNG"
        assert f"**{class_name}**" in str(summary)
    sweep, note = Client(server, verbose=False).predict(
        handle_file(str(photos["cat"])), "tabby", api_name="/layer_sweep"
    )
    assert Image.open(str(sweep)).width == 3 * 451 + 2 * 6 and "**tabby** at 5 depths" in note
    note, units = Client(server, verbose=False).predict(
        handle_file(str(photos["cat"])), "tabby", api_name="/text_explanation"
    )
    assert note.startswith("**tabby: positive: ") and units
    # The fourth input puts another registered heatmap method in the first map's place.
    summary, *_, maps, _ = Client(server, verbose=False).predict(
        handle_file(str(photos["cat"])), "", "", "cam", api_name="/explain"
    )
    assert "CAM at layer" in str(summary)
    x = lite0.preprocess(gradcam.load_image(photos["cat"]))
    with np.load(str(maps), allow_pickle=False) as arrays:
        expected = gradcam.CAM(lite0.module)(x).raw[0, 0]
        torch.testing.assert_close(torch.from_numpy(arrays["cam_raw"]), expected)


def test_caption_and_vqa_endpoints(server: str, tmp_path: Path) -> None:
    """The Captioning and VQA tabs' API (on by default): the shipped models' answers."""
    from gradio_client import Client, handle_file

    from gradcam.vl import VL_PREPROCESS, caption, load_captioner, load_vqa, questions, vl_scene
    from gradcam.vl.explain import explain_answer

    scene = vl_scene(0)
    path = tmp_path / "scene.png"
    scene.image.save(path)
    client = Client(server, verbose=False)
    summary, text, word, shown, cam, guided = client.predict(
        handle_file(str(path)), "", "2", api_name="/caption"
    )
    assert text == load_captioner().generate(VL_PREPROCESS(scene.image))[0]
    assert word == text.split()[2] and f"Maps of **{word}** (word 3" in summary
    assert f"The scene shows: *{caption(scene).text}*" in summary
    assert all(Image.open(str(p)).size == (384, 384) for p in (shown, cam, guided))
    asked = questions(scene)[0]
    summary, answers, answer, *pictures = client.predict(
        handle_file(str(path)), asked.text, "yellow", api_name="/vqa"
    )
    expected = explain_answer(load_vqa(), scene.image, asked.text, answers=["yellow"])
    assert answer == expected.answer == answers["label"]
    assert {c["label"]: c["confidence"] for c in answers["confidences"]} == pytest.approx(
        expected.probabilities
    )
    assert "Forced answer **yellow**" in summary and f"right answer is *{asked.answer}*" in summary
    assert len(pictures) == 4 and all(Image.open(str(p)).size == (384, 384) for p in pictures)
    empty = client.predict(handle_file(str(path)), " ", "", api_name="/vqa")
    assert empty[0] == "Type a question, or pick one of the examples." and empty[2] is None


def test_serve_refuses_a_port_in_use(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    port = urlsplit(server).port
    assert main(["serve", "--port", str(port)]) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def _image_at(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"), dtype=float)


def test_page_in_a_real_browser(server: str, lite0: gradcam.LoadedModel, tmp_path: Path) -> None:
    if os.environ.get("GRADCAM_SKIP_BROWSER"):
        pytest.skip("GRADCAM_SKIP_BROWSER is set")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make browser`"
    from playwright.sync_api import expect, sync_playwright

    with torch.no_grad():
        top1, hopper = (
            lite0.class_names[int(lite0.module(lite0.preprocess(gradcam.load_image(p))).argmax())]
            for p in (BUNDLED, GRACE_HOPPER)
        )
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    requests: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(server)
            summary = page.locator("#summary")
            page.locator("#photo input[type=file]").set_input_files(BUNDLED)
            expect(summary).to_contain_text(f"{top1} (class", timeout=120_000)
            expect(page.locator("#top5")).to_contain_text(top1)
            for index in range(5):
                picture = page.locator(f"#view-{index} img")
                expect(picture).to_be_visible()
                assert picture.evaluate("img => img.complete && img.naturalWidth > 0")
            expect(page.locator("#maps")).to_contain_text(".npz", timeout=60_000)
            expect(page.locator("#figure")).to_contain_text(".png")
            before = page.locator("#view-1 img").get_attribute("src")
            # Choose another class by typing part of its name and picking it from the list.
            other = "Egyptian cat" if top1 != "Egyptian cat" else "espresso"
            search = page.locator("#class input")
            search.click()
            search.fill("")
            search.press_sequentially(other.split()[0], delay=20)
            page.locator(f"[role=option][aria-label='{other}']").click()
            expect(summary).to_contain_text(f"{other} (class", timeout=120_000)
            after = page.locator("#view-1 img").get_attribute("src")
            assert before and after and before != after
            change = np.abs(_image_at(after) - _image_at(before)).mean()
            assert change > 5.0, f"the Grad-CAM overlay barely changed ({change:.2f})"
            # The layer sweep: one Grad-CAM per resolution, in a gallery.
            page.get_by_text("Layer sweep (appendix B, Fig. 13)").click()
            page.locator("#sweep-button").click()
            expect(page.locator("#sweep-note")).to_contain_text(f"{other}", timeout=120_000)
            expect(page.locator("#sweep img")).to_be_visible()
            # The textual explanation: the sentence and the named units' maps (section 7).
            page.get_by_text("Textual explanation: named neurons").click()
            page.locator("#text-button").click()
            expect(page.locator("#text-note")).to_contain_text(
                f"{other}: positive:", timeout=60_000
            )
            expect(page.locator("#text-units img").first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "demo_page.png", full_page=True)
            # A file that is not an image: a message on the page, and the server stays up.
            page.locator("#photo button[aria-label='Clear']").click()
            page.locator("#photo input[type=file]").set_input_files(notes)
            expect(summary).to_contain_text("Error: notes.txt: not an image file", timeout=60_000)
            page.screenshot(path=ARTIFACTS / "demo_error.png", full_page=True)
            # After the error, a bundled photo picked from the examples is explained.
            page.get_by_text("grace_hopper.jpg", exact=True).click()
            expect(summary).to_contain_text(f"{hopper} (class", timeout=120_000)
            # The Captioning tab: a generated scene, its caption as words; a click shows a word.
            page.get_by_role("tab", name="Captioning").click()
            page.get_by_text("scene_0.png", exact=True).click()
            told = page.locator("#caption-summary")
            expect(told).to_contain_text("Caption (the model's own)", timeout=60_000)
            whole = page.locator("#caption-view-1 img").get_attribute("src")
            word = page.locator("#caption textarea").input_value().split()[2]
            page.locator("#caption-words").get_by_text(word, exact=True).click()
            expect(told).to_contain_text(f"Maps of {word} (word 3", timeout=60_000)
            expect(page.locator("#caption-view-1 img")).not_to_have_attribute("src", whole or "")
            assert page.locator("#caption-view-1 img").evaluate("img => img.naturalWidth") > 0
            page.screenshot(path=ARTIFACTS / "demo_captioning.png", full_page=True)
        finally:
            browser.close()
    with urllib.request.urlopen(server, timeout=30) as response:
        assert response.status == 200
    hosts = {urlsplit(url).netloc for url in requests if url.startswith(("http:", "https:"))}
    assert hosts == {urlsplit(server).netloc}, f"the page reached out: {hosts}"


def _post_upload(server: str, name: str, data: bytes) -> int:
    """POST one file to Gradio's upload route as a browser would; returns the HTTP status."""
    boundary = "gradcam-test-boundary"
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'.encode(),
            b"Content-Type: image/png\r\n\r\n",
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    request = urllib.request.Request(
        f"{server}gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_uploads_over_the_limit_are_refused(server: str) -> None:
    small = (SKIMAGE_DATA / "coffee.png").read_bytes()
    assert _post_upload(server, "coffee.png", small) == 200
    assert _post_upload(server, "big.png", bytes(21 * 2**20)) == 413  # over the default 20 MiB
    with urllib.request.urlopen(server, timeout=30) as response:
        assert response.status == 200


def test_sigterm_removes_the_download_folder(tmp_path: Path) -> None:
    """A server's download folder is gone after SIGTERM; one left by a crashed server is removed
    when the next starts; a bad class over the API gives a message and no files."""
    from gradio_client import Client, handle_file

    temp = tmp_path / "tmp"
    temp.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    crashed = temp / f"gradcam-demo-{int(ended.stdout)}-left"
    crashed.mkdir()
    (crashed / "visitor.npz").write_bytes(b"a visitor's maps")
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    command = [sys.executable, "-m", "gradcam.cli", "serve", "--model", "shapes"]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_up(proc, url, log)
        assert not crashed.exists()
        (folder,) = temp.glob(f"gradcam-demo-{proc.pid}-*")
        scene = tmp_path / "scene.png"
        Image.new("RGB", (64, 64), "white").save(scene)
        summary, *_, maps, figure = Client(url, verbose=False).predict(
            handle_file(str(scene)), "unicorn", "", api_name="/explain"
        )
        assert "no class named 'unicorn'" in str(summary) and (maps, figure) == (None, None)
        assert not list(folder.glob("*.npz"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert not folder.exists()
        assert not list(temp.glob("gradcam-demo-*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
