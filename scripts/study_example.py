"""Both human studies of section 5 end to end on the synthetic scenes, with simulated
participants: the numbers on docs/study.md.

Run from the repository root (offline; a few minutes on a 2-core CPU)::

    .venv/bin/python scripts/study_example.py --out study_example

It makes model B of the trust study (the shipped ``shapes`` CNN with seeded noise on its
weight tensors, a worse model of the same classes), then runs the real commands:

1. ``gradcam study create class-discrimination --data synthetic`` with the paper's four
   methods (Deconvolution, Guided Backprop and their Grad-CAM versions);
2. ``gradcam study create trust --data synthetic --model shapes --model shapes@NOISY``
   with Guided Backprop and Guided Grad-CAM;
3. ``gradcam study report --simulate N`` on each: simulated participants who answer from
   the maps (not people), and the CSV of every answer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gradcam.cli import main
from gradcam.models import load_model

CLASS_METHODS = ["deconvolution", "guided-backprop", "deconv-gradcam", "guided-gradcam"]
TRUST_METHODS = ["guided-backprop", "guided-gradcam"]


def noisy_shapes(path: Path, scale: float, seed: int) -> Path:
    """The shapes CNN with ``scale`` x (each weight tensor's std) Gaussian noise added to its
    weight tensors (biases and BatchNorm statistics kept)."""
    module = load_model("shapes").module
    params = dict(module.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    noisy = {
        name: value + scale * value.std() * torch.randn(value.shape, generator=generator)
        if name in params and value.dim() > 1
        else value
        for name, value in module.state_dict().items()
    }
    torch.save(noisy, path)
    return path


def run(argv: list[str]) -> None:
    print("$ gradcam " + " ".join(argv), flush=True)
    code = main(argv)
    if code != 0:
        raise SystemExit(code)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("study_example"))
    parser.add_argument("--images", type=int, default=30, help="scenes per study (30)")
    parser.add_argument("--participants", type=int, default=9, help="simulated raters (9)")
    parser.add_argument("--noise", type=float, default=0.6, help="model B's weight noise (0.6)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    weights = noisy_shapes(args.out / "noisy_shapes.pt", args.noise, args.seed)
    common = ["--data", "synthetic", "--images", str(args.images), "--seed", str(args.seed)]
    for kind, methods, models in (
        ("class-discrimination", CLASS_METHODS, ["shapes"]),
        ("trust", TRUST_METHODS, ["shapes", f"shapes@{weights}"]),
    ):
        study = args.out / f"{kind}.db"
        for leftover in args.out.glob(f"{kind}.*"):
            leftover.unlink()
        model_args = [a for m in models for a in ("--model", m)]
        run(["study", "create", kind, *common, "--methods", *methods, *model_args,
             "--out", str(study)])  # fmt: skip
        run(["study", "report", str(study), "--simulate", str(args.participants),
             "--seed", str(args.seed), "--csv", str(args.out / f"{kind}.csv")])  # fmt: skip
