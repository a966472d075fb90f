"""The protocols end to end: exact on a model whose maps are known, then on real photos."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.models import channel_model
from helpers.photos import SKIMAGE_DATA, cat_and_coffee
from helpers.state import assert_unchanged, snapshot
from PIL import Image

import gradcam
from gradcam.evaluate import (
    ablations,
    faithfulness,
    localization,
    pointing,
    run,
    sanity,
)
from gradcam.evaluate.base import Protocol
from gradcam.evaluate.datasets import Annotation, Dataset, Sample
from gradcam.evaluate.protocols import (
    ABLATIONS,
    Ablations,
    Faithfulness,
    Localization,
    Pointing,
    Sanity,
)


def _picture(
    path: Path, red: tuple[int, int, int, int], green: tuple[int, int, int, int] | None
) -> Path:
    """A 48x32 black image with a bright red box and a dimmer green box (inclusive corners)."""
    image = Image.new("RGB", (48, 32))
    image.paste((255, 0, 0), (red[0], red[1], red[2] + 1, red[3] + 1))
    if green is not None:
        image.paste((0, 90, 0), (green[0], green[1], green[2] + 1, green[3] + 1))
    image.save(path)
    return path


RED, GREEN = (4, 6, 15, 20), (30, 2, 40, 10)


@pytest.fixture
def squares(tmp_path: Path) -> Dataset:
    first = _picture(tmp_path / "a.png", RED, GREEN)
    second = _picture(tmp_path / "b.png", RED, None)
    return Dataset(
        "squares",
        ("red", "green"),
        [
            Sample(first, (0, 1), (Annotation(0, RED), Annotation(1, GREEN))),
            Sample(second, (0,), (Annotation(0, (30, 20, 45, 30)),)),  # a box elsewhere
            Sample(tmp_path / "missing.png", (0,)),
        ],
    )


def test_localization_by_hand(squares: Dataset) -> None:
    result = localization(channel_model(), squares)
    (row_a, row_b, row_missing) = result.rows
    assert row_a["classes"] == [0, 1] and row_a["boxes"] == [list(RED), list(GREEN)]
    assert row_a["loc_top1"] and row_a["loc_top5"]
    assert row_b["cls_top1"] and not row_b["loc_top1"] and not row_b["loc_top5"]
    assert "missing.png: no such file" in row_missing["error"]
    (summary,) = result.summary
    assert summary["images"] == 2
    assert summary["cls_top1_error"] == 0.0 and summary["loc_top1_error"] == 50.0


def test_ablations_by_hand(squares: Dataset) -> None:
    """Table 3's layout. On this model every variant gives the same boxes: the gradient at the
    layer is uniform and positive (mean, max and abs pool alike), the map is non-negative
    (the ReLU changes nothing) and no rectifier lies between the layer and the score."""
    result = ablations(channel_model(), squares)
    assert [row["variant"] for row in result.summary] == list(ABLATIONS)
    for row in result.summary:
        assert row["images"] == 2 and row["loc_top1_error"] == 50.0
    assert result.rows[0]["max-pooling"] == {"loc_top1": True, "loc_top5": True}
    assert result.rows[1]["no-relu"] == {"loc_top1": False, "loc_top5": False}


def test_unknown_ablation() -> None:
    with pytest.raises(gradcam.GradCAMError, match="unknown ablation 'gmp'"):
        ablations(channel_model(), Dataset("none", (), []), variants=("gmp",))


def test_pointing_by_hand(squares: Dataset) -> None:
    result = pointing(channel_model(), squares, tolerance=0)
    assert result.rows[0]["hits"] == [True, True]  # each class points into its own box
    assert result.rows[1]["hits"] == [False]
    assert result.summary[0]["accuracy"] == 66.67  # 2 hits of 3 maps, in percent


def test_pointing_recall_variant(squares: Dataset) -> None:
    # Maps of the top-5 (here both) classes; image b has no green: its green map is empty
    # (maximum 0), below the threshold, so rejecting green there is a hit.
    result = pointing(channel_model(), squares, tolerance=0, recall_threshold=1e-6)
    assert result.rows[0]["hits"] == [True, True]
    assert result.rows[1]["classes"] == [0, 1] and result.rows[1]["hits"] == [False, True]
    assert result.summary[0]["variant"] == "recall" and result.summary[0]["accuracy"] == 75.0


def test_classes_must_match_the_model(squares: Dataset) -> None:
    other = Dataset("voc", tuple(f"c{i}" for i in range(20)), squares.samples)
    with pytest.raises(gradcam.GradCAMError, match="has 20 classes but the model has 2"):
        localization(channel_model(), other)


def test_faithfulness_on_a_real_photo(lite0: gradcam.LoadedModel, tmp_path: Path) -> None:
    """Section 5.3 on cat | coffee (top-1 espresso): Grad-CAM follows occlusion, GB does not."""
    image, _ = cat_and_coffee()
    image.save(tmp_path / "cat_and_coffee.png")
    data = Dataset("photo", (), [Sample(tmp_path / "cat_and_coffee.png")])
    result = faithfulness(
        lite0, data, methods=("gradcam", "guided-backprop"), window=112, stride=56, steps=4
    )
    by_method = {row["method"]: row for row in result.summary}
    assert result.rows[0]["class"] == 967
    assert by_method["gradcam"]["spearman_with_occlusion"] > 0.5
    assert by_method["guided-backprop"]["spearman_with_occlusion"] < 0.3
    for row in result.summary:
        assert 0.0 <= row["deletion_auc"] <= 1.0 and 0.0 <= row["insertion_auc"] <= 1.0


def test_sanity_on_a_real_photo(lite0: gradcam.LoadedModel) -> None:
    """Adebayo et al.: Grad-CAM changes when the top layers are randomized; GB barely does."""
    before = snapshot(lite0.module)
    data = Dataset("photo", (), [Sample(SKIMAGE_DATA / "chelsea.png")])
    result = sanity(lite0, data, methods=("gradcam", "guided-backprop"), points=4)
    first = result.summary[0]
    assert first["layers"] < len(list(lite0.module.modules()))
    assert first["gradcam"] < 0.5 < first["guided-backprop"]
    assert len(result.summary) == 4 and result.summary[-1]["randomized_to"] == "_conv_stem"
    assert_unchanged(before, lite0.module)  # only a copy was randomized


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Localization(threshold=-1), "threshold must be a fraction .* got -1"),
        (lambda: Localization(threshold=5), "threshold must be a fraction .* got 5"),
        (lambda: Localization(threshold=math.nan), "threshold must be a fraction .* got nan"),
        (lambda: Localization(iou_threshold=1.5), "iou_threshold must be a fraction"),
        (lambda: Ablations(threshold=-0.1), "threshold must be a fraction"),
        (lambda: Pointing(tolerance=-5), "tolerance must be a number at least 0 pixels"),
        (lambda: Pointing(tolerance=math.inf), "tolerance must be a number at least 0"),
        (lambda: Pointing(recall_threshold=-1), "recall_threshold must be a number at least 0"),
        (lambda: Pointing(recall_threshold=math.nan), "recall_threshold must be a number"),
        (lambda: Faithfulness(window=0), "window must be a number at least 1 pixels"),
        (lambda: Faithfulness(steps=0), "steps must be a number at least 1"),
        (lambda: Sanity(points=0), "points must be a number at least 1"),
    ],
)
def test_meaningless_settings_are_refused(make: Callable[[], Protocol], message: str) -> None:
    with pytest.raises(gradcam.GradCAMError, match=message):
        make()


@pytest.mark.parametrize("protocol", [Localization(), Pointing(), Ablations()])
def test_a_dataset_without_labels_is_refused_by_name(protocol: Protocol, tmp_path: Path) -> None:
    unlabeled = Dataset("holiday", (), [Sample(_picture(tmp_path / "a.png", RED, None))])
    with pytest.raises(gradcam.GradCAMError, match="dataset 'holiday' has no labels"):
        run(protocol, channel_model(), unlabeled, progress=False)
    Faithfulness(methods=("gradcam",)).check(unlabeled)  # needs none


def test_a_recall_threshold_above_every_map_rejects_them_all(squares: Dataset) -> None:
    # Map maxima are at most 1 here: the summary says every map was rejected.
    result = pointing(channel_model(), squares, tolerance=0, recall_threshold=7)
    assert result.summary[0]["rejected"] == 100.0
    assert pointing(channel_model(), squares, recall_threshold=1e-6).summary[0]["rejected"] == 25.0


def _ticks(protocol: Protocol, dataset: Dataset) -> list[float]:
    ticks: list[float] = []
    score = protocol.scorer(channel_model(), ticks.append)
    images = [Image.open(s.path).convert("RGB") for s in dataset.samples[:2]]
    score(dataset.samples[:2], images)
    return ticks


def test_faithfulness_reports_progress_within_an_image(squares: Dataset) -> None:
    """Occlusion's windows are counted as they run: the bar moves within an image."""
    protocol = Faithfulness(methods=("gradcam", "guided-backprop"), window=8, stride=4, steps=2)
    ticks = _ticks(protocol, squares)
    # 32x48 input: 7x11 = 77 windows in batches of 4 (20 ticks) after the unoccluded pass,
    # then one tick per method, per image.
    assert len(ticks) == 2 * (1 + 20 + 2)
    assert sum(ticks) == pytest.approx(2.0)
    assert max(ticks) < 0.25


def test_sanity_reports_progress_per_explanation(squares: Dataset) -> None:
    ticks = _ticks(Sanity(methods=("gradcam",), points=2), squares)
    # Per image: the top-1 explanation, the trained model's map, one per randomization step.
    assert len(ticks) == 2 * 4 and sum(ticks) == pytest.approx(2.0)


@pytest.mark.parametrize("protocol", [Localization(), Pointing(), Ablations()])
def test_batched_protocols_report_their_images(protocol: Protocol, squares: Dataset) -> None:
    assert sum(_ticks(protocol, squares)) == 2
