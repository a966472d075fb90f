"""Web demo latency: what a visitor waits for, against the model's own forward + backward time.

Run from the repository root (no network needed)::

    .venv/bin/python benchmarks/bench_demo.py                 # 15 rounds, with the HTTP cases
    .venv/bin/python benchmarks/bench_demo.py --quick         # 1 round, smoke test

On the bundled photo (``src/gradcam/data/cat_and_coffee.jpg``) with EfficientNet-Lite0, it
times, interleaved and in a rotating order each round:

* ``GradCAM(module)(x, [c])``: one forward and one backward pass to the layer (the floor);
* ``explain_image`` with the page's four methods: one forward, a backward to the layer and a
  guided backward to the input (what the page needs from the model);
* ``DemoSession.explain`` on a new upload (caches cleared: hash, decode, the passes, rendering
  the five pictures at display size);
* the same on a class not seen before (the decoded photo is cached; the passes and rendering);
* switching back to a class seen before (served from the cache: no model pass);
* writing the downloads (``.npz`` maps and PNG figure), which the page does after showing the
  pictures;
* with ``--http`` (default on): the whole ``/explain`` call through ``gradio_client`` to an
  in-process server, on a new upload and on a cached class (upload, queue, transfer of the
  pictures and files included).

Reported: median and min in milliseconds, and each median's ratio to the forward + backward one.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from bench_core import time_cases

import gradcam
from gradcam.demo import DemoSession
from gradcam.explain import explain_image

PHOTO = Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg"
METHODS = ["gradcam", "counterfactual", "guided-backprop", "guided-gradcam"]


def _clear(session: DemoSession) -> None:
    for cache in (session._photos, session._predictions, session._views):
        cache.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="1 round, no warm-up: a smoke test")
    parser.add_argument("--no-http", action="store_true", help="skip the gradio_client cases")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = gradcam.load_model()
    image = gradcam.load_image(PHOTO)
    x = loaded.preprocess(image)
    cam = gradcam.GradCAM(loaded.module)
    folder = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    session = DemoSession(loaded, folder=folder)
    session.explain(PHOTO, "espresso")
    counter = iter(range(10**9))

    def new_class() -> None:
        # A class not explained before in this session, so the cache cannot answer.
        session.explain(PHOTO, str(next(counter) % 900))

    def downloads() -> None:
        for path in folder.glob("gradcam_*"):
            path.unlink()
        views = session.explain(PHOTO, "espresso")
        session.write_maps(views)
        session.write_figure(views)

    def upload() -> None:
        _clear(session)
        session.explain(PHOTO)

    cases: dict[str, Callable[[], object]] = {
        "GradCAM forward + backward (floor)": lambda: cam(x, [967]),
        "explain_image, the page's 4 methods": lambda: explain_image(
            loaded, image, methods=METHODS, classes=[967]
        ),
        "session: new upload": upload,
        "session: new class": new_class,
        "session: class seen before (cache)": lambda: session.explain(PHOTO, "espresso"),
        "session: write .npz + PNG": downloads,
    }
    app = None
    if not args.no_http:
        from gradio_client import Client, handle_file

        from gradcam.demo.app import build_app

        os.environ.setdefault("GRADIO_TEMP_DIR", str(folder / "gradio"))
        app = build_app(session)
        app.queue(default_concurrency_limit=4)
        app.launch(prevent_thread_lock=True, quiet=True, ssr_mode=False, server_name="127.0.0.1")
        client = Client(app.local_url, verbose=False)

        def http(clear: bool) -> None:
            if clear:
                _clear(session)
            client.predict(handle_file(str(PHOTO)), "espresso", "", api_name="/explain")

        cases["HTTP /explain: new upload"] = lambda: http(True)
        cases["HTTP /explain: cached class"] = lambda: http(False)
    # bench_core's interleaved rounds; these calls hold their inputs.
    held = {name: (lambda _x, call=call: call()) for name, call in cases.items()}
    times = time_cases(held, torch.empty(0), rounds, warmup=0 if args.quick else 1)
    names = list(cases)
    if app is not None:
        app.close()
    floor = statistics.median(times[names[0]])
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    print(f"`{command}`: {rounds} rounds, {PHOTO.name} {image.size}, input {tuple(x.shape)}, ")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| case | median ms | min ms | median / forward+backward |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.1f} | {min(values) * 1000:.1f} | {median / floor:.2f} |")


if __name__ == "__main__":
    main()
