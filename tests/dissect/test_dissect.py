"""Network Dissection: exact quantiles, upsampled masks, IoU and names on a tiny model whose
activations are known, then the shapes CNN on the generated concept set."""

from __future__ import annotations

import importlib
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.state import assert_unchanged, snapshot
from PIL import Image
from torch import Tensor, nn

import gradcam
import gradcam.cli
from gradcam.dissect import (
    Concept,
    ConceptImage,
    ConceptSet,
    DissectionError,
    dissect,
    generated_concepts,
    load_dissection,
    top_quantile,
)
from gradcam.errors import GradCAMError, LayerError

# The package's `dissect` is the function; its module by name.
dissect_module = importlib.import_module("gradcam.dissect.dissect")


def _image(red_blocks: list[list[float]]) -> Image.Image:
    """A 4x4 photo whose red channel is constant on each 2x2 block (green, blue zero)."""
    red = np.kron(np.asarray(red_blocks), np.ones((2, 2)))
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 0] = np.round(red * 255)
    return Image.fromarray(pixels)


def _columns(columns: list[int], value: int) -> np.ndarray:
    labels = np.zeros((4, 4), dtype=np.int64)
    labels[:, columns] = value
    return labels


# Concept ids: 1 right (object), 2 left (object), 3 blue (color), 4 red (color).
CONCEPTS = (
    Concept("right", "object"),
    Concept("left", "object"),
    Concept("blue", "color"),
    Concept("red", "color"),
)
SAMPLES = (
    # Red is 1 on the right half: pooled [[0, 1], [0, 1]].
    ConceptImage(
        _image([[0, 1], [0, 1]]),
        (
            (0, _columns([2, 3], 1) + _columns([0, 1], 2)),
            (1, _columns([1, 2], 3)),
        ),
    ),
    # Red is 0.2 everywhere.
    ConceptImage(
        _image([[0.2, 0.2], [0.2, 0.2]]),
        ((0, _columns([3], 1)), (1, np.full((4, 4), 4))),
    ),
)


def _tiny_set(samples: tuple[ConceptImage, ...] = SAMPLES) -> ConceptSet:
    return ConceptSet("tiny", CONCEPTS, ("object", "color"), len(samples), samples.__getitem__)


def _tiny_model() -> nn.Module:
    """The layer "pool" averages 2x2 blocks: its maps are the blocks of each channel."""
    return nn.Sequential(OrderedDict(pool=nn.AvgPool2d(2), flat=nn.Flatten())).eval()


def test_feature_hand_computed() -> None:
    found = dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.25)
    # Red's 8 values sorted: 0 0 .2 .2 .2 .2 1 1; p = 0.75 * 7 = 5.25: T = .2 + .25 * .8 = .4.
    red = found.units[0]
    assert red.threshold == pytest.approx(0.4)
    # Photo 1's columns upsample to 0, .25, .75, 1 (bilinear, align_corners=False): columns
    # 2 and 3 are above T (8 pixels); photo 2 (0.2) has none. Objects are labelled in both
    # photos, so |M| = 8 for them; colours too.
    # right: I = 8, L = 8 + 4 -> 8 / (8 + 12 - 8); blue: I = 4 (column 2), L = 8 -> 4 / 12.
    assert found.iou[0] == pytest.approx([8 / 12, 0.0, 4 / 12, 0.0])
    assert (red.name, red.category, red.iou) == ("right", "object", pytest.approx(8 / 12))
    assert (red.runner_up, red.runner_up_iou) == ("blue", pytest.approx(4 / 12))
    # Green and blue are zero everywhere: T = 0 and nothing is above it, so no name.
    for unit in found.units[1:]:
        assert (unit.name, unit.category, unit.iou, unit.threshold) == (None, None, 0.0, 0.0)
    assert [u.unit for u in found.named()] == [0]


def test_feature_category_union_counts_only_annotated_images() -> None:
    # Photo 2 has no colour layer: its activated pixels enter the objects' unions only.
    samples = (SAMPLES[0], ConceptImage(_image([[0, 0.8], [0, 0.8]]), ((0, _columns([0], 2)),)))
    found = dissect(_tiny_model(), _tiny_set(samples), "pool", quantile=0.5)
    # Red sorted: 0 0 0 0 .8 .8 1 1; p = .5 * 7 = 3.5: T = 0 + .5 * .8 = .4. Photo 1's
    # columns upsample to 0 .25 .75 1, photo 2's to 0 .2 .6 .8: columns 2 and 3 of both.
    assert found.units[0].threshold == pytest.approx(0.4)
    # Objects: |M| = 8 + 8; right: I = 8, L = 8. Colours: |M| = 8 (photo 1 only); blue:
    # I = 4, L = 8. Red is labelled nowhere: IoU 0.
    assert found.iou[0] == pytest.approx([8 / (16 + 8 - 8), 0.0, 4 / (8 + 8 - 4), 0.0])


