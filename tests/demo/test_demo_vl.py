"""The Captioning and VQA tabs' callbacks as plain functions: equal to gradcam.vl's maps, cached,
bad input answered with a message."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
import torch
from helpers.photos import SKIMAGE_DATA
from PIL import Image

import gradcam
from gradcam import ModelLoadError
from gradcam.demo import DemoSession
from gradcam.demo.app import build_app, classification_tab
from gradcam.demo.vl import VL_PICTURES, WHOLE_CAPTION, VLSession
from gradcam.demo.vl_tabs import CAPTION_OUTPUTS, VQA_OUTPUTS, caption_outputs, vl_tabs, vqa_outputs
from gradcam.viz import gradient_image, overlay
from gradcam.vl import ANSWERS, VOCAB, caption, questions, vl_scene
from gradcam.vl.explain import explain_answer, explain_caption

METHODS = list(VL_PICTURES)


@pytest.fixture(scope="module")
def vl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLSession]:
    session = VLSession(folder=tmp_path_factory.mktemp("scenes"), examples=2)
    yield session
    session.close()
    assert not session.folder.exists()


@pytest.fixture()
def forward_count(vl: VLSession) -> Iterator[list[int]]:
    """Counts forward passes of both shared models while a test runs."""
    calls = [0]

    def count(*_: object) -> None:
        calls[0] += 1

    handles = [m.register_forward_hook(count) for m in (vl.captioner, vl.vqa)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_examples_are_held_out_scenes(vl: VLSession) -> None:
    assert [p.name for p in vl.examples] == ["scene_0.png", "scene_1.png"]
    first = vl.open(vl.examples[0])
    assert first.image.tobytes() == vl_scene(0).image.tobytes()
    assert first.display.size == (384, 384)
    assert vl.true_caption(first) == caption(vl_scene(0)).text
    asked = questions(vl_scene(0))
    assert vl.example_questions[:2] == [
        (vl.examples[0], asked[0].text),
        (vl.examples[0], asked[3].text),
    ]
    assert vl.true_answer(first, asked[3].text.replace(" ?", "?").upper()) == asked[3].answer


def test_word_maps_equal_explain_caption(vl: VLSession, forward_count: list[int]) -> None:
    path = vl.examples[0]
    summary, text, word, scene, cam, guided = caption_outputs(vl, str(path), "", "")
    image = vl.open(path).image
    assert word == WHOLE_CAPTION and "the model's own" in summary
    assert f"The scene shows: *{caption(vl_scene(0)).text}*" in summary
    passes = forward_count[0]
    assert passes > 0
    words = text.split()
    assert len(words) >= 2
    # The shape word of the first object: "a <color> <shape> ...".
    chosen = words[2]
    summary, _, word, scene, cam, guided = caption_outputs(vl, str(path), "", chosen)
    assert forward_count[0] == passes, "clicking a word ran the model again"
    assert word == chosen and f"Maps of **{chosen}** (word 3" in summary
    expected = explain_caption(vl.captioner, image, None, words=[chosen], methods=METHODS)
    assert expected.caption == text
    views = vl.caption(path)
    assert views.cached
    for method in METHODS:
        want = next(m for m in expected.maps if m.method == method and m.position == 2)
        got = views.map(method, 2)
        assert got.score == pytest.approx(want.score, rel=1e-5)
        torch.testing.assert_close(got.map, want.map, rtol=1e-4, atol=1e-5)
    # The pictures show those maps over the enlarged scene (and the Guided Grad-CAM image).
    assert _same(cam, overlay(scene, views.map("gradcam", 2).map))
    assert _same(guided, gradient_image(views.map("guided-gradcam", 2).map, scene.size))
    # The same word by position, and the whole caption by name.
    assert caption_outputs(vl, str(path), "", "2")[2] == chosen
    assert caption_outputs(vl, str(path), None, WHOLE_CAPTION)[2] == WHOLE_CAPTION


def test_typed_caption(vl: VLSession) -> None:
    path = str(vl.examples[1])
    typed = "A green star  left of a WHITE ring"
    summary, text, word, *_ = caption_outputs(vl, path, typed, "ring")
    assert text == "a green star left of a white ring" and word == "ring"
    assert "Caption (yours)" in summary and "(word 8" in summary
    expected = explain_caption(vl.captioner, vl.open(path).image, text.upper(), words=["ring"])
    torch.testing.assert_close(
        vl.caption(path, typed).map("gradcam", 7).map, expected.maps[1].map, rtol=1e-4, atol=1e-5
    )


def test_forced_answer_maps_equal_explain_answer(vl: VLSession, forward_count: list[int]) -> None:
    path = vl.examples[0]
    question = vl.example_questions[0][1]
    outputs = vqa_outputs(vl, str(path), question, "")
    assert len(outputs) == len(VQA_OUTPUTS) == 7
    summary, answers, answer, cam, guided, forced_cam, forced_guided = outputs
    assert forced_cam is None and forced_guided is None and "Force another answer" in summary
    assert f"The right answer is *{questions(vl_scene(0))[0].answer}*" in summary
    assert answer in ANSWERS and answer == max(answers, key=answers.get)
    assert len(answers) == 5 and sum(answers.values()) <= 1.0
    # Force the least likely color among the top five: its maps, from the cache.
    forced = min(answers, key=answers.get)
    passes = forward_count[0]
    summary, _, _, _, _, forced_cam, forced_guided = vqa_outputs(vl, str(path), question, forced)
    assert forward_count[0] == passes and f"Forced answer **{forced}**" in summary
    image = vl.open(path).image
    expected = explain_answer(vl.vqa, image, question, answers=[forced], methods=METHODS)
    assert expected.answer == answer
    views = vl.answer(path, question)
    for method in METHODS:
        for label in (answer, forced):
            want = next(m for m in expected.maps if m.method == method and m.label == label)
            got = views.map(method, label)
            assert got.forced == (label == forced) == want.forced
            assert got.score == pytest.approx(want.score, rel=1e-5)
            torch.testing.assert_close(got.map, want.map, rtol=1e-4, atol=1e-5)
    display = views.photo.display
    assert _same(forced_cam, overlay(display, views.map("gradcam", forced).map))
    assert _same(cam, overlay(display, views.map("gradcam", answer).map))
    assert _same(guided, gradient_image(views.map("guided-gradcam", answer).map, display.size))
    assert guided.size == forced_guided.size == display.size


def test_concurrent_visitors_get_their_own_maps(vl: VLSession, tmp_path: Path) -> None:
    """Four visitors at once on the shared models (a fresh cache): each gets the library's maps."""
    fresh = VLSession(vl.captioner, vl.vqa, folder=tmp_path, examples=2)
    question = vl.example_questions[0][1]
    barrier = threading.Barrier(4)
    found: dict[str, Any] = {}

    def visit(name: str, path: Path) -> None:
        barrier.wait()
        if name.startswith("caption"):
            found[name] = fresh.caption(path).map("gradcam", None).map
        else:
            found[name] = fresh.answer(path, question).map("gradcam", "red").map

    jobs = [(f"{kind} {i}", fresh.examples[i]) for kind in ("caption", "vqa") for i in range(2)]
    threads = [threading.Thread(target=visit, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(found) == 4
    for name, path in jobs:
        image = fresh.open(path).image
        if name.startswith("caption"):
            want = explain_caption(vl.captioner, image, words=[]).maps[0].map
        else:
            want = explain_answer(vl.vqa, image, question, answers=["red"]).maps
            want = next(m for m in want if m.label == "red").map
        torch.testing.assert_close(found[name], want, rtol=1e-4, atol=1e-5)


def test_bad_inputs_get_a_message(vl: VLSession, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not a scene")
    path = str(vl.examples[0])
    question = vl.example_questions[0][1]
    cases = [
        (caption_outputs(vl, None, "", ""), "Upload a scene, or pick one of the examples."),
        (caption_outputs(vl, str(notes), "", ""), "**Error:** notes.png: not an image file"),
        (
            caption_outputs(vl, path, "a red dog", ""),
            "**Error:** unknown word 'dog' in the caption",
        ),
        (
            caption_outputs(vl, path, "a red circle", "square"),
            "**Error:** the word 'square' is not",
        ),
        (caption_outputs(vl, path, "a red circle", "7"), "**Error:** word position 7 is past"),
        (vqa_outputs(vl, None, question, ""), "Upload a scene, or pick one of the examples."),
        (vqa_outputs(vl, path, "  ", ""), "Type a question, or pick one of the examples."),
        (vqa_outputs(vl, str(notes), question, ""), "**Error:** notes.png: not an image file"),
        (vqa_outputs(vl, path, "what color is the dog?", ""), "**Error:** unknown word 'dog'"),
        (vqa_outputs(vl, path, question, "banana"), "**Error:** unknown answer 'banana'"),
    ]
    for outputs, message in cases:
        assert outputs[0].startswith(message), outputs[0]
        assert set(outputs[1:]) == {None}
    assert len(cases[0][0]) == len(CAPTION_OUTPUTS) and len(cases[5][0]) == len(VQA_OUTPUTS)
    assert "the words known are: a, left, of" in cases[2][0][0]


def test_a_real_photo_is_captioned_too(vl: VLSession) -> None:
    """Any image works (here a grayscale, non-square photo); the caption uses the vocabulary."""
    path = str(SKIMAGE_DATA / "page.png")  # 384 x 191, grayscale
    summary, text, word, scene, cam, guided = caption_outputs(vl, path, "", "1")
    assert summary.startswith("Caption (the model's own)") and "The scene shows" not in summary
    assert all(w in VOCAB for w in text.split()) and word == text.split()[1]
    assert scene.size == cam.size == guided.size == (384, 191)
    assert vl.caption(path).map("gradcam", 1).map.shape == (96, 193)


def test_tabs_and_endpoints_on_the_page(vl: VLSession, tmp_path: Path) -> None:
    session = DemoSession(gradcam.load_model("shapes"), folder=tmp_path)
    app = build_app(session, [classification_tab, *vl_tabs(vl)])
    assert isinstance(app, gr.Blocks)
    named = {d.get("api_name") for d in app.config["dependencies"] if d.get("api_name")}
    assert {"explain", "layer_sweep", "caption", "vqa"} <= named
    labels = {c.get("props", {}).get("label") for c in app.config["components"]}
    assert {"Captioning", "VQA", "Force an answer (Fig. 12)"} <= labels


def test_bench_demo_vl_quick_smoke() -> None:
    """One round of the tabs' latency benchmark, so the script cannot rot (no timing checks)."""
    script = Path(__file__).parents[2] / "benchmarks" / "bench_demo_vl.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| caption_outputs, click a word (cached) |" in proc.stdout


def test_serve_without_the_scene_models(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken install (no scene weights) still serves the classification tab, with a warning."""
    import socket

    import gradcam.demo.vl
    from gradcam.demo.app import serve

    def missing() -> None:
        raise ModelLoadError("weights file vl_captioner.pt: no such file")

    monkeypatch.setattr(gradcam.demo.vl, "load_captioner", missing)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    app = serve("shapes", port=port, block=False, quiet=True)
    try:
        named = {d.get("api_name") for d in app.config["dependencies"] if d.get("api_name")}
        assert "explain" in named and "caption" not in named and "vqa" not in named
    finally:
        app.close()
    assert "warning: no Captioning and VQA tabs: weights file vl_captioner.pt" in (
        capsys.readouterr().err
    )


def test_long_texts_are_refused_without_a_model_pass(
    vl: VLSession, forward_count: list[int]
) -> None:
    path = str(vl.examples[1])
    typed = "a red circle " * 20000  # took a server to 23 GB before captions were capped
    summary, *rest = caption_outputs(vl, path, typed, "")
    assert summary == "**Error:** the caption has 60000 words: at most 32 are allowed"
    assert set(rest) == {None}
    summary, *rest = vqa_outputs(vl, path, "what color is " + "the " * 40 + "star?", "")
    assert summary.startswith("**Error:** the question has 45 words: at most 32")
    assert forward_count == [0]


def test_a_huge_word_is_not_echoed(vl: VLSession) -> None:
    summary, *_ = caption_outputs(vl, str(vl.examples[1]), "a " + "x" * 100_000, "")
    assert summary.startswith("**Error:** unknown word 'xxxx") and len(summary) < 1000
