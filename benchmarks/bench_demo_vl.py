"""Captioning and VQA tabs' latency: explaining everything at once against one word or answer.

Run from the repository root (no network needed)::

    .venv/bin/python benchmarks/bench_demo_vl.py               # 15 rounds
    .venv/bin/python benchmarks/bench_demo_vl.py --quick       # 1 round, smoke test
    .venv/bin/python benchmarks/bench_demo_vl.py --threads 1   # intra-op threads

On the first example scene (held-out scene 0, 96 x 96) with the shipped scene models, Grad-CAM
and Guided Grad-CAM (the tabs' two methods), it times, interleaved and in a rotating order:

* ``explain_caption`` of one word of the model's caption (what a page computing one word per
  click would pay per click), and of every word at once (what the tab computes per caption);
* ``VLSession.caption`` on a new upload (hash, decode, the model's caption, every word), and
  ``caption_outputs`` for a clicked word once the caption is cached (rendering only);
* ``explain_answer`` of the model's answer and one forced answer, and of every answer at once
  (what the tab computes per question);
* ``VLSession.answer`` on a new upload, and ``vqa_outputs`` forcing an answer once the question
  is cached.

Reported: median and min in milliseconds, and each median's ratio to the one-word (captioning)
or one-forced-answer (VQA) call.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable

import torch
from bench_core import time_cases

from gradcam.demo.vl import VL_PICTURES, VLSession
from gradcam.demo.vl_tabs import caption_outputs, vqa_outputs
from gradcam.vl import ANSWERS, questions, vl_scene
from gradcam.vl.explain import explain_answer, explain_caption

METHODS = list(VL_PICTURES)


def _clear(session: VLSession) -> None:
    for cache in (session._photos, session._captions, session._answers):
        cache.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="1 round, no warm-up: a smoke test")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    session = VLSession(folder=tempfile.mkdtemp(prefix="bench-demo-vl-"), examples=1)
    path = str(session.examples[0])
    image = session.open(path).image
    text = session.caption(path).explanation.caption
    word = text.split()[2]
    question = questions(vl_scene(0))[0].text
    answer = session.answer(path, question).explanation.answer
    forced = next(a for a in ANSWERS if a != answer)
    others = iter(range(10**9))

    def click() -> None:
        caption_outputs(session, path, "", str(next(others) % len(text.split())))

    def force() -> None:
        vqa_outputs(session, path, question, ANSWERS[next(others) % len(ANSWERS)])

    def new_caption() -> None:
        _clear(session)
        session.caption(path)

    def new_answer() -> None:
        _clear(session)
        session.answer(path, question)

    captioner, vqa = session.captioner, session.vqa
    cases: dict[str, Callable[[], object]] = {
        "explain_caption, one word": lambda: explain_caption(
            captioner, image, text, words=[word], methods=METHODS
        ),
        "explain_caption, every word": lambda: explain_caption(
            captioner, image, text, methods=METHODS
        ),
        "VLSession.caption, new upload (generate + every word)": new_caption,
        "caption_outputs, click a word (cached)": click,
        "explain_answer, answer + 1 forced": lambda: explain_answer(
            vqa, image, question, answers=[forced], methods=METHODS
        ),
        "explain_answer, every answer": lambda: explain_answer(
            vqa, image, question, answers=ANSWERS, methods=METHODS
        ),
        "VLSession.answer, new upload (every answer)": new_answer,
        "vqa_outputs, force an answer (cached)": force,
    }
    # bench_core's interleaved rounds; these calls hold their inputs.
    held = {name: (lambda _x, call=call: call()) for name, call in cases.items()}
    times = time_cases(held, torch.empty(0), rounds, warmup=0 if args.quick else 1)
    names = list(cases)
    session.close()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    print(f"`{command}`: {rounds} rounds, scene 0 (96 x 96), caption {text!r}, ")
    print(f"question {question!r}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| case | median ms | min ms | median / one word or one forced answer |")
    print("|---|---|---|---|")
    floors = {name: names[0] if i < 4 else names[4] for i, name in enumerate(names)}
    for name, values in times.items():
        median = statistics.median(values)
        ratio = median / statistics.median(times[floors[name]])
        print(f"| {name} | {median * 1000:.1f} | {min(values) * 1000:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