def test_feature_iou_threshold() -> None:
    assert dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.25).units[0].name == "right"
    strict = dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.25, iou_threshold=0.7)
    assert strict.units[0].name is None
    assert strict.units[0].concept == "right"


def test_saved_names_round_trip(tmp_path) -> None:
    found = dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.25, out=tmp_path / "names")
    assert sorted(p.name for p in (tmp_path / "names").iterdir()) == [
        "dissection.json",
        "iou.npy",
        "names.parquet",
        "run.json",
    ]
    loaded = load_dissection(tmp_path / "names")
    assert loaded.units == found.units
    assert np.allclose(loaded.iou, found.iou)
    assert (loaded.layer, loaded.channels, loaded.concepts) == ("pool", 3, CONCEPTS)


def test_refuses_to_overwrite_and_resumes(tmp_path) -> None:
    out = tmp_path / "names"
    dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.25, out=out)
    with pytest.raises(DissectionError, match="already holds"):
        dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.25, out=out)
    with pytest.raises(DissectionError, match="quantile"):
        dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.5, out=out, resume=True)
    again = dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.25, out=out, resume=True)
    assert again.units[0].name == "right"


@pytest.mark.parametrize("workers", [1, 3])  # IoU batches counted by 1 or 3 threads
@pytest.mark.parametrize("phase", ["forward", "iou"])
def test_interrupted_run_resumes_to_the_same_names(
    tmp_path, monkeypatch, phase: str, workers: int
) -> None:
    monkeypatch.setattr(dissect_module, "_iou_workers", lambda: workers)
    monkeypatch.setattr(dissect_module, "_SYNC_SECONDS", -1.0)  # record every batch
    monkeypatch.setattr(dissect_module, "_WAVE", 1)  # and every wave of the IoU pass
    monkeypatch.setattr(
        dissect_module, "_MEMORY_BUDGET", 0
    )  # labels are read again from the shards, in the IoU pass
    concepts = generated_concepts(12, size=32)
    model = _conv4()
    whole = dissect(model, concepts, "conv", batch_size=4)
    calls = {"n": 0}

    def failing(index: int) -> ConceptImage:
        calls["n"] += 1
        if calls["n"] == 6:  # in the second batch of the forward pass
            raise KeyboardInterrupt
        return concepts[index]

    read_labels = dissect_module._label_layers

    def failing_labels(index: int, data: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 12 + 6:  # read for the gathering, then in the IoU pass's second batch
            raise KeyboardInterrupt
        return read_labels(index, data)

    out = tmp_path / "run"
    if phase == "forward":
        broken = ConceptSet(concepts.source, concepts.concepts, concepts.categories, 12, failing)
        with pytest.raises(KeyboardInterrupt):
            dissect(model, broken, "conv", batch_size=4, out=out)
        assert len(list((out / "forward" / "rows").glob("*.parquet"))) == 1  # the first batch
    else:
        monkeypatch.setattr(dissect_module, "_label_layers", failing_labels)
        with pytest.raises(KeyboardInterrupt):
            dissect(model, concepts, "conv", batch_size=4, out=out)
        monkeypatch.setattr(dissect_module, "_label_layers", read_labels)
        assert len(list((out / "forward" / "rows").glob("*.parquet"))) == 3
        # With one thread the IoU pass recorded its first batch's counts before the failure.
        assert (out / "counts.npz").is_file() == (workers == 1)
    with pytest.raises(DissectionError, match="already holds a dissection"):
        dissect(model, concepts, "conv", batch_size=4, out=out)
    resumed = dissect(model, concepts, "conv", batch_size=4, out=out, resume=True)
    assert resumed.units == whole.units
    assert np.array_equal(resumed.iou, whole.iou)
    assert sorted(p.name for p in out.iterdir()) == [
        "dissection.json",
        "iou.npy",
        "names.parquet",
        "run.json",
    ]


def _conv4(seed: int = 0) -> nn.Module:
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, stride=2), relu=nn.ReLU())).eval()
    torch.manual_seed(seed)
    nn.init.normal_(model.conv.weight)
    return model


