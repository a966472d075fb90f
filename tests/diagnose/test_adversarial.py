"""``gradcam diagnose adversarial``: the attack reaches the paper's criterion within a budget."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.state import assert_unchanged, snapshot
from PIL import Image

import gradcam
from gradcam.cli import main
from gradcam.diagnose.adversarial import attack, diagnose_adversarial, perturbation_image, psnr
from gradcam.errors import GradCAMError
from gradcam.models import LoadedModel
from gradcam.synthetic import make_scene

BUNDLED = Path(gradcam.__file__).parent / "data" / "cat_and_coffee.jpg"


@pytest.fixture(scope="module")
def small_lite0() -> LoadedModel:
    """EfficientNet-Lite0 (real weights) on a 64-pixel input, so an attack takes seconds."""
    lite0 = gradcam.load_model()
    return dataclasses.replace(lite0, preprocess=dataclasses.replace(lite0.preprocess, size=64))


def test_attack_reaches_the_criterion_on_the_bundled_photo(small_lite0: LoadedModel) -> None:
    photo = Image.open(BUNDLED)
    before = snapshot(small_lite0.module)
    result = attack(small_lite0, photo, "paddle", epsilon=4, max_steps=60)
    assert_unchanged(before, small_lite0.module)
    assert result.success and 0 < result.steps <= 60
    assert result.linf <= 4
    # The saved PNG is exactly the image that fooled the model.
    x = small_lite0.preprocess(result.adversarial)
    with torch.no_grad():
        probs = small_lite0.module(x).softmax(-1)[0]
    assert float(probs[result.target]) > 0.9999
    top5 = set(probs.topk(5).indices.tolist())
    assert result.present and not top5 & set(result.present)
    assert [c for c, _ in result.before[:2]] == list(result.present)
    original = np.asarray(result.original, np.float64)
    mse = np.mean((np.asarray(result.adversarial, np.float64) - original) ** 2)
    assert result.psnr == pytest.approx(10 * np.log10(255**2 / mse))


def test_a_spent_budget_says_so(small_lite0: LoadedModel) -> None:
    result = attack(small_lite0, Image.open(BUNDLED), "paddle", epsilon=1, max_steps=2)
    assert not result.success and result.steps == 2 and result.linf <= 1


def test_psnr_and_perturbation_picture() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # MSE = 256 / 48
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 * 48 / 256))
    assert psnr(a, a) is None
    scene = make_scene(0, shapes=["star"]).image
    loaded = gradcam.load_model("shapes")
    result = attack(loaded, scene, "circle", epsilon=2, max_steps=3)
    picture = np.asarray(perturbation_image(result), np.int16)
    delta = np.asarray(result.adversarial, np.int16) - np.asarray(result.original, np.int16)
    assert np.all(picture[delta == 0] == 128)
    assert np.all(picture[delta == 2] == 255) and np.all(picture[delta == -2] == 0)


def test_bad_arguments_are_one_line_errors(small_lite0: LoadedModel) -> None:
    photo = Image.open(BUNDLED)
    with pytest.raises(GradCAMError, match="no class named"):
        attack(small_lite0, photo, "not a class at all")
    with pytest.raises(GradCAMError, match="epsilon"):
        attack(small_lite0, photo, "paddle", epsilon=0)
    with pytest.raises(GradCAMError, match="step"):
        attack(small_lite0, photo, "paddle", step=0)


def test_outputs_and_maps(small_lite0: LoadedModel, tmp_path: Path) -> None:
    summary = diagnose_adversarial(
        small_lite0, Image.open(BUNDLED), "paddle", tmp_path, epsilon=4, max_steps=60
    )
    assert summary["success"]
    roles = [m["role"] for m in summary["maps"]]
    assert roles.count("present") == 2 and "adversarial top-2" in roles
    assert all(m["prob"] < 1e-3 for m in summary["maps"] if m["role"] == "present")
    for name in ("original.png", "adversarial.png", "perturbation.png", "report.html"):
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["target_name"] == "paddle"
    with Image.open(tmp_path / "adversarial.png") as saved:
        assert saved.format == "PNG"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = tmp_path / "star.png"
    make_scene(0, shapes=["star"]).image.save(scene)
    common = ["diagnose", "adversarial", str(scene), "--model", "shapes"]
    out = ["--out", str(tmp_path / "out")]
    args = [*common, "--target", "circle", "--epsilon", "32", "--max-steps", "300"]
    assert main([*args, "--confidence", "0.9", "--present", "star", *out]) == 0
    assert "reached circle" in capsys.readouterr().out
    assert main([*args, "--max-steps", "1", *out]) == 0
    assert "budget spent" in capsys.readouterr().err
    assert main([*common, "--target", "dodecahedron", *out]) == 2
    assert main([*common, "--target", "circle", "--layer", "nope", *out]) == 2
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert main(["diagnose", "adversarial", str(broken), "--target", "circle", *out]) == 2
    err = capsys.readouterr().err
    assert "dodecahedron" in err and "nope" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"epsilon": 1000}, "epsilon must be an integer between 1 and 255"),
        ({"step": 256}, "step must be an integer between 1 and 255"),
        ({"confidence": 2.0}, "confidence must be a number between 0 and 1, got 2.0"),
        ({"confidence": float("nan")}, "confidence must be a number between 0 and 1, got nan"),
        ({"confidence": -1.0}, "confidence must be a number between 0 and 1, got -1.0"),
        ({"max_steps": 100_000_000}, "max_steps must be an integer between 0 and 10000"),
        ({"max_steps": -1}, "max_steps must be an integer between 0 and 10000"),
        ({"present": ["star", "circle"]}, "the target 'circle' is also a present class"),
    ],
)
def test_meaningless_settings_are_refused_before_any_work(
    options: dict[str, object], match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 30 item 17: each was accepted (epsilon 1000 clipped nothing, confidence 2 spent
    the whole budget, 1e8 steps ran for days, a target in the present classes was dropped)."""
    loaded = gradcam.load_model("shapes")
    star = make_scene(0, shapes=["star"]).image
    with pytest.raises(GradCAMError, match=match):
        attack(loaded, star, "circle", **options)  # type: ignore[arg-type]
    module = __import__("gradcam.diagnose.adversarial", fromlist=["attack"])
    monkeypatch.setattr(module, "attack", lambda *a, **k: pytest.fail("the attack ran"))
    with pytest.raises(GradCAMError, match=match):
        diagnose_adversarial(loaded, star, "circle", tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["file", "under"])
