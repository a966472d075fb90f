"""The method registry and the planner: one table, options passed through, shared passes, and
every registered method working everywhere a method is named (CLI, demo, evaluate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.models import SmallCNN, TinyGapNet, tiny_input
from torch import nn

import gradcam
from gradcam import GradCAMError
from gradcam.cli import main
from gradcam.demo.session import DemoSession, heatmap_choices
from gradcam.evaluate import Localization
from gradcam.evaluate.datasets import read_synthetic
from gradcam.evaluate.runner import run
from gradcam.explain import npz_key
from gradcam.methods import (
    GradCAM,
    Occlusion,
    create_method,
    explain_methods,
    method_spec,
    method_specs,
    methods,
)
from gradcam.methods.base import GradientMethod
from gradcam.methods.registry import Needs, Option, parse_options, register


def _fast_options(name: str) -> dict[str, Any]:
    """Options that keep every method quick on the tiny models of these tests."""
    spec = method_spec(name)
    wanted = {"window": 4, "stride": 4, "progress": False, "batch_size": 64, "num_scales": 2}
    return {k: v for k, v in wanted.items() if any(o.name == k for o in spec.options)}


class TestTable:
    def test_every_entry_is_complete(self) -> None:
        for spec in method_specs():
            assert spec.name and spec.title and spec.citation, spec
            assert spec.kind in ("heatmap", "pixel")
            assert spec.needs.layer or not spec.needs.layer_gradients
            for option in spec.options:
                assert option.help, f"{spec.name}: option {option.name} has no help text"

    def test_names_are_unique_and_in_order(self) -> None:
        names = methods()
        assert len(names) == len(set(names)) and names[0] == "gradcam"
        assert [s.name for s in method_specs()] == names

    def test_presets_are_not_options(self) -> None:
        spec = method_spec("counterfactual")
        assert spec.presets == {"counterfactual": True}
        assert "counterfactual" not in [o.name for o in spec.options]
        assert "counterfactual" in [o.name for o in method_spec("gradcam").options]

    def test_unknown_name_lists_the_known_ones(self) -> None:
        with pytest.raises(GradCAMError, match=r"unknown method 'nope'; choose from gradcam, "):
            method_spec("nope")

    def test_registering_twice_is_refused(self) -> None:
        with pytest.raises(ValueError, match="registered twice"):
            register("gradcam", title="x", kind="heatmap", needs=Needs())(GradCAM)

    def test_a_preset_must_be_an_option(self) -> None:
        with pytest.raises(ValueError, match="not options"):
            register("bad", title="x", kind="heatmap", needs=Needs(), presets={"nope": 1})(GradCAM)


class TestOptions:
    def test_options_reach_the_method(self) -> None:
        occlusion = create_method("occlusion", SmallCNN(), window=(4, 2), stride=2)
        assert isinstance(occlusion, Occlusion)
        assert occlusion.window == (4, 2) and occlusion.stride == (2, 2)
        cam = create_method("gradcam", SmallCNN(), "features", pooling="max", relu=False)
        assert isinstance(cam, GradCAM) and cam.pooling == "max" and not cam.relu

    def test_unknown_option_names_the_accepted_ones(self) -> None:
        with pytest.raises(GradCAMError, match="has no option 'windw'; it accepts: window"):
            create_method("occlusion", SmallCNN(), windw=3)
        with pytest.raises(GradCAMError, match="it accepts: none"):
            create_method("guided-backprop", SmallCNN(), pooling="max")

    def test_a_preset_cannot_be_overridden(self) -> None:
        with pytest.raises(GradCAMError, match="no option 'counterfactual'"):
            create_method("counterfactual", SmallCNN(), counterfactual=False)

    @pytest.mark.parametrize(
        ("annotation", "text", "value"),
        [
            (int, "7", 7),
            (float, "0.5", 0.5),
            (bool, "yes", True),
            (bool, "False", False),
            (int | None, "none", None),
            (int | tuple[int, int], "35", 35),
            (int | tuple[int, int], "35,21", (35, 21)),
            (int | tuple[int, int], "35x21", (35, 21)),
        ],
    )
    def test_text_is_typed(self, annotation: Any, text: str, value: Any) -> None:
        assert Option("o", annotation, None).parse(text) == value

    @pytest.mark.parametrize(
        ("name", "text", "message"),
        [
            ("pooling", "median", "expected one of mean, max, abs"),
            ("relu", "maybe", "expected true or false"),
        ],
    )
    def test_bad_text_names_the_type(self, name: str, text: str, message: str) -> None:
        with pytest.raises(GradCAMError, match=message):
            method_spec("gradcam").option(name).parse(text)

    def test_parse_options_goes_to_every_taker(self) -> None:
        parsed = parse_options(["gradcam", "counterfactual", "occlusion"], ["relu=false"])
        assert parsed == {
            "gradcam": {"relu": False},
            "counterfactual": {"relu": False},
            "occlusion": {},
        }
        with pytest.raises(GradCAMError, match=r"no chosen method .* has an option 'window'"):
            parse_options(["gradcam"], ["window=3"])
        with pytest.raises(GradCAMError, match="expected NAME=VALUE"):
            parse_options(["gradcam"], ["window"])


class _CountingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = SmallCNN(seed=3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


class TestPlanner:
    def test_gradient_methods_share_one_forward_pass(self) -> None:
        model = _CountingNet().eval()
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        names = ["gradcam", "counterfactual", "guided-backprop", "guided-gradcam"]
        names += ["deconvolution", "deconv-gradcam"]
        found = explain_methods(names, model, x, gradcam.TopK(2), layer="inner.features")
        assert model.calls == 1
        for name in names:
            alone = create_method(name, model, "inner.features")(x, gradcam.TopK(2))
            torch.testing.assert_close(found[name].maps, alone.maps)
            assert torch.equal(found[name].classes, alone.classes)

    def test_other_methods_explain_the_same_classes(self) -> None:
        model = TinyGapNet()
        found = explain_methods(
            ["gradcam", "cam", "occlusion"],
            model,
            tiny_input(),
            gradcam.TopK(2),
            options={"occlusion": {"window": 2, "stride": 1}},
        )
        for result in found.values():
            assert result.classes.tolist() == [[0, 1]]
        # On CAM's architecture Grad-CAM's weights are CAM's divided by Z (section 3.1).
        torch.testing.assert_close(found["cam"].raw[0, 0], torch.tensor([[0.0, 4], [12, 16]]))
        torch.testing.assert_close(found["gradcam"].raw[0, 0], torch.tensor([[0.0, 1], [3, 4]]))

    def test_options_and_unknown_names(self) -> None:
        model = SmallCNN()
        x = torch.randn(1, 3, 8, 8)
        found = explain_methods(["gradcam"], model, x, options={"gradcam": {"relu": False}})
        assert bool((found["gradcam"].raw < 0).any())
        with pytest.raises(GradCAMError, match="unknown method 'nope'"):
            explain_methods(["gradcam", "nope"], model, x)


def test_npz_keys() -> None:
    assert npz_key("gradcam", "raw") == "raw"
    assert npz_key("deconv-gradcam", "maps") == "deconv_gradcam_maps"
    assert npz_key("gradcam++", "raw") == "gradcampp_raw"


# ---- Every registered method works everywhere a method is named. ----


@pytest.fixture(scope="module")
def shapes_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("registry")
    data = read_synthetic(folder / "synthetic", 2)
    return Path(data.samples[0].path)


@pytest.fixture(scope="module")
def shapes_session(tmp_path_factory: pytest.TempPathFactory) -> DemoSession:
    return DemoSession(gradcam.load_model("shapes"), folder=tmp_path_factory.mktemp("demo"))


def test_every_method_through_the_cli(shapes_photo: Path, tmp_path: Path) -> None:
    args = ["explain", str(shapes_photo), "--model", "shapes", "--out", str(tmp_path)]
    args += ["--save-maps", "--option", "window=8", "--option", "stride=8"]
    for name in methods():
        args += ["--method", name]
    assert main(args) == 0
    summary = json.loads((tmp_path / shapes_photo.stem / "summary.json").read_text())
    assert {m["kind"] for m in summary["maps"]} == set(methods())
    arrays = np.load(tmp_path / shapes_photo.stem / "maps.npz")
    for spec in method_specs():
        maps = arrays[npz_key(spec.name, "maps")]
        assert np.isfinite(maps).all(), spec.name
        if spec.kind == "heatmap":
            assert npz_key(spec.name, "raw") in arrays.files


def test_cli_option_errors_are_one_line(
    shapes_photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["explain", str(shapes_photo), "--model", "shapes", "--option", "pooling=median"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        "gradcam: error: option pooling='median': expected one of mean, max, abs"
    )


def test_methods_command_lists_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for spec in method_specs():
        assert out.count(f"\n{spec.name}: {spec.title} (") + out.startswith(spec.name + ":") == 1


@pytest.mark.parametrize("name", heatmap_choices())
def test_every_heatmap_method_in_the_demo(
    shapes_session: DemoSession, shapes_photo: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every method renders; the demo's cap on a slow method's passes (SS-CAM at this layer
    # is over it) is tested in tests/demo/test_demo_slow.py.
    monkeypatch.setattr("gradcam.demo.session.MAX_SLOW_PASSES", 10**6)
    views = shapes_session.explain(shapes_photo, method=name)
    assert views.method == name
    titles = list(views.pictures)
    assert titles[:2] == ["Localization", method_spec(name).title]
    assert len(titles) == 5
    assert shapes_session.write_maps(views).exists()


def test_demo_refuses_an_unknown_method(shapes_session: DemoSession, shapes_photo: Path) -> None:
    with pytest.raises(GradCAMError, match="the page shows no method 'nope'"):
        shapes_session.explain(shapes_photo, method="nope")


@pytest.mark.parametrize("name", [s.name for s in method_specs() if s.kind == "heatmap"])
def test_every_heatmap_method_in_localization(shapes_photo: Path, name: str) -> None:
    data = read_synthetic(shapes_photo.parent, 2)
    protocol = Localization(name, options=_fast_options(name))
    result = run(protocol, gradcam.load_model("shapes"), data, progress=False)
    assert not result.failed
    assert result.summary[0]["method"] == name and result.summary[0]["images"] == 2


def test_localization_refuses_unknown_options() -> None:
    with pytest.raises(GradCAMError, match="has no option 'windw'"):
        Localization("occlusion", options={"windw": 3})


def test_the_methods_page_lists_every_method() -> None:
    readme = (Path(__file__).parents[2] / "docs" / "methods.md").read_text()
    missing = [s.name for s in method_specs() if f"`{s.name}`" not in readme]
    assert not missing, f"docs/methods.md does not list {missing}"


# Methods whose definition needs something a ViT does not have: a GAP + linear head (CAM, DFF),
# or channels to zero in the layer's own output (Ablation-CAM).
_NOT_ON_TOKENS = {"cam": "global average pooling", "dff": "linear head", "ablation-cam": "tokens"}


@pytest.mark.parametrize("name", methods())
def test_every_method_on_a_vision_transformer(name: str) -> None:
    """The default layer of a ViT is a token sequence: every method reads it through the
    layer's reshape, or says in one line why it cannot."""
    from helpers.models import TinyViT

    model = TinyViT().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    options = {k: v for k, v in _fast_options(name).items() if k != "batch_size"}
    method = create_method(name, model, **options)
    if name in _NOT_ON_TOKENS:
        with pytest.raises(GradCAMError, match=_NOT_ON_TOKENS[name]):
            method(x, gradcam.TopK(2))
        return
    result = method(x, gradcam.TopK(2))
    pixel = method_spec(name).kind == "pixel"
    assert result.maps.shape == ((2, 2, 3, 16, 16) if pixel else (2, 2, 16, 16))
    assert torch.isfinite(result.maps).all()
    if getattr(result, "layer", None):
        assert result.layer == "blocks.1.norm1"


