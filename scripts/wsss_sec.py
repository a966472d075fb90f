"""Weakly-supervised segmentation with SEC's seed and expand losses, from CAM or Grad-CAM seeds.

The shape of the paper's section 4.2 experiment (supplement section 6), offline on the
synthetic scenes: SEC (Kolesnikov & Lampert 2016) trains a segmentation network from
image-level labels with three losses; its seeds came from CAM of a network changed to have a
global-average-pooling head, and the paper replaced them with Grad-CAM of the standard network
with its fully connected head (VOC 2012 val mIoU: 44.6 with CAM, 49.6 with Grad-CAM).

Here:

* (a) the GAP network is the shipped shapes CNN (:class:`gradcam.synthetic.ShapeNet`), its
  seeds CAM's maps at ``features.final_relu``;
* (b) the FC network is the same trunk (``features``, started from the shipped weights) with a
  fully connected head (2x2 max-pool, fc 8192 -> 256, ReLU, dropout, fc 256 -> 8), fine-tuned
  here on the training scenes; its seeds are Grad-CAM's maps at the same layer;
* seeds: :func:`gradcam.evaluate.seeds.seeds` (foreground above 0.2 of the map's maximum, as
  SEC's CAM cue; background where the map is at most 0.1 of it), at the segmentation
  network's output resolution (32 x 32);
* the segmentation network: five small 3x3 conv layers (three dilated) and a 1x1 one to 9
  classes (background and the 8 shapes) at a quarter of the input's resolution, trained with
  SEC's seeding loss and expansion loss (global weighted rank pooling, SEC's decays 0.996 for
  present classes, 0 for absent ones, 0.999 for background). SEC's third loss, the constrain
  loss, needs a dense CRF: no maintained dense-CRF package installs here (see docs/wsss.md),
  so it is left out, and the prediction is the plain argmax (no CRF post-processing);
* mIoU (background and 8 shapes, pixel counts summed over the set, as VOC's) on held-out
  benchmark scenes (seed 1) never used for training.

Usage:
    python scripts/wsss_sec.py                    # a few minutes on one CPU thread
    python scripts/wsss_sec.py --train 64 --held-out 16 --epochs 1 --classifier-epochs 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradcam.evaluate.seeds import seeds
from gradcam.methods import create_method
from gradcam.synthetic import (
    SHAPES,
    SHAPES_LAYER,
    SHAPES_MEAN,
    SHAPES_STD,
    benchmark_scene,
    load_shapes_model,
    make_scene,
)

_TRAIN_STREAM = 3  # spawn key of these training scenes (benchmark: 0, 1; train_shapes: 2)
CLASSES = len(SHAPES) + 1  # background, then the shapes
OUTPUT = 32  # side of the segmentation network's output at 128 px input
#: SEC's decays of global weighted rank pooling: present classes, absent ones, background.
DECAY_PRESENT, DECAY_ABSENT, DECAY_BACKGROUND = 0.996, 0.0, 0.999
_EPS = 1e-5  # keeps the logarithms finite where a probability reaches 0 or 1


def normalize(images: Tensor) -> Tensor:
    """(B, 3, H, W) uint8 -> float32, as ``SHAPES_PREPROCESS`` normalizes."""
    mean = torch.tensor(SHAPES_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SHAPES_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def scenes(count: int, seed: int, held_out: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Images (N, 3, 128, 128) uint8, shape labels (N,) and label maps (N, 128, 128) (0 is
    background, ``c + 1`` shape ``c``). Held-out scenes are the benchmark's, of ``seed``."""
    images, labels, truth = [], [], []
    for index in range(count):
        if held_out:
            scene = benchmark_scene(index, seed)
        else:
            rng = np.random.default_rng(
                np.random.SeedSequence(seed, spawn_key=(_TRAIN_STREAM, index))
            )
            scene = make_scene(rng)
        (obj,) = scene.objects
        label = SHAPES.index(obj.shape)
        images.append(np.asarray(scene.image))
        labels.append(label)
        truth.append(np.where(obj.mask, label + 1, 0))
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return stacked, torch.tensor(labels), torch.from_numpy(np.stack(truth)).long()


