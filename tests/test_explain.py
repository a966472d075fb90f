"""The explain command's library functions: the limits on classes (the count checked, large
counts explained in chunks) and one rule for the arrays saved with the maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.photos import photo
from PIL import Image

import gradcam
import gradcam.explain as explain_module
from gradcam.cli import main
from gradcam.demo import DemoSession
from gradcam.errors import GradCAMError
from gradcam.explain import (
    MAX_CLASSES,
    check_classes,
    explain_image,
    map_arrays,
    npz_key,
    save_explanation,
)
from gradcam.synthetic import make_scene

METHODS = ["gradcam", "guided-backprop", "guided-gradcam", "counterfactual"]
ARRAY_METHODS = ["gradcam", "counterfactual", "guided-backprop", "guided-gradcam", "gradcam++"]


@pytest.fixture(scope="module")
def shapes() -> gradcam.LoadedModel:
    return gradcam.load_model("shapes")


@pytest.fixture(scope="module")
def scene() -> Image.Image:
    return make_scene(3).image


def test_exception_more_classes_than_the_model_has(shapes: gradcam.LoadedModel) -> None:
    count = len(shapes.class_names)
    check_classes(shapes, None, count)
    with pytest.raises(GradCAMError, match=f"top-k {count + 1} is more than the model's {count}"):
        check_classes(shapes, None, count + 1)
    with pytest.raises(GradCAMError, match="at least 1"):
        check_classes(shapes, None, 0)
    with pytest.raises(GradCAMError, match=f"at most {MAX_CLASSES} are explained"):
        check_classes(shapes, [0] * (MAX_CLASSES + 1), 1)


def test_exception_top_k_above_the_maximum(lite0: gradcam.LoadedModel) -> None:
    check_classes(lite0, None, MAX_CLASSES)
    with pytest.raises(GradCAMError, match=f"101 classes asked for: at most {MAX_CLASSES}"):
        check_classes(lite0, None, 101)
    with pytest.raises(GradCAMError, match="top-k 100000 is more than the model's 1000"):
        check_classes(lite0, None, 100000)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patches the planner seen by explain_image to record how many classes each pass gets."""
    seen: list[int] = []
    original = explain_module.explain_built

    def counted(*args: Any, **kwargs: Any) -> Any:
        targets = args[3]
        seen.append(len(targets) if isinstance(targets, list) else targets.k)
        return original(*args, **kwargs)

    monkeypatch.setattr(explain_module, "explain_built", counted)
    return seen


def test_many_classes_are_explained_in_chunks(
    shapes: gradcam.LoadedModel, scene: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = explain_image(shapes, scene, methods=METHODS, top_k=7)
    seen = _counting(monkeypatch)
    monkeypatch.setattr(explain_module, "CLASS_CHUNK", 3)
    chunked = explain_image(shapes, scene, methods=METHODS, top_k=7)
    assert seen == [3, 3, 1]  # 7 classes, at most 3 per pass
    assert list(chunked.results) == METHODS
    for name in METHODS:
        a, b = whole.results[name], chunked.results[name]
        assert torch.equal(a.classes, b.classes) and a.classes.shape == (1, 7)
        torch.testing.assert_close(a.scores, b.scores)
        torch.testing.assert_close(a.maps, b.maps, rtol=1e-4, atol=1e-5)
        if a.logits is not None:
            torch.testing.assert_close(a.logits, b.logits)
    guided_a, guided_b = whole.results["guided-gradcam"], chunked.results["guided-gradcam"]
    torch.testing.assert_close(guided_a.cam.raw, guided_b.cam.raw, rtol=1e-4, atol=1e-5)  # type: ignore[attr-defined]
    assert [(e.method, e.rank, e.class_id) for e in whole.entries] == [
        (e.method, e.rank, e.class_id) for e in chunked.entries
    ]


def test_top_k_finds_the_best_classes_without_touching_the_model(
    scene: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = gradcam.load_model("shapes")
    loaded.module.train()
    monkeypatch.setattr(explain_module, "CLASS_CHUNK", 2)
    found = explain_image(loaded, scene, top_k=5)
    assert loaded.module.training
    with torch.no_grad():
        loaded.module.eval()
        logits = loaded.module(loaded.preprocess(scene))
    assert found.results["gradcam"].classes[0].tolist() == logits[0].topk(5).indices.tolist()


def test_cli_refuses_too_many_classes_before_writing(
    scene: Image.Image, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scene.png"
    scene.save(path)
    out = tmp_path / "out"
    for flags in (["--top-k", "100000"], ["--top-k", "0"]):
        code = main(["explain", str(path), "--model", "shapes", "--out", str(out), *flags])
        assert code == 2
        error = capsys.readouterr().err
        assert "top-k" in error and "Traceback" not in error
        assert not out.exists()


def test_cli_max_pixels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.png"
    make_scene(0).image.resize((400, 400)).save(path)
    out = tmp_path / "out"
    args = ["explain", str(path), "--model", "shapes", "--out", str(out)]
    assert main([*args, "--max-pixels", "10000"]) == 0
    summary = (out / "big" / "summary.json").read_text()
    assert '"size": [\n    100,\n    100\n  ]' in summary  # 400 x 400 divided by 4
    assert main([*args, "--max-pixels", "-1"]) == 2
    assert "--max-pixels" in capsys.readouterr().err


def test_bench_limits_quick_smoke() -> None:
    """The limits benchmark runs (no timing checks): the refusals exit 2, the rest 0."""
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "benchmarks" / "bench_limits.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(" | ") for line in proc.stdout.splitlines()[2:]]
    assert [(row[0].lstrip("| "), row[1]) for row in rows] == [
        ("start-up: explain a 96 px scene (shapes)", "0"),
        ("explain --top-k 100000 (refused)", "2"),
        ("caption of 60,000 words (refused)", "2"),
        ("caption of 32 words, 2 methods", "0"),
    ]


def test_map_arrays_keys_and_values(shapes: gradcam.LoadedModel) -> None:
    found = explain_image(
        shapes, photo("chelsea.png").resize((96, 64)), methods=ARRAY_METHODS, top_k=2
    )
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


def test_resolved_methods_are_not_looked_up_again_and_the_input_is_checked_once(
    shapes: gradcam.LoadedModel,
    scene: Image.Image,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import gradcam.methods.planner as planner
    import gradcam.methods.registry as registry

    by_name = explain_image(shapes, scene, methods=["gradcam++", "guided-backprop"], top_k=2)
    specs = registry.resolve_methods(["gradcam++", "guided-backprop", "gradcam++"])
    lookups: list[str] = []
    checks: list[str] = []
    lookup = registry.method_spec
    monkeypatch.setattr(registry, "method_spec", lambda name: lookups.append(name) or lookup(name))
    for where in (explain_module, planner):
        check = where.check_input
        monkeypatch.setattr(
            where,
            "check_input",
            lambda x, m, _c=check, _w=where.__name__: checks.append(_w) or _c(x, m),
        )
    found = explain_image(shapes, scene, methods=specs, top_k=2)
    save_explanation(found, scene, tmp_path / "out")
    assert lookups == []
    assert checks == ["gradcam.explain"]  # the planner takes the checked input as it is
    assert [(e.method, e.kind) for e in found.entries] == [
        ("gradcam++", "heatmap"),
        ("gradcam++", "heatmap"),
        ("guided-backprop", "pixel"),
        ("guided-backprop", "pixel"),
    ]
    for name in ("gradcam++", "guided-backprop"):
        assert torch.equal(found.results[name].maps, by_name.results[name].maps)
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
