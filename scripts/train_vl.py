"""Train the scene captioner or the VQA model and save its weights (the shipped files).

Scenes are generated once from ``--seed`` (:func:`gradcam.vl.vl_scene`), kept as 8-bit
tensors with their captions (also those of their mirror images) and questions, and normalized
per batch exactly as ``VL_PREPROCESS`` does. Each batch is mirrored at random (left-right,
up-down or both); the caption follows the mirror, the answers do not change. Held-out scenes
come from seed ``--seed + 1``. Besides its own loss, each model's image vector feeds a linear
"tags" head (used in training only, not saved) that predicts which colors, shapes and
(color, shape) pairs the scene holds, so the CNN learns features that bind a color to its
shape, which the answers and the word order need. The CNN starts from the conv layers of the shipped
ShapeNet (``scripts/train_shapes.py``), as the paper's models start from an ImageNet CNN.
Weights are saved as float16.

Usage:
    python scripts/train_vl.py captioner      # writes src/gradcam/data/vl_captioner.pt
    python scripts/train_vl.py vqa            # writes src/gradcam/data/vl_vqa.pt
    python scripts/train_vl.py vqa --steps 3 --images 16 --held-out 8 --out /tmp/v.pt  # smoke
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradcam.synthetic import load_shapes_model
from gradcam.vl import (
    ANSWERS,
    CAPTIONER_WEIGHTS,
    VL_COLORS,
    VL_MEAN,
    VL_SHAPES,
    VL_STD,
    VOCAB,
    VQA_WEIGHTS,
    Captioner,
    VQAModel,
    caption,
    load_captioner,
    load_vqa,
    questions,
    vl_scene,
)

_CAPTION_STEPS = 9  # the longest caption (8 words) and <end>
_QUESTION_STEPS = 7
_FLIPS = ((False, False), (True, False), (False, True), (True, True))  # (left-right, up-down)
_PAIRS = [(c, s) for c in VL_COLORS for s in VL_SHAPES]


@dataclass(frozen=True)
class SceneSet:
    """Scenes as tensors: images (N, 3, 96, 96) uint8; captions (N, 4, 9), one per mirror of
    :data:`_FLIPS`, and questions (N, 4, 7) as token ids padded with 0; answers (N, 4); tags
    (N, 48), 1.0 for the colors and shapes of :data:`ANSWERS` in the scene, then for its
    (color, shape) pairs in :data:`_PAIRS` order."""

    images: Tensor
    captions: Tensor
    questions: Tensor
    answers: Tensor
    tags: Tensor


def _padded(tokens: list[int], length: int) -> list[int]:
    return tokens + [0] * (length - len(tokens))


def scene_set(count: int, seed: int) -> SceneSet:
    """The first ``count`` scenes of ``seed`` with their texts."""
    images, captions, asked, answers, tags = [], [], [], [], []
    for index in range(count):
        scene = vl_scene(index, seed)
        images.append(np.asarray(scene.image))
        captions.append(
            [_padded(caption(scene, flip_x=x, flip_y=y).tokens, _CAPTION_STEPS) for x, y in _FLIPS]
        )
        scene_questions = questions(scene)
        asked.append([_padded(q.tokens, _QUESTION_STEPS) for q in scene_questions])
        answers.append([q.answer_index for q in scene_questions])
        present = {o.color for o in scene.objects} | {o.shape for o in scene.objects}
        pairs = {(o.color, o.shape) for o in scene.objects}
        tags.append([float(a in present) for a in ANSWERS] + [float(p in pairs) for p in _PAIRS])
    return SceneSet(
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        torch.tensor(captions),
        torch.tensor(asked),
        torch.tensor(answers),
        torch.tensor(tags),
    )


def normalize(images: Tensor) -> Tensor:
    """(B, 3, H, W) uint8 -> float32, the same arithmetic as ``Preprocess.__call__``."""
    mean = torch.tensor(VL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(VL_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _mirror(images: Tensor, flip: int) -> Tensor:
    flip_x, flip_y = _FLIPS[flip]
    if flip_x:
        images = images.flip(-1)
    if flip_y:
        images = images.flip(-2)
    return images


def batch_loss(
    model: Captioner | VQAModel,
    tags: nn.Linear,
    data: SceneSet,
    chosen: Tensor,
    generator: torch.Generator,
) -> Tensor:
    """The loss of one mirrored batch: cross-entropy per word for the captioner (padding
    ignored) or per answer for the VQA model (one random question per scene), plus the
    binary cross-entropy of the tags head on the image vector."""
    flip = int(torch.randint(len(_FLIPS), (1,), generator=generator))
    x = normalize(_mirror(data.images[chosen], flip)).contiguous(memory_format=torch.channels_last)
    seen: list[Tensor] = []
    hook = model.encoder.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        if isinstance(model, Captioner):
            tokens = data.captions[chosen, flip]
            logits = model(x, tokens)
            loss = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), ignore_index=0)
        else:
            pick = torch.randint(data.questions.shape[1], (len(chosen),), generator=generator)
            logits = model(x, data.questions[chosen, pick])
            loss = F.cross_entropy(logits, data.answers[chosen, pick])
    finally:
        hook.remove()
    return loss + F.binary_cross_entropy_with_logits(tags(seen[0]), data.tags[chosen])


@torch.no_grad()
def word_accuracy(model: Captioner, data: SceneSet, batch: int = 100) -> float:
    """Share of the color and shape words the captioner predicts right, teacher-forced."""
    model.eval()
    correct = total = 0
    first_visual = len(VOCAB) - len(ANSWERS)  # colors and shapes close the vocabulary
    for start in range(0, len(data.images), batch):
        tokens = data.captions[start : start + batch, 0]
        said = model(normalize(data.images[start : start + batch]), tokens).argmax(dim=-1)
        visual = tokens >= first_visual
        correct += int((said == tokens)[visual].sum())
        total += int(visual.sum())
    return correct / max(total, 1)


@torch.no_grad()
def accuracy(model: nn.Module, data: SceneSet, batch: int = 100) -> float:
    """Captioner: share of scenes whose greedy caption is exactly right. VQA: share of
    questions answered right (all four of every scene)."""
    model.eval()
    correct = total = 0
    for start in range(0, len(data.images), batch):
        x = normalize(data.images[start : start + batch])
        if isinstance(model, Captioner):
            truth = data.captions[start : start + batch, 0]
            for said, tokens in zip(model.generate(x), truth, strict=True):
                words = [t for t in tokens.tolist() if t > 1]
                correct += int(said == " ".join(VOCAB[t] for t in words))
                total += 1
            continue
        for q in range(data.questions.shape[1]):
            answers = model(x, data.questions[start : start + batch, q]).argmax(dim=1)
            correct += int((answers == data.answers[start : start + batch, q]).sum())
            total += len(x)
    return correct / max(total, 1)


def train(
    kind: str,
    data: SceneSet,
    *,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    max_steps: int | None = None,
    held_out: SceneSet | None = None,
    init: Path | None = None,
) -> Captioner | VQAModel:
    """Adam with a one-cycle learning rate; prints the loss (and held-out accuracy) per epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model: Captioner | VQAModel = Captioner() if kind == "captioner" else VQAModel()
    model = model.to(memory_format=torch.channels_last)
    if init is not None:  # continue an earlier run
        loaded = load_captioner(init) if kind == "captioner" else load_vqa(init)
        model.load_state_dict(loaded.state_dict())
    else:
        # Start from the shipped ShapeNet's conv layers, as the paper's models start from a
        # CNN trained on ImageNet.
        model.encoder.features.load_state_dict(load_shapes_model().features.state_dict())
    tags = nn.Linear(model.encoder.project.out_features, data.tags.shape[1])
    count = len(data.images)
    steps_per_epoch = math.ceil(count / batch)
    total = (
        epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    )
    parameters = [*model.parameters(), *tags.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total, 1))
    step, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(count, generator=generator)
        losses = []
        for first in range(0, count, batch):
            if step >= total:
                break
            loss = batch_loss(model, tags, data, order[first : first + batch], generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
        line = f"epoch {epoch}: {step} steps, train loss {np.mean(losses or [math.nan]):.4f}"
        if held_out is not None:
            line += f", held-out accuracy {accuracy(model, held_out):.4f}"
            if isinstance(model, Captioner):
                line += f", words {word_accuracy(model, held_out):.4f}"
        print(f"{line} ({time.perf_counter() - start:.0f} s)", flush=True)
        if step >= total:
            break
    return model.eval()


def save(model: nn.Module, path: Path) -> None:
    """Write the state dict with floating-point tensors as float16."""
    state = {
        k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
        for k, v in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, train, report and save the weights; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=("captioner", "vqa"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the training scenes")
    parser.add_argument("--images", type=int, default=6000, help="training scenes to generate")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--held-out", type=int, default=300, help="held-out scenes to test on")
    parser.add_argument("--out", type=Path, default=None, help="weights file to write")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--init", type=Path, default=None, help="weights to continue from")
    parser.add_argument(
        "--tags",
        choices=("pairs", "attributes"),
        default="pairs",
        help="what the tags head predicts: colors, shapes and their pairs (default), or "
        "colors and shapes only (the first run of the shipped weights)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    data = scene_set(args.images, args.seed)
    if args.tags == "attributes":
        data = replace(data, tags=data.tags[:, : len(ANSWERS)])
    held_out = scene_set(args.held_out, args.seed + 1)
    print(f"generated {args.images} + {args.held_out} scenes ({time.perf_counter() - start:.0f} s)")
    model = train(
        args.model,
        data,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        max_steps=args.steps,
        held_out=held_out,
        init=args.init,
    )
    score = accuracy(model, held_out)
    measure = "exact captions" if args.model == "captioner" else "answers right"
    print(f"held-out {measure}: {score:.4f} on {args.held_out} scenes")
    out = args.out or (CAPTIONER_WEIGHTS if args.model == "captioner" else VQA_WEIGHTS)
    save(model, out)
    print(f"saved {out} ({time.perf_counter() - start:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
