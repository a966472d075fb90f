"""The explain command's library functions: one rule for the arrays saved with the maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.photos import photo

import gradcam
from gradcam.demo import DemoSession
from gradcam.explain import explain_image, map_arrays, npz_key, save_explanation

METHODS = ["gradcam", "counterfactual", "guided-backprop", "guided-gradcam", "gradcam++"]


@pytest.fixture(scope="module")
def shapes() -> gradcam.LoadedModel:
    return gradcam.load_model("shapes")


def test_map_arrays_keys_and_values(shapes: gradcam.LoadedModel) -> None:
    found = explain_image(shapes, photo("chelsea.png").resize((96, 64)), methods=METHODS, top_k=2)
    arrays = map_arrays(found.results)
    assert set(arrays) == {
        "maps", "raw", "counterfactual_maps", "counterfactual_raw", "guided_backprop_maps",
        "guided_gradcam_maps", "gradcampp_maps", "gradcampp_raw",
    }  # fmt: skip
    assert arrays["raw"].shape[0] == 2 and arrays["guided_backprop_maps"].shape[:2] == (2, 3)
    one = map_arrays(found.results, target=1)
    for key, value in one.items():
        np.testing.assert_array_equal(value, arrays[key][1])
    np.testing.assert_array_equal(
        arrays[npz_key("gradcam++", "raw")], found.results["gradcam++"].raw[0].numpy()
    )  # type: ignore[attr-defined]


def test_explain_and_demo_save_maps_under_the_same_keys(
    shapes: gradcam.LoadedModel, tmp_path: Path
) -> None:
    image = photo("coffee.png").resize((96, 64))
    image.save(tmp_path / "coffee.png")
    session = DemoSession(shapes, folder=tmp_path / "demo")
    views = session.explain(tmp_path / "coffee.png")
    demo = np.load(session.write_maps(views))
    expected = map_arrays(views.explanation.results, target=0)
    assert set(demo.files) == set(expected) | {"input", "classes", "layer", "box"}
    for key, value in expected.items():
        np.testing.assert_array_equal(demo[key], value)
    summary = save_explanation(views.explanation, image, tmp_path / "cli", save_maps=True)
    saved = np.load(tmp_path / "cli" / "maps.npz")
    assert set(saved.files) == set(map_arrays(views.explanation.results)) | {"input", "classes"}
    assert summary["maps"][0]["class"] == views.class_id
