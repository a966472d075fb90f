"""Peak memory and time of the requests issue 18 found dangerous, under today's limits.

Run from the repository root (no network needed)::

    .venv/bin/python benchmarks/bench_limits.py            # every case
    .venv/bin/python benchmarks/bench_limits.py --quick    # the refusals and one caption

Each case is one ``gradcam`` command in a child process; its peak resident memory comes from
``os.wait4`` (the child's ``ru_maxrss``) and its time from the wall clock, start-up (imports,
model loading) included. The cases:

* ``explain`` of a 9000 x 9000 palette PNG (10 KB, 81 Mpx, under Pillow's bomb limit) and of a
  4000 x 3000 JPEG, with the default ``--max-pixels`` and with ``--max-pixels 0`` (every
  pixel) for the JPEG;
* ``explain --top-k 100 --method guided-backprop`` (the most classes allowed) and
  ``--top-k 100000`` (refused);
* ``caption --caption`` with 32 words (the most allowed) and with 60,000 words (refused);
* ``gradcam explain --model shapes`` of a small scene, the baseline of start-up alone.

Reported: a Markdown table of exit code, peak memory (MB) and seconds per case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

PHOTO = Path(__file__).parents[1] / "src" / "gradcam" / "data" / "cat_and_coffee.jpg"


def measure(args: list[str]) -> tuple[int, float, float]:
    """``(exit code, peak resident MB, seconds)`` of ``python -m gradcam.cli ARGS``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradcam.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, seconds


def cases(folder: Path, quick: bool) -> list[tuple[str, list[str]]]:
    scene = folder / "scene.png"
    Image.open(PHOTO).resize((96, 96)).save(scene)
    out = str(folder / "out")
    words = ("a red circle left of a blue square " * 4).split()[:32]
    found = [
        ("start-up: explain a 96 px scene (shapes)", ["explain", str(scene), "--model", "shapes"]),
        ("explain --top-k 100000 (refused)", ["explain", str(PHOTO), "--top-k", "100000"]),
        ("caption of 60,000 words (refused)", ["caption", str(scene), "--caption", "a " * 60000]),
        ("caption of 32 words, 2 methods", ["caption", str(scene), "--caption", " ".join(words),
                                           "--method", "gradcam", "--method", "guided-gradcam"]),
    ]  # fmt: skip
    if quick:
        return [(name, [*args, "--out", out]) for name, args in found]
    bomb, large = folder / "bomb.png", folder / "large.jpg"
    Image.new("P", (9000, 9000)).save(bomb)
    Image.open(PHOTO).resize((4000, 3000)).save(large, quality=90)
    found += [
        ("explain 9000x9000 palette PNG", ["explain", str(bomb)]),
        ("explain 4000x3000 JPEG", ["explain", str(large)]),
        ("explain 4000x3000 JPEG, --max-pixels 0", ["explain", str(large), "--max-pixels", "0"]),
        ("explain --top-k 100 --method guided-backprop",
         ["explain", str(PHOTO), "--top-k", "100", "--method", "guided-backprop"]),
    ]  # fmt: skip
    return [(name, [*args, "--out", out]) for name, args in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the refusals and one caption")
    options = parser.parse_args()
    print("| case | exit | peak MB | seconds |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in cases(Path(tmp), options.quick):
            code, peak, seconds = measure(args)
            print(f"| {name} | {code} | {peak:.0f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
