"""Train ShapeNet on synthetic scenes and save its weights (the shipped ``shapes_cnn.pt``).

Scenes are generated once (one balanced random shape per image, from ``--seed``), kept as
8-bit tensors and normalized per batch exactly as ``SHAPES_PREPROCESS`` does; flips and
quarter turns augment them (every shape keeps its name under both). Held-out accuracy is
measured on benchmark scenes of a different seed. Runs on two CPU threads; with the
defaults it rewrites ``shapes_cnn.pt`` bit for bit (checked on torch 2.15, this CPU).

Usage:
    python scripts/train_shapes.py                       # ~8 minutes; writes the shipped file
    python scripts/train_shapes.py --steps 3 --images 32 --out /tmp/shapes.pt   # smoke run
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam.synthetic import (
    SHAPES,
    SHAPES_MEAN,
    SHAPES_STD,
    SHAPES_WEIGHTS,
    ShapeNet,
    benchmark_scene,
    make_scene,
)

_TRAIN_STREAM = 2  # spawn key of the training scenes (the benchmark uses keys 0 and 1)


def normalize(images: Tensor) -> Tensor:
    """(B, 3, H, W) uint8 -> float32, the same arithmetic as ``Preprocess.__call__``."""
    mean = torch.tensor(SHAPES_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SHAPES_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _stack(arrays: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def training_set(count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` one-shape scenes as (N, 3, 128, 128) uint8 and their (N,) labels, balanced."""
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TRAIN_STREAM, 0)))
    labels = order.permutation(np.resize(np.arange(len(SHAPES)), count))
    arrays = []
    for index, label in enumerate(labels):
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(_TRAIN_STREAM, 1, index))
        )
        arrays.append(np.asarray(make_scene(rng, shapes=[SHAPES[int(label)]]).image))
    return _stack(arrays), torch.from_numpy(labels.astype(np.int64))


def held_out_set(count: int, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``count`` benchmark scenes of ``seed`` (never used for training)."""
    scenes = [benchmark_scene(i, seed) for i in range(count)]
    labels = [SHAPES.index(s.objects[0].shape) for s in scenes]
    return _stack([np.asarray(s.image) for s in scenes]), torch.tensor(labels)


def _augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """A random flip and quarter turn per batch: every shape keeps its name under both."""
    turns = int(torch.randint(4, (1,), generator=generator))
    if bool(torch.randint(2, (1,), generator=generator)):
        images = images.flip(-1)
    return torch.rot90(images, turns, dims=(-2, -1))


@torch.no_grad()
def accuracy(model: ShapeNet, images: Tensor, labels: Tensor, batch: int = 100) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on uint8 images."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch):
        x = normalize(images[start : start + batch]).contiguous(memory_format=torch.channels_last)
        correct += int((model(x).argmax(1) == labels[start : start + batch]).sum())
    return correct / max(len(images), 1)


def train(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    max_steps: int | None = None,
    held_out: tuple[Tensor, Tensor] | None = None,
) -> ShapeNet:
    """Adam with a one-cycle learning rate; prints the loss and held-out accuracy per epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ShapeNet().to(memory_format=torch.channels_last)  # faster convolutions on CPU
    steps_per_epoch = math.ceil(len(images) / batch)
    total = (
        epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total, 1))
    step, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        losses = []
        for first in range(0, len(images), batch):
            if step >= total:
                break
            chosen = order[first : first + batch]
            x = normalize(_augment(images[chosen], generator))
            loss = F.cross_entropy(
                model(x.contiguous(memory_format=torch.channels_last)), labels[chosen]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
        line = f"epoch {epoch}: {step} steps, train loss {np.mean(losses or [math.nan]):.4f}"
        if held_out is not None:
            line += f", held-out accuracy {accuracy(model, *held_out):.4f}"
        print(f"{line} ({time.perf_counter() - start:.0f} s)", flush=True)
        if step >= total:
            break
    return model.eval()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, train, report and save the state dict; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the training scenes")
    parser.add_argument("--images", type=int, default=6000, help="training scenes to generate")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--held-out", type=int, default=400, help="held-out scenes to test on")
    parser.add_argument("--out", type=Path, default=SHAPES_WEIGHTS)
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    start = time.perf_counter()
    images, labels = training_set(args.images, args.seed)
    # A different seed: no held-out scene shares a random stream with a training scene.
    held_out = held_out_set(args.held_out, args.seed + 1)
    print(
        f"generated {len(images)} + {len(held_out[0])} scenes ({time.perf_counter() - start:.0f} s)"
    )
    model = train(
        images,
        labels,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        max_steps=args.steps,
        held_out=held_out,
    )
    print(f"held-out accuracy {accuracy(model, *held_out):.4f} on {len(held_out[0])} scenes")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
        for k, v in model.state_dict().items()
    }
    torch.save(state, args.out)
    print(f"saved {args.out} ({time.perf_counter() - start:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