def test_resume_with_other_weights_is_refused(tmp_path) -> None:
    """The runner's manifest holds the model's weights (hashed): the forward pass's shards of
    one model are never resumed into with another of the same name."""
    concepts = generated_concepts(8, size=32)

    def failing(index: int) -> ConceptImage:
        if index == 4:
            raise KeyboardInterrupt
        return concepts[index]

    broken = ConceptSet(concepts.source, concepts.concepts, concepts.categories, 8, failing)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        dissect(_conv4(0), broken, "conv", batch_size=4, out=out)
    with pytest.raises(GradCAMError, match=r"other settings \(state_sha256: "):
        dissect(_conv4(1), concepts, "conv", batch_size=4, out=out, resume=True)


@pytest.mark.parametrize("ray", [False, True])
def test_worker_processes_and_ray_give_the_same_names(tmp_path, ray: bool) -> None:
    """The forward pass on two local processes, or on two Ray actors (a local Ray of 4 CPUs),
    gives the very IoU and thresholds of the straightforward computation."""
    if ray:
        pytest.importorskip("ray")
    concepts = generated_concepts(10, size=32, seed=3)
    model = _random_conv(2, 3, seed=1, rounded=False)
    found = dissect(
        model, concepts, "conv", batch_size=3, quantile=0.05, workers=2, ray=ray,
        out=tmp_path / "names",
    )  # fmt: skip
    iou, thresholds = _reference(model, concepts, "conv")
    assert np.array_equal(found.iou, iou)
    assert [u.threshold for u in found.units] == thresholds.tolist()
    assert load_dissection(tmp_path / "names").units == found.units


def test_a_set_built_by_hand_stays_in_this_process() -> None:
    with pytest.raises(DissectionError, match="built by hand cannot go to worker processes"):
        dissect(_tiny_model(), _tiny_set(), "pool", workers=2)


def test_limit_dissects_the_first_images() -> None:
    concepts = generated_concepts(12, size=32)
    limited = dissect(_conv4(), concepts, "conv", batch_size=4, limit=5)
    first = ConceptSet(concepts.source, concepts.concepts, concepts.categories, 5, concepts.load)
    assert limited.images == 5
    assert np.array_equal(limited.iou, dissect(_conv4(), first, "conv", batch_size=4).iou)
    with pytest.raises(DissectionError, match="limit must be at least 1 image, got 0"):
        dissect(_conv4(), concepts, "conv", limit=0)


def test_exception_activations_not_finite() -> None:
    model = nn.Sequential(OrderedDict(pool=nn.AvgPool2d(2), log=_Log(), flat=nn.Flatten()))
    with pytest.raises(DissectionError, match=r"'log' gives activations that are not finite"):
        dissect(model, _tiny_set(), "log")  # log(0) = -inf