class FCNet(nn.Module):
    """ShapeNet's trunk with a fully connected head instead of global average pooling."""

    def __init__(self, trunk: nn.Sequential, hidden: int = 256) -> None:
        super().__init__()
        self.features = trunk
        self.head = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(128 * 8 * 8, hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(hidden, len(SHAPES)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]


class SegNet(nn.Module):
    """A small fully convolutional network: (B, 3, 128, 128) -> (B, 9, 32, 32) class scores."""

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
            conv = nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation)
            return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(3, 32, stride=2),
            nn.MaxPool2d(2),
            *block(32, 64),
            *block(64, 64, dilation=2),
            *block(64, 96, dilation=4),
            # Dilation 8 makes the receptive field cover the largest shape (70 px) whole.
            *block(96, 96, dilation=8),
            nn.Conv2d(96, CLASSES, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)  # type: ignore[no-any-return]


def gwrp(probs: Tensor, decay: Tensor) -> Tensor:
    """Global weighted rank pooling (SEC eq. 4): per (image, class), the scores sorted in
    descending order ``f_{i_1} >= f_{i_2} >= ...`` averaged with weights ``d^(j-1)``:

    ``G_c = sum_j d_c^(j-1) f_{i_j, c} / sum_j d_c^(j-1)``

    ``d = 0`` is global max pooling, ``d = 1`` global average pooling.

    Args:
        probs: (B, C, H, W) scores.
        decay: (B, C) decays ``d_c`` in [0, 1].

    Returns:
        (B, C) pooled scores.
    """
    ranked = probs.flatten(2).sort(dim=2, descending=True).values
    positions = torch.arange(ranked.shape[2], dtype=probs.dtype)
    # 0 ** 0 is 1 in torch: with d = 0 only the first (the maximum) keeps a weight.
    weights = decay.unsqueeze(-1) ** positions
    return (ranked * weights).sum(2) / weights.sum(2)


def seeding_loss(probs: Tensor, cues: Tensor) -> Tensor:
    """SEC's seeding loss: per image, ``-1 / sum_c |S_c| * sum_c sum_{u in S_c} log f_{u,c}``,
    averaged over the batch (an image without seeds adds 0).

    Args:
        probs: (B, C, H, W) softmax outputs.
        cues: (B, C, H, W) booleans, the seeds ``S_c`` of each class (background is class 0).
    """
    picked = (cues * probs.clamp(min=_EPS).log()).sum(dim=(1, 2, 3))
    count = cues.sum(dim=(1, 2, 3)).clamp(min=1)
    return (-picked / count).mean()


def expansion_loss(probs: Tensor, present: Tensor) -> Tensor:
    """SEC's expansion loss with global weighted rank pooling: for the foreground classes
    ``T`` present in the image (``present``, background excluded) and the others,

    ``-1/|T| sum_{c in T} log G_c - 1/|C' \\ T| sum_{c not in T} log(1 - G_c) - log G_bg``

    averaged over the batch; ``G`` is :func:`gwrp` with decays 0.996 (present), 0 (absent)
    and 0.999 (background).

    Args:
        probs: (B, C, H, W) softmax outputs, background first.
        present: (B, C - 1) booleans, the image-level labels.
    """
    decay = torch.where(present, DECAY_PRESENT, DECAY_ABSENT).to(probs.dtype)
    background = torch.full((len(probs), 1), DECAY_BACKGROUND, dtype=probs.dtype)
    pooled = gwrp(probs, torch.cat([background, decay], dim=1))
    g_bg, g = pooled[:, 0], pooled[:, 1:]
    on, off = present.to(probs.dtype), (~present).to(probs.dtype)
    present_term = (on * g.clamp(min=_EPS).log()).sum(1) / on.sum(1).clamp(min=1)
    absent_term = (off * (1 - g).clamp(min=_EPS).log()).sum(1) / off.sum(1).clamp(min=1)
    return (-present_term - absent_term - g_bg.clamp(min=_EPS).log()).mean()


