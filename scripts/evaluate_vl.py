"""The section 8 evaluations of the shipped scene captioner and VQA model (README tables).

Scores held-out scenes (seed 1 by default; the models were trained on seed 0) with the
functions of :mod:`gradcam.vl.evaluate` and prints Markdown tables.

Usage:
    python scripts/evaluate_vl.py                     # 200 scenes
    python scripts/evaluate_vl.py --scenes 20         # a quick look
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from gradcam.vl import load_captioner, load_vqa, vl_scene
from gradcam.vl.evaluate import (
    answer_correlation,
    forced_answers,
    occlusion_correlation,
    region_ratio,
    word_pointing,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Score the scenes and print the tables; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=200, help="scenes to score")
    parser.add_argument("--seed", type=int, default=1, help="seed of the scenes")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument(
        "--occlusion-scenes", type=int, default=25, help="scenes for the occlusion correlation"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    scenes = [vl_scene(i, args.seed) for i in range(args.scenes)]
    captioner, vqa = load_captioner(), load_vqa()

    pointing = word_pointing(captioner, scenes)
    print(f"## Word-level pointing (section 8.1.1), {args.scenes} scenes of seed {args.seed}\n")
    print("| words | hits | accuracy | color words | shape words | on the other object | chance |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {pointing.total} | {pointing.hits} | {pointing.accuracy:.1%} | {pointing.colors:.1%} "
        f"| {pointing.shapes:.1%} | {pointing.other / max(pointing.total, 1):.1%} "
        f"| {pointing.chance:.1%} |\n"
    )
    print("## Inside/outside ratio of region captions (section 8.1; uniform map = 1.0)\n")
    print("| method | mean ratio | std. error | median | regions |")
    print("|---|---|---|---|---|")
    for row in region_ratio(captioner, scenes):
        print(
            f"| {row.method} | {row.mean:.2f} | {row.stderr:.2f} | {row.median:.2f} "
            f"| {row.regions} |"
        )
    correlation = answer_correlation(vqa, scenes)
    forced = forced_answers(vqa, scenes)
    print("\n## VQA (section 8.2, Fig. 12)\n")
    print(
        "| questions | answered right | rank corr. with the object asked about "
        "| with the other object | right color peaks on the object (on the other) "
        "| forced color peaks on the other object |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {correlation.questions} | {correlation.accuracy:.1%} | {correlation.relevant:.3f} "
        f"± {correlation.stderr:.3f} | {correlation.other:.3f} | {forced.right:.1%} "
        f"({forced.stayed:.1%}) "
        f"| {forced.forced:.1%} |"
    )
    count = min(args.occlusion_scenes, args.scenes)
    print(f"\n## VQA maps against occlusion maps (section 8.2), the first {count} scenes\n")
    print("| method | mean Spearman | std. error | median | questions |")
    print("|---|---|---|---|---|")
    for row in occlusion_correlation(vqa, scenes[:count]):
        print(
            f"| {row.method} | {row.mean:.3f} | {row.stderr:.3f} | {row.median:.3f} "
            f"| {row.questions} |"
        )
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
