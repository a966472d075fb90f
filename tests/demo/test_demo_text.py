"""The demo's textual explanations (section 7): the shipped names, the session's ranking
against the library's Grad-CAM, one layer capture per request, the cache, bad input."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.photos import CAT_CLASSES, ESPRESSO, cat_and_coffee, photo

import gradcam
from gradcam import GradCAM, GradCAMError, ImageLoadError, load_image
from gradcam.demo import DemoSession
from gradcam.demo.app import text_outputs
from gradcam.demo.session import default_names
from gradcam.dissect import (
    DissectionError,
    dissect,
    generated_concepts,
    layer_activations,
    shipped_names,
)
from gradcam.dissect.dissect import SHIPPED_NAMES
from gradcam.dissect.text import explain_text
from gradcam.layers import resolve_layer
from gradcam.viz import overlay


@pytest.fixture(scope="module")
def session(lite0: gradcam.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> DemoSession:
    return DemoSession(lite0, folder=tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    paths = {"both": folder / "both.png", "cat": folder / "cat.png"}
    cat_and_coffee()[0].save(paths["both"])
    photo("chelsea.png").save(paths["cat"])
    return paths


def test_shipped_names_fit_the_embedded_model(lite0: gradcam.LoadedModel) -> None:
    names = shipped_names()
    size = sum(f.stat().st_size for f in SHIPPED_NAMES.iterdir())
    assert size < 1_000_000
    assert (names.model, names.layer) == (lite0.name, lite0.default_layer)
    maps = layer_activations(
        lite0.module, resolve_layer(lite0.module, names.layer), torch.zeros(1, 3, 224, 224)
    )
    assert names.channels == maps.shape[1] == 1280
    named = names.named()
    assert named and all(u.iou > names.iou_threshold for u in named)
    assert default_names(lite0) is names


def test_no_names_for_other_models_or_random_weights(lite0: gradcam.LoadedModel) -> None:
    assert default_names(gradcam.load_model("shapes")) is None
    assert default_names(dataclasses.replace(lite0, pretrained=False)) is None


def test_default_names_that_do_not_fit_are_left_out(tmp_path: Path) -> None:
    """A model of the default name without the named layer (the shapes CNN, renamed) gets
    no names by default, and no error."""
    shapes = gradcam.load_model("shapes")
    renamed = dataclasses.replace(shapes, name="efficientnet_lite0")
    assert default_names(renamed) is shipped_names()
    assert DemoSession(renamed, folder=tmp_path).names is None


@pytest.mark.parametrize(("key", "class_id"), [("both", ESPRESSO), ("cat", None)])
def test_ranking_is_grad_cams_alpha(
    session: DemoSession,
    photos: dict[str, Path],
    lite0: gradcam.LoadedModel,
    key: str,
    class_id: int | None,
) -> None:
    found = session.text_explanation(photos[key], class_id)
    text = found.text
    if class_id is None:
        assert text.class_id in CAT_CLASSES
    x = lite0.preprocess(load_image(photos[key]))
    alpha = GradCAM(lite0.module, "_head_act")(x, [text.class_id]).weights
    assert alpha is not None
    alpha = alpha[0, 0]
    order = torch.argsort(alpha, descending=True)
    assert [u.unit for u in text.positive] == order[:5].tolist()
    assert [u.unit for u in text.negative] == order.flip(0)[:5].tolist()
    for unit in (*text.positive, *text.negative):
        assert unit.alpha == pytest.approx(float(alpha[unit.unit]), rel=1e-4, abs=1e-8)
        assert unit.name == shipped_names().units[unit.unit].name
    assert all(u.alpha > 0 for u in text.positive) and all(u.alpha < 0 for u in text.negative)
    # The same sentence as the library's explain_text (its own Grad-CAM and layer passes).
    library = explain_text(lite0, load_image(photos[key]), shipped_names(), class_id=class_id)
    assert text.sentence(unnamed=True) == library.sentence(unnamed=True)


def test_pictures_are_the_named_units_maps(
    session: DemoSession, photos: dict[str, Path], lite0: gradcam.LoadedModel
) -> None:
    found = session.text_explanation(photos["both"], ESPRESSO)
    named = [u for u in (*found.text.positive, *found.text.negative) if u.name is not None]
    assert len(found.pictures) == len(named) >= 1
    layer = resolve_layer(lite0.module, "_head_act")
    maps = layer_activations(lite0.module, layer, lite0.preprocess(load_image(photos["both"])))
    display = session.open(photos["both"]).display
    for (caption, picture), unit in zip(found.pictures, named, strict=True):
        assert f"unit {unit.unit}" in caption and str(unit.name) in caption
        torch.testing.assert_close(unit.activation, maps[0, unit.unit])
        assert picture.size == display.size
        assert np.array_equal(np.asarray(picture), np.asarray(overlay(display, unit.activation)))


def test_one_layer_capture_then_the_cache(
    lite0: gradcam.LoadedModel, photos: dict[str, Path], tmp_path: Path, forward_count: list[int]
) -> None:
    fresh = DemoSession(lite0, folder=tmp_path)
    before = [m.training for m in lite0.module.modules()]
    fresh.explain(photos["cat"])  # the views the page shows first, at the named layer
    forward_count[0] = 0
    found = fresh.text_explanation(photos["cat"])
    assert forward_count[0] == 1 and not found.cached
    again = fresh.text_explanation(photos["cat"], found.text.class_id)
    assert forward_count[0] == 1 and again.cached and again.seconds == 0.0
    assert again.text == found.text
    # The model is left as it was: modes, no gradients, no hooks but the counter.
    assert [m.training for m in lite0.module.modules()] == before
    assert all(p.grad is None for p in lite0.module.parameters())
    assert len(lite0.module._forward_hooks) == 1


def test_concurrent_visitors_get_their_own_units(
    lite0: gradcam.LoadedModel, session: DemoSession, photos: dict[str, Path], tmp_path: Path
) -> None:
    fresh = DemoSession(lite0, folder=tmp_path)
    barrier = threading.Barrier(len(photos))
    found: dict[str, str] = {}
    errors: list[BaseException] = []

    def visit(key: str) -> None:
        try:
            barrier.wait()
            found[key] = fresh.text_explanation(photos[key]).text.sentence(unnamed=True)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=visit, args=(key,)) for key in photos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for key in photos:
        alone = session.text_explanation(photos[key]).text.sentence(unnamed=True)
        assert found[key] == alone
    assert found["both"] != found["cat"]


def test_summary_lists_the_ten_units(session: DemoSession, photos: dict[str, Path]) -> None:
    markdown, gallery = text_outputs(session, str(photos["both"]), "espresso")
    found = session.text_explanation(photos["both"], "espresso")
    assert markdown.startswith(f"**{found.text.sentence()}**")
    rows = [line for line in markdown.splitlines() if line.startswith("| +") or "| −" in line]
    assert len(rows) == 10
    assert [caption for _, caption in gallery] == [caption for caption, _ in found.pictures]


def test_bad_input(session: DemoSession, photos: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="no photo given"):
        session.text_explanation(None)
    with pytest.raises(GradCAMError, match="no class named 'not a class'"):
        session.text_explanation(photos["cat"], "not a class")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert text_outputs(session, str(bad), None)[0].startswith("**Error:** bad.png")
    assert text_outputs(session, None, None) == (
        "Upload a photo, or pick one of the examples.",
        [],
    )
    shapes = DemoSession(gradcam.load_model("shapes"), folder=tmp_path / "shapes")
    assert shapes.names is None
    with pytest.raises(GradCAMError, match="no neuron names for model 'shapes'"):
        shapes.text_explanation(photos["cat"])


def test_names_for_another_model_are_refused(lite0: gradcam.LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(DissectionError, match="for model 'efficientnet_lite0', not 'shapes'"):
        DemoSession(gradcam.load_model("shapes"), folder=tmp_path, names=shipped_names())
    other = dataclasses.replace(shipped_names(), layer="_blocks.15")
    with pytest.raises(DissectionError, match=r"'_blocks\.15' with 1280 units; .* has 320 units"):
        DemoSession(lite0, folder=tmp_path, names=other)
    other = dataclasses.replace(shipped_names(), layer="no.such.layer")
    with pytest.raises(DissectionError, match="has no such spatial layer"):
        DemoSession(lite0, folder=tmp_path, names=other)


@pytest.mark.slow
def test_shipped_names_are_reproducible(lite0: gradcam.LoadedModel) -> None:
    """scripts/ship_lite0_names.py's dissection gives the shipped names again (about 30 s)."""
    names = dissect(lite0, generated_concepts(400))
    shipped = shipped_names()
    assert [(u.name, u.concept) for u in names.units] == [
        (u.name, u.concept) for u in shipped.units
    ]
    assert [u.iou for u in names.units] == pytest.approx([u.iou for u in shipped.units], abs=1e-5)