def make_cues(
    method: object,
    images: Tensor,
    labels: Tensor,
    foreground: float = 0.2,
    background: float = 0.1,
    batch: int = 50,
) -> Tensor:
    """Seeds of each training image's label as (N, 9, 32, 32) booleans (background first)."""
    cues = torch.zeros(len(images), CLASSES, OUTPUT, OUTPUT, dtype=torch.bool)
    for start in range(0, len(images), batch):
        x = normalize(images[start : start + batch])
        chosen = labels[start : start + batch]
        result = method(x, chosen.view(-1, 1))  # type: ignore[operator]
        raw = F.interpolate(result.raw.clamp(min=0), size=(OUTPUT, OUTPUT), mode="bilinear")
        for j, label in enumerate(chosen.tolist()):
            planes = seeds(raw[j], foreground, background)
            cues[start + j, 0] = planes[0]
            cues[start + j, label + 1] = planes[1]
    return cues


def confusion(predicted: Tensor, truth: Tensor) -> Tensor:
    """(C, C) pixel counts, rows the truth, columns the prediction."""
    return torch.bincount(
        truth.flatten() * CLASSES + predicted.flatten(), minlength=CLASSES**2
    ).view(CLASSES, CLASSES)


def mean_iou(counts: Tensor) -> float:
    """VOC's mIoU in percent: the mean over classes that occur (or are predicted) of
    ``TP / (TP + FP + FN)``."""
    tp = counts.diag().double()
    union = counts.sum(0).double() + counts.sum(1).double() - tp
    seen = union > 0
    return float(100.0 * (tp[seen] / union[seen]).mean())


def cue_quality(cues: Tensor, truth: Tensor) -> tuple[float, float]:
    """Seed mIoU (seeds against the masks at the cues' resolution) and the share of seeded
    pixels that are right, in percent."""
    small = F.interpolate(truth.unsqueeze(1).float(), size=(OUTPUT, OUTPUT), mode="nearest")
    small = small.squeeze(1).long()
    seeded = cues.any(1)
    label = cues.float().argmax(1)
    counts = confusion(label[seeded], small[seeded])
    # Pixels without a seed are misses of their true class, as in Seeds' recall.
    missed = torch.bincount(small[~seeded], minlength=CLASSES)
    tp = counts.diag().double()
    union = counts.sum(0).double() + counts.sum(1).double() + missed.double() - tp
    seen = union > 0
    precision = float(100.0 * tp.sum() / max(int(seeded.sum()), 1))
    return float(100.0 * (tp[seen] / union[seen]).mean()), precision


def classify_accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [model(normalize(images[s : s + 100])).argmax(1) for s in range(0, len(images), 100)]
        )
    return float(100.0 * (predicted == labels).float().mean())