# What each method's row in docs/methods.md must say it agrees with, at which settings: the
# settings its agreement test uses (tests/methods/test_<module>.py).
_AGREES_WITH = {
    "random-cam": ["pytorch-grad-cam `RandomCAM`", "same weights", "distribution"],
    "refine-cam": ["pytorch-grad-cam `RefineCAM`", '`base="gradcam"`', '{"eps": 1e-6}'],
    "seg-eigen-cam": ["pytorch-grad-cam `SegEigenCAM`", "defaults"],
    "sess": ["pytorch-grad-cam `SESS`", "same settings", '`base="gradcam"`'],
}


@pytest.mark.parametrize(("name", "claims"), list(_AGREES_WITH.items()))
def test_the_methods_table_says_which_peer_agrees(name: str, claims: list[str]) -> None:
    text = (Path(__file__).parents[2] / "docs" / "methods.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
    agrees = row.split(" | ")[3]  # the "agrees with" column
    assert all(claim in agrees for claim in claims), (name, agrees)


@pytest.mark.parametrize("name", methods())
def test_needs_agrees_with_plan(name: str) -> None:
    """A gradient method's entry says what its ``plan()`` asks of the engine (issue 29): a
    layer gradient exactly when the plan names a layer, the same input rules, and a layer only
    for methods that need one; methods without a plan (their own passes) say so in
    ``forwards`` or ``many_passes``, or take no gradients at all."""
    spec = method_spec(name)
    net = SmallCNN()
    built = create_method(name, net, "features" if spec.needs.layer else None)
    x = torch.rand(1, 3, 32, 32)
    if isinstance(built, GradientMethod):
        plan = built.plan(x)
        assert (plan.layer is not None) == spec.needs.layer_gradients, name
        assert set(plan.input_rules) == set(spec.needs.input_rules), name
        assert spec.needs.layer or plan.layer is None, name
        assert not (built.shares_pass and spec.needs.many_passes), f"{name}: one pass, not many"
        if plan.layer is not None:
            assert plan.layer.name == "features", name
    else:
        assert spec.needs.forwards or spec.needs.many_passes or not spec.needs.input_rules, name