class _Log(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.log()


def test_exception_layer_without_spatial_output() -> None:
    with pytest.raises(LayerError, match="feature maps"):
        dissect(_tiny_model(), _tiny_set(), "flat")
    pooled = nn.Sequential(OrderedDict(gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))
    with pytest.raises(LayerError, match=r"outputs \(2, 3, 1, 1\), not spatial"):
        dissect(pooled, _tiny_set(), "gap")


def test_exception_bad_arguments() -> None:
    empty = ConceptSet("empty", CONCEPTS, ("object", "color"), 0, SAMPLES.__getitem__)
    with pytest.raises(DissectionError, match="no images"):
        dissect(_tiny_model(), empty, "pool")
    with pytest.raises(DissectionError, match="batch size"):
        dissect(_tiny_model(), _tiny_set(), "pool", batch_size=0)
    with pytest.raises(DissectionError, match="layer"):
        dissect(_tiny_model(), _tiny_set())


def test_load_dissection_exception(tmp_path) -> None:
    with pytest.raises(DissectionError, match="no neuron names"):
        load_dissection(tmp_path)
    (tmp_path / "dissection.json").write_text("{")
    (tmp_path / "names.parquet").write_text("not parquet")
    with pytest.raises(DissectionError, match="unreadable"):
        load_dissection(tmp_path)


@pytest.fixture(scope="module")
def shapes() -> gradcam.LoadedModel:
    return gradcam.load_model("shapes")


def test_shapes_cnn_units_are_named_after_shapes(shapes: gradcam.LoadedModel) -> None:
    before = snapshot(shapes.module)
    found = dissect(shapes, generated_concepts(96), batch_size=32)
    assert_unchanged(before, shapes.module)
    assert (found.model, found.layer, found.channels) == ("shapes", shapes.default_layer, 128)
    named = found.named()
    assert named, "no unit of the shapes CNN was named"
    # The network knows shapes: its best-named units are shape detectors.
    assert named[0].category == "shape"
    assert all(u.iou > 0.05 for u in named)
    assert all(u.name is None for u in found.units if u.iou <= 0.05)


def test_bench_dissect_quick_smoke() -> None:
    """The benchmark harness runs (no timing checks)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "benchmarks" / "bench_dissect.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--models", "shapes"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| shapes | `features` |" in proc.stdout


def test_broden_folder_end_to_end(tmp_path) -> None:
    """A Broden-format folder (masks at half the photo's size, as Broden's) through dissect."""
    from gradcam.dissect import read_broden

    root = tmp_path / "broden"
    (root / "images").mkdir(parents=True)
    rows = []
    for i, blocks in enumerate(([[0, 1], [0, 1]], [[0.2, 0.2], [0.2, 0.2]])):
        _image(blocks).resize((8, 8), Image.Resampling.NEAREST).save(root / "images" / f"{i}.png")
        labels = np.zeros((4, 4, 3), dtype=np.uint8)
        labels[:, 2:, 0] = 1 if i == 0 else 0  # "right" on photo 0's right half
        labels[:, 3:, 0] = 1
        Image.fromarray(labels).save(root / "images" / f"{i}_object.png")
        rows.append(f"{i}.png,train,8,8,4,4,{i}_object.png")
    (root / "index.csv").write_text("image,split,ih,iw,sh,sw,object\n" + "\n".join(rows) + "\n")
    (root / "label.csv").write_text("number,name,category\n0,-,-\n1,right,object(2)\n")
    model = nn.Sequential(OrderedDict(pool=nn.AvgPool2d(4), flat=nn.Flatten())).eval()
    found = dissect(model, read_broden(root), "pool", quantile=0.25)
    # As in test_feature_hand_computed, on 4 x 4 masks: T = .4, columns 2 and 3 of photo 0.
    assert found.units[0].threshold == pytest.approx(0.4)
    assert found.iou[0, 0] == pytest.approx(8 / 12)
    assert found.units[0].name == "right"


# ---------------------------------------------------------------------------------------------
# The fast path against a straightforward computation


def _reference(model: nn.Module, concepts: ConceptSet, layer: str) -> tuple[np.ndarray, Tensor]:
    """Network Dissection written plainly: every map kept, ``T_k`` (top 5%) over them, each image's
    maps upsampled whole by ``F.interpolate`` in float64, masks counted with numpy."""
    resolved = dissect_module.resolve_layer(model, layer)
    images = [dissect_module._to_tensor(concepts[i].image) for i in range(len(concepts))]
    # Batches of 5 as dissect's: a convolution's roundings may depend on the batch size.
    maps = torch.cat(
        [
            dissect_module.layer_activations(model, resolved, torch.cat(images[i : i + 5]))
            for i in range(0, len(images), 5)
        ]
    )
    channels = maps.shape[1]
    flat = maps.transpose(0, 1).reshape(channels, -1)
    thresholds = top_quantile(iter([flat]), flat.shape[1], 0.05)
    concept_count = len(concepts.concepts)
    inter = np.zeros((channels, concept_count + 1))
    active = np.zeros((channels, len(concepts.categories)))
    labelled = np.zeros(concept_count + 1)
    for i in range(len(concepts)):
        layers = concepts[i].layers
        if not layers:
            continue
        size = layers[0][1].shape
        up = F.interpolate(maps[i][None].double(), size=size, mode="bilinear")[0]
        masks = (up > thresholds.double()[:, None, None]).numpy()
        for category in {c for c, _ in layers}:
            active[:, category] += masks.sum(axis=(1, 2))
        for _, labels in layers:
            for concept in range(1, concept_count + 1):
                where = labels == concept
                labelled[concept] += where.sum()
                inter[:, concept] += (masks & where).sum(axis=(1, 2))
    cats = concepts.category_of()[1:]
    union = active[:, cats] + labelled[None, 1:] - inter[:, 1:]
    iou = np.divide(inter[:, 1:], union, out=np.zeros_like(union), where=union > 0)
    return iou, thresholds


def _random_conv(stride: int, kernel: int, seed: int, rounded: bool) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(3, 16, kernel, stride=stride), relu=nn.ReLU())
    ).eval()
    nn.init.normal_(model.conv.weight)
    if rounded:  # many equal activations: ties at T_k, pixels exactly at T_k
        with torch.no_grad():
            model.conv.weight.copy_(model.conv.weight.round())
            model.conv.bias.zero_()
    return model


@pytest.mark.parametrize(
    ("stride", "kernel", "rounded", "budget"),
    [
        (4, 4, False, None),  # 32 px to 8 x 8 maps: a power-of-two factor
        (4, 4, True, None),  # ties: pixels exactly at T_k
        (2, 3, False, None),  # 15 x 15 maps: not a power of two
        (4, 4, False, 0),  # nothing fits the memory budget: maps on disk, labels read again
    ],
)
@pytest.mark.parametrize("workers", [1, 2])  # IoU batches counted by 1 or 2 threads
def test_feature_table_equals_straightforward_computation(
    monkeypatch, stride: int, kernel: int, rounded: bool, budget: int | None, workers: int
) -> None:
    monkeypatch.setattr(dissect_module, "_iou_workers", lambda: workers)
    if budget is not None:
        monkeypatch.setattr(dissect_module, "_MEMORY_BUDGET", budget)
    concepts = generated_concepts(24, size=32, seed=3)
    model = _random_conv(stride, kernel, seed=1, rounded=rounded)
    found = dissect(model, concepts, "conv", batch_size=5, quantile=0.05)
    iou, thresholds = _reference(model, concepts, "conv")
    assert np.array_equal(found.iou, iou)
    assert [u.threshold for u in found.units] == thresholds.tolist()
    assert iou.max() > 0.05  # something was named


@pytest.mark.parametrize("value", [-1.0, float("nan"), 1.0, 2.0])
def test_exception_iou_threshold_outside_zero_one(value: float, tmp_path) -> None:
    """Issue 30 item 17: -1 named every unit, NaN none; refused before any pass."""
    with pytest.raises(GradCAMError, match="iou_threshold must be a number at least 0 and below 1"):
        dissect(_tiny_model(), _tiny_set(), "pool", iou_threshold=value, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["file", "under"])
def test_out_that_cannot_be_a_folder_is_one_line_before_any_pass(
    where: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 30 item 12: a FileExistsError traceback."""
    monkeypatch.setattr(dissect_module, "_run", lambda *a, **k: pytest.fail("the pass ran"))
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "sub"
    with pytest.raises(GradCAMError, match="is a file, or lies under one"):
        dissect(_tiny_model(), _tiny_set(), "pool", out=out)
    args = ["dissect", "--model", "shapes", "--concepts", "generated", "--images", "2"]
    assert gradcam.cli.main([*args, "--size", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a file, or lies under one" in err and "Traceback" not in err
    assert blocker.read_text() == "x"


def test_cli_refuses_a_huge_generated_size(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 30 item 9: --size 20000 took 23 GB before the kernel killed it."""
    args = ["dissect", "--model", "shapes", "--concepts", "generated", "--size", "20000"]
    assert gradcam.cli.main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "16 px to 1024 px a side, got 20000" in capsys.readouterr().err


def test_saved_files_are_written_whole(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while saving leaves no half file and no temporary file behind."""
    found = dissect(_tiny_model(), _tiny_set(), "pool", quantile=0.25)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dissect_module.pq, "write_table", broken)
    with pytest.raises(GradCAMError, match=r"names\.parquet: No space left on device"):
        found.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dissection.json", "iou.npy"]


def test_cli_takes_the_runner_options(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["dissect", "--model", "shapes", "--concepts", "generated", "--images", "6"]
    out = tmp_path / "names"
    assert gradcam.cli.main([*base, "--size", "32", "--workers", "0", "--out", str(out)]) == 2
    assert "workers must be at least 1, got 0" in capsys.readouterr().err
    assert not out.exists()  # refused before any pass or file
    args = [*base, "--size", "32", "--limit", "4", "--batch-size", "3", "--out", str(out)]
    assert gradcam.cli.main(args) == 0
    assert "over 4 images of generated:6:32:0" in capsys.readouterr().out
    assert load_dissection(out).images == 4
    assert gradcam.cli.main([*args, "--resume"]) == 0  # finished: read back
    assert gradcam.cli.main([*args[:-2], "--limit", "5", "--out", str(out), "--resume"]) == 2
    assert "other settings (images differ)" in capsys.readouterr().err
