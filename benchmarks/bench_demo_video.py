"""The Video tab's latency: one clip through ``VideoSession.explain``, new and cached.

Run from the repository root (no network needed; r3d_18 with random weights, whose cost is the
pretrained model's)::

    .venv/bin/python benchmarks/bench_demo_video.py            # 3 rounds
    .venv/bin/python benchmarks/bench_demo_video.py --rounds 1

Clips: scikit-image's animated GIF (24 frames of 14 x 25) and a generated MP4 at the tab's caps
(120 frames of 320 x 240: a bright disc moving over a colour gradient). Each round uses a
fresh session (nothing cached), then asks again (cached). One intra-op thread. Reported: the
median seconds per clip, and the size of the animated WebP overlay.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import skimage
import torch

from gradcam.demo.video import MAX_VIDEO_FRAMES, VideoSession
from gradcam.media.video import write_video_overlay
from gradcam.models import load_model


def moving_disc(path: Path, frames: int = MAX_VIDEO_FRAMES) -> Path:
    """An MP4 of ``frames`` 320 x 240 frames: a disc moving right over a gradient."""
    yy, xx = np.mgrid[0:240, 0:320]
    clip = []
    for i in range(frames):
        frame = np.stack([xx * 255 // 320, yy * 255 // 240, np.full_like(xx, 90)], -1)
        frame[(xx - 40 - 2 * i) ** 2 + (yy - 120) ** 2 < 900] = 250
        clip.append(frame.astype(np.uint8))
    return write_video_overlay(path, torch.from_numpy(np.stack(clip)), torch.zeros(2, 2, 2), 30)


def main() -> None:
    """Time the clips and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights, asked for
        loaded = load_model("r3d_18", "random")
    folder = Path(tempfile.mkdtemp())
    clips = {
        "skimage GIF, 24 frames 14 x 25": Path(skimage.__file__).parent
        / "data"
        / "no_time_for_that_tiny.gif",
        f"MP4, {MAX_VIDEO_FRAMES} frames 320 x 240 (the caps)": moving_disc(folder / "disc.mp4"),
    }
    print("| clip | new (s) | cached (s) | WebP overlay (KB) |\n|---|---|---|---|")
    for name, path in clips.items():
        new, cached, size = [], [], 0
        for _ in range(args.rounds):
            session = VideoSession(loaded)
            started = time.perf_counter()
            views = session.explain(path)
            new.append(time.perf_counter() - started)
            started = time.perf_counter()
            session.explain(path)
            cached.append(time.perf_counter() - started)
            size = views.overlay.stat().st_size // 1024
            session.close()
        print(
            f"| {name} | {statistics.median(new):.2f} | {statistics.median(cached):.4f} | {size} |"
        )


if __name__ == "__main__":
    main()
