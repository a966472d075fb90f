"""Train the ``shapes3d`` or ``motion`` net and save its weights (the shipped files).

``shapes3d`` learns the solids of :mod:`gradcam.synthetic.volumes` (random flips of the three
axes augment the volumes: every solid keeps its name under them); ``motion`` learns the
directions of :mod:`gradcam.synthetic.clips` (no augmentation: a flip would change the
direction). Training samples come from their own random stream; held-out accuracy is
measured on the benchmark of seed 1, which training never sees. One CPU thread.

Usage:
    python scripts/train_net3d.py shapes3d        # writes src/gradcam/data/shapes3d_cnn.pt
    python scripts/train_net3d.py motion          # writes src/gradcam/data/motion_cnn.pt
    python scripts/train_net3d.py motion --samples 64 --epochs 1 --out /tmp/m.pt  # smoke run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam.synthetic.clips import DIRECTIONS, benchmark_clip, make_clip
from gradcam.synthetic.model3d import (
    MOTION_WEIGHTS,
    SHAPES3D_WEIGHTS,
    Net3d,
    motion_net,
    shapes3d_net,
)
from gradcam.synthetic.volumes import SOLIDS, benchmark_volume, make_volume

_TRAIN_STREAM = 2  # spawn key of the training samples (the benchmarks use keys 0 and 1)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def training_set(kind: str, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` balanced samples (N, 1, ...) float32 and their (N,) labels."""
    names = SOLIDS if kind == "shapes3d" else DIRECTIONS
    labels = _rng(seed, _TRAIN_STREAM, 0).permutation(np.resize(np.arange(len(names)), count))
    arrays = []
    for index, label in enumerate(labels):
        rng = _rng(seed, _TRAIN_STREAM, 1, index)
        if kind == "shapes3d":
            arrays.append(make_volume(rng, solid=names[int(label)]).array)
        else:
            arrays.append(make_clip(rng, direction=names[int(label)]).array)
    return torch.from_numpy(np.stack(arrays)), torch.from_numpy(labels.astype(np.int64))


def held_out_set(kind: str, count: int) -> tuple[Tensor, Tensor]:
    """The first ``count`` benchmark samples of seed 1."""
    if kind == "shapes3d":
        volumes = [benchmark_volume(i, seed=1) for i in range(count)]
        arrays = [v.array for v in volumes]
        labels = [SOLIDS.index(v.solid) for v in volumes]
    else:
        clips = [benchmark_clip(i, seed=1) for i in range(count)]
        arrays = [c.array for c in clips]
        labels = [DIRECTIONS.index(c.direction) for c in clips]
    return torch.from_numpy(np.stack(arrays)), torch.tensor(labels)


@torch.no_grad()
def accuracy(model: Net3d, inputs: Tensor, labels: Tensor, batch: int = 64) -> float:
    model.eval()
    right = 0
    for k in range(0, len(inputs), batch):
        right += int((model(inputs[k : k + batch]).argmax(1) == labels[k : k + batch]).sum())
    return right / max(len(inputs), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("shapes3d", "motion"))
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    volumes = args.kind == "shapes3d"
    samples = args.samples or 2000
    epochs = args.epochs or (6 if volumes else 4)
    out = args.out or (SHAPES3D_WEIGHTS if volumes else MOTION_WEIGHTS)
    start = time.time()
    inputs, labels = training_set(args.kind, samples, args.seed)
    test_inputs, test_labels = held_out_set(args.kind, args.held_out)
    print(f"generated {samples} + {args.held_out} samples in {time.time() - start:.0f} s")
    model = shapes3d_net() if volumes else motion_net()
    steps = epochs * ((samples + args.batch - 1) // args.batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(samples, generator=generator)
        total = 0.0
        for k in range(0, samples, args.batch):
            pick = order[k : k + args.batch]
            x = inputs[pick]
            if volumes:
                axes = [d for d in (2, 3, 4) if bool(torch.randint(2, (1,), generator=generator))]
                x = x.flip(axes) if axes else x
            loss = F.cross_entropy(model(x), labels[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(pick)
        held = accuracy(model, test_inputs, test_labels)
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total / samples:.4f}, held-out accuracy "
            f"{100 * held:.1f}% ({time.time() - start:.0f} s)",
            flush=True,
        )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