def test_out_that_cannot_be_a_folder_is_refused_before_the_attack(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 30 item 12: the traceback came after the whole attack."""
    module = __import__("gradcam.diagnose.adversarial", fromlist=["attack"])
    monkeypatch.setattr(module, "attack", lambda *a, **k: pytest.fail("the attack ran"))
    scene = tmp_path / "star.png"
    make_scene(0, shapes=["star"]).image.save(scene)
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "sub"
    args = ["diagnose", "adversarial", str(scene), "--model", "shapes", "--target", "circle"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"output folder {out} is a file, or lies under one" in err
    assert "Traceback" not in err and blocker.read_text() == "x"


def test_cli_decodes_a_huge_photo_at_the_pixel_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 30 item 8: a small palette PNG of 9000 x 9000 was decoded at full size (2.5 GB
    at the peak); it is decoded under gradcam.images.MAX_PIXELS, as by the other commands."""
    bomb = tmp_path / "bomb.png"
    Image.new("P", (3000, 3000)).save(bomb, optimize=True)  # 9 Mpx in a few KB
    assert bomb.stat().st_size < 50_000
    seen: list[tuple[int, int]] = []
    module = __import__("gradcam.diagnose.adversarial", fromlist=["diagnose_adversarial"])

    def record(loaded: object, image: Image.Image, *args: object, **kw: object) -> object:
        seen.append(image.size)
        raise GradCAMError("stop here")

    monkeypatch.setattr(module, "diagnose_adversarial", record)
    args = ["diagnose", "adversarial", str(bomb), "--model", "shapes", "--target", "circle"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert seen[-1][0] * seen[-1][1] <= gradcam.images.MAX_PIXELS
    assert main([*args, "--out", str(tmp_path / "out"), "--max-pixels", "10000"]) == 2
    assert seen[-1] == (100, 100)
