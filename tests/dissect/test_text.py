"""Textual explanations: ranking units by Grad-CAM's alpha, the Fig. 9 sentence, the shapes CNN
end to end, and ``gradcam dissect`` / ``gradcam explain --text`` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.state import assert_unchanged, snapshot

import gradcam
from gradcam.cli import main
from gradcam.dissect import (
    Concept,
    Dissection,
    DissectionError,
    Unit,
    load_dissection,
)
from gradcam.dissect.text import explain_text, rank_neurons, save_neurons
from gradcam.synthetic import make_scene


def _names(names: list[str | None]) -> Dissection:
    units = tuple(
        Unit(k, n, None if n is None else "object", 0.1 * k, n or "x", "y", 0.0, 1.0)
        for k, n in enumerate(names)
    )
    concepts = (Concept("x", "object"),)
    return Dissection("m", "layer", units, concepts, np.zeros((len(names), 1)))


def test_rank_neurons_hand_computed() -> None:
    names = _names(["book", None, "sky", "shelf", "road", None, "water"])
    alpha = torch.tensor([0.5, 0.9, -0.2, 0.7, -0.8, 0.0, -0.1])
    maps = torch.arange(7.0)[:, None, None].expand(7, 2, 2)
    positive, negative = rank_neurons(alpha, maps, names, top=3)
    assert [u.unit for u in positive] == [1, 3, 0]
    assert [u.alpha for u in positive] == pytest.approx([0.9, 0.7, 0.5])
    assert [u.unit for u in negative] == [4, 2, 6]  # most negative first; alpha 0 is neither
    assert torch.equal(positive[1].activation, torch.full((2, 2), 3.0))
    positive, negative = rank_neurons(alpha, maps, names, top=3, named_only=True)
    assert [u.name for u in positive] == ["shelf", "book"]
    assert [u.name for u in negative] == ["road", "sky", "water"]


def test_sentence() -> None:
    from gradcam.dissect.text import TextExplanation

    names = _names(["book", None, "sky", "shelf"])
    alpha = torch.tensor([0.5, 0.9, -0.2, 0.7])
    positive, negative = rank_neurons(alpha, torch.zeros(4, 2, 2), names)
    text = TextExplanation(3, "book-store", 9.5, "layer", positive, negative)
    assert str(text) == (
        "book-store: positive: shelf (unit 3, IoU 0.30), book (unit 0, IoU 0.00); "
        "negative: sky (unit 2, IoU 0.20)"
    )
    assert text.sentence(unnamed=True).startswith("book-store: positive: unit 1 (unnamed), shelf")
    assert text.to_dict()["positive"][0] == {
        "unit": 1, "alpha": pytest.approx(0.9), "name": None, "category": None, "iou": 0.1,
        "concept": "x",
    }  # fmt: skip
    empty = TextExplanation(0, "", 0.0, "layer", (), ())
    assert str(empty) == "0: positive: (no named unit); negative: (no named unit)"


def test_rank_neurons_exception() -> None:
    with pytest.raises(DissectionError, match="3 units, not 'layer' with 4"):
        rank_neurons(torch.zeros(4), torch.zeros(4, 2, 2), _names(["a", "b", "c"]))


@pytest.fixture(scope="module")
def shapes() -> gradcam.LoadedModel:
    return gradcam.load_model("shapes")


@pytest.fixture(scope="module")
def shape_names(shapes: gradcam.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("names") / "shapes"
    code = main(["dissect", "--model", "shapes", "--concepts", "generated", "--images", "64",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    return str(out)


def test_explain_text_shapes_cnn(shapes: gradcam.LoadedModel, shape_names: str) -> None:
    names = load_dissection(shape_names)
    scene = make_scene(0, shapes=["ring"])
    before = snapshot(shapes.module)
    text = explain_text(shapes, scene.image, names)
    assert_unchanged(before, shapes.module)
    x = shapes.preprocess(scene.image)
    result = gradcam.GradCAM(shapes.module, names.layer)(x, [text.class_id])
    alpha = result.weights[0, 0]
    expected = torch.argsort(alpha, descending=True)[:5].tolist()
    assert [u.unit for u in text.positive] == expected
    assert [u.alpha for u in text.positive] == pytest.approx(alpha[expected].tolist())
    assert [u.unit for u in text.negative] == torch.argsort(alpha)[:5].tolist()
    assert text.positive[0].activation.shape == (16, 16)
    # The ring's most important named units detect shapes, rings among them.
    named = explain_text(shapes, scene.image, names, named_only=True)
    assert named.class_name == "ring"
    assert len(named.positive) == 5
    assert all(u.category == "shape" for u in named.positive)
    assert "ring" in [u.name for u in named.positive]


def test_explain_text_exception(shapes: gradcam.LoadedModel, shape_names: str) -> None:
    names = load_dissection(shape_names)
    # Names for 128 units stored under a 64-unit layer's name: the widths disagree.
    other = Dissection(names.model, "features.conv3c", names.units, names.concepts, names.iou)
    image = make_scene(0).image
    with pytest.raises(DissectionError, match=r"128 units, not 'features\.conv3c' with 64"):
        explain_text(shapes, image, other)
    wrong = Dissection("resnet18", names.layer, names.units, names.concepts, names.iou)
    with pytest.raises(DissectionError, match="for model 'resnet18'"):
        explain_text(shapes, image, wrong)


def test_cli_explain_text(shape_names: str, tmp_path, capsys) -> None:
    scene = tmp_path / "ring.png"
    make_scene(0, shapes=["ring"]).image.save(scene)
    out = tmp_path / "out"
    argv = ["explain", str(scene), "--model", "shapes", "--text", "--names", shape_names,
            "--top-k", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ring: positive: " in printed
    assert "ring (unit" in printed
    summary = json.loads((out / "ring" / "summary.json").read_text())
    neurons = summary["neurons"]
    assert [n["name"] for n in neurons] == [m["name"] for m in summary["maps"]]
    assert neurons[0]["sentence"] in printed
    pictures = [u["overlay"] for u in neurons[0]["positive"] if u["name"]]
    assert pictures and all((out / "ring" / p).is_file() for p in pictures)
    assert all(u["overlay"] is None for u in neurons[0]["positive"] if not u["name"])


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--text"], "--text needs --names"),
        (["--names", "NAMES"], "--names applies with --text"),
        (["--text", "--names", "NAMES"], "names are for model 'shapes', not --model 'efficie"),
        (["--text", "--names", "NAMES", "--model", "shapes", "--layer", "features.conv4a"],
         "names are for layer 'features'"),
        (["--text", "--names", "EMPTY", "--model", "shapes"], "holds no neuron names"),
    ],
)  # fmt: skip
def test_cli_explain_text_exception(
    shape_names: str, tmp_path, capsys, argv: list[str], match: str
) -> None:
    scene = tmp_path / "ring.png"
    make_scene(0, shapes=["ring"]).image.save(scene)
    argv = [a.replace("NAMES", shape_names).replace("EMPTY", str(tmp_path)) for a in argv]
    assert main(["explain", str(scene), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert match in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_cli_names_for_another_width(shape_names: str, tmp_path, capsys) -> None:
    names = load_dissection(shape_names)
    narrow = Dissection("shapes", names.layer, names.units[:64], names.concepts, names.iou[:64])
    narrow.save(tmp_path / "narrow")
    scene = tmp_path / "ring.png"
    make_scene(0).image.save(scene)
    argv = ["explain", str(scene), "--model", "shapes", "--text", "--names",
            str(tmp_path / "narrow"), "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert "with 64 units, not 'features' with 128" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--concepts", "MISSING"], "no such folder"),
        (["--concepts", "EMPTYDIR"], "index.csv is missing"),
        (["--concepts", "generated", "--images", "0"], "--images must be at least 1"),
        (["--concepts", "generated", "--images", "4", "--layer", "pool"], "not spatial"),
        (["--concepts", "generated", "--images", "4", "--layer", "nope"], "no layer named"),
    ],
)
def test_cli_dissect_exception(tmp_path, capsys, argv: list[str], match: str) -> None:
    (tmp_path / "emptydir").mkdir()
    paths = {"MISSING": str(tmp_path / "x"), "EMPTYDIR": str(tmp_path / "emptydir")}
    argv = [paths.get(a, a) for a in argv]
    assert main(["dissect", "--model", "shapes", "--out", str(tmp_path / "o"), *argv]) == 2
    assert match in capsys.readouterr().err.strip().splitlines()[-1]


def test_cli_dissect_refuses_a_finished_run(shape_names: str, capsys) -> None:
    argv = ["dissect", "--model", "shapes", "--concepts", "generated", "--images", "64",
            "--out", shape_names]  # fmt: skip
    assert main(argv) == 2
    assert "already holds a dissection" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0  # finished: read back, not recomputed
    assert "units named" in capsys.readouterr().out


def test_save_neurons_without_summary(tmp_path) -> None:
    from gradcam.dissect.text import TextExplanation

    names = _names(["book", None])
    positive, negative = rank_neurons(torch.tensor([1.0, -1.0]), torch.rand(2, 3, 3), names)
    image = make_scene(0).image
    written = save_neurons(
        [TextExplanation(0, "c", 1.0, "layer", positive, negative)], image, tmp_path
    )
    assert written[0]["positive"][0]["overlay"] == "neuron_1_positive1_unit0_book.png"
    assert (tmp_path / "neuron_1_positive1_unit0_book.png").is_file()
    assert not (tmp_path / "summary.json").exists()