def train_classifier(images: Tensor, labels: Tensor, epochs: int, seed: int) -> FCNet:
    """The FC network: the shipped trunk, a new head, all fine-tuned with Adam."""
    torch.manual_seed(seed)
    model = FCNet(load_shapes_model().features)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        for chosen in torch.randperm(len(images), generator=generator).split(32):
            loss = F.cross_entropy(model(normalize(images[chosen])), labels[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        print(f"  classifier epoch {epoch + 1}: loss {loss.item():.4f}", flush=True)
    return model.eval()


def train_segmentation(
    images: Tensor, labels: Tensor, cues: Tensor, epochs: int, seed: int
) -> SegNet:
    """SegNet trained with the seeding and expansion losses (Adam, batch 16)."""
    torch.manual_seed(seed)
    model = SegNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    present = F.one_hot(labels, len(SHAPES)).bool()
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        totals = [0.0, 0.0]
        for chosen in torch.randperm(len(images), generator=generator).split(16):
            probs = model(normalize(images[chosen])).softmax(1)
            seed_term = seeding_loss(probs, cues[chosen])
            expand_term = expansion_loss(probs, present[chosen])
            optimizer.zero_grad(set_to_none=True)
            (seed_term + expand_term).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            totals[0] += seed_term.item() * len(chosen)
            totals[1] += expand_term.item() * len(chosen)
        print(
            f"  segmentation epoch {epoch + 1}: seed loss {totals[0] / len(images):.4f}, "
            f"expand loss {totals[1] / len(images):.4f}",
            flush=True,
        )
    return model.eval()


def segmentation_miou(
    model: SegNet, images: Tensor, labels: Tensor, truth: Tensor
) -> tuple[float, float]:
    """mIoU of the argmax prediction, upsampled bilinearly to the image, on ``images``: over
    all classes (SEC's test: no labels), and over background and the image's own labels (the
    localization alone, the recognition of the shape given)."""
    counts = torch.zeros(CLASSES, CLASSES, dtype=torch.long)
    given = torch.zeros(CLASSES, CLASSES, dtype=torch.long)
    with torch.no_grad():
        for s in range(0, len(images), 50):
            scores = model(normalize(images[s : s + 50]))
            scores = F.interpolate(scores, size=truth.shape[-2:], mode="bilinear")
            counts += confusion(scores.argmax(1), truth[s : s + 50])
            allowed = F.one_hot(labels[s : s + 50] + 1, CLASSES).bool()
            allowed[:, 0] = True
            masked = scores.masked_fill(~allowed[:, :, None, None], -torch.inf)
            given += confusion(masked.argmax(1), truth[s : s + 50])
    return mean_iou(counts), mean_iou(given)


def main(argv: Sequence[str] | None = None) -> int:
    """Train both pipelines and print their seed quality and held-out mIoU."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=800, help="training scenes")
    parser.add_argument("--held-out", type=int, default=200, help="held-out benchmark scenes")
    parser.add_argument("--epochs", type=int, default=8, help="segmentation epochs")
    parser.add_argument("--classifier-epochs", type=int, default=2, help="FC head fine-tuning")
    parser.add_argument("--foreground", type=float, default=0.2)
    parser.add_argument("--background", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    images, labels, truth = scenes(args.train, args.seed, held_out=False)
    test_images, test_labels, test_truth = scenes(args.held_out, 1, held_out=True)
    print(
        f"generated {len(images)} + {len(test_images)} scenes ({time.perf_counter() - start:.0f} s)"
    )

    gap = load_shapes_model()
    fc = train_classifier(images, labels, args.classifier_epochs, args.seed)
    pipelines = {
        "CAM (GAP network)": (gap, create_method("cam", gap, SHAPES_LAYER)),
        "Grad-CAM (FC network)": (fc, create_method("gradcam", fc, SHAPES_LAYER)),
    }
    results = {}
    for name, (classifier, method) in pipelines.items():
        accuracy = classify_accuracy(classifier, test_images, test_labels)
        cues = make_cues(method, images, labels, args.foreground, args.background)
        seed_miou, seed_precision = cue_quality(cues, truth)
        print(
            f"{name}: classifier held-out accuracy {accuracy:.1f}%, seeds: mIoU {seed_miou:.1f}, "
            f"precision {seed_precision:.1f}% ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        segmenter = train_segmentation(images, labels, cues, args.epochs, args.seed)
        miou, given = segmentation_miou(segmenter, test_images, test_labels, test_truth)
        results[name] = (accuracy, seed_miou, seed_precision, miou, given)
        print(
            f"{name}: held-out segmentation mIoU {miou:.1f}, {given:.1f} with the labels given "
            f"({time.perf_counter() - start:.0f} s)"
        )

    columns = (
        "classifier accuracy",
        "seed mIoU",
        "seed precision",
        "segmentation mIoU",
        "mIoU, labels given",
    )
    print(f"\n| seeds | {' | '.join(columns)} | paper (VOC 2012 val) |")
    print("|---|---|---|---|---|---|---|")
    paper = {"CAM (GAP network)": "44.6", "Grad-CAM (FC network)": "49.6"}
    for name, (accuracy, seed_miou, seed_precision, miou, given) in results.items():
        print(
            f"| {name} | {accuracy:.1f}% | {seed_miou:.1f} | {seed_precision:.1f}% | {miou:.1f} | "
            f"{given:.1f} | {paper[name]} |"
        )
    print(f"({time.perf_counter() - start:.0f} s in all, {args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
