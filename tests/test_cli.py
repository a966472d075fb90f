"""The ``gradcam`` command, run through its installed entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.photos import cat_and_coffee, photo

from gradcam.cli import main
from gradcam.evaluate import read_maps, read_rows

GRADCAM = str(Path(sys.executable).with_name("gradcam"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRADCAM, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    both, _ = cat_and_coffee()
    paths = {"both": folder / "cat_and_coffee.jpg", "cat": folder / "cat.png"}
    both.save(paths["both"])
    photo("chelsea.png").save(paths["cat"])
    (folder / "notes.jpg").write_text("not an image")
    paths["text"] = folder / "notes.jpg"
    paths["corrupt"] = folder / "corrupt.png"
    paths["corrupt"].write_bytes(paths["cat"].read_bytes()[:2000])
    return paths


def test_explain_writes_overlays_summary_and_maps(photos: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(
        "explain",
        str(photos["both"]),
        "--top-k",
        "2",
        "--counterfactual",
        "--out",
        str(out),
        "--save-maps",
    )
    assert proc.returncode == 0, proc.stderr
    folder = out / "cat-and-coffee"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["size"] == [901, 300] and summary["layer"] == "_head_act"
    assert len(summary["predictions"]) == 5
    assert [m["kind"] for m in summary["maps"]] == ["gradcam"] * 2 + ["counterfactual"] * 2
    for entry in summary["maps"]:
        overlay = folder / entry["overlay"]
        assert overlay.is_file()
        x0, y0, x1, y1 = entry["box"]
        assert 0 <= x0 <= x1 < 901 and 0 <= y0 <= y1 < 300
    arrays = np.load(folder / "maps.npz")
    assert arrays["input"].shape == (1, 3, 224, 673)
    assert arrays["raw"].shape == (2, 7, 22) and arrays["maps"].shape == (2, 224, 673)
    assert arrays["counterfactual_raw"].shape == (2, 7, 22)
    assert arrays["classes"].tolist() == [m["class"] for m in summary["maps"][:2]]
    assert arrays["maps"].min() >= 0.0 and arrays["maps"].max() <= 1.0


def test_bad_files_are_reported_and_the_rest_explained(
    photos: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    proc = run(
        "explain",
        str(photos["text"]),
        str(photos["cat"]),
        str(missing),
        str(photos["corrupt"]),
        "--class",
        "espresso",
        "--out",
        str(out),
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    for bad in (
        "notes.jpg: not an image file",
        "missing.png: no such file",
        "corrupt.png: corrupt",
    ):
        assert bad in proc.stderr
    summary = json.loads((out / "cat" / "summary.json").read_text())
    assert summary["maps"][0]["name"] == "espresso"
    assert "explained 1 of 4 images" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--class", "cat"], "ambiguous"),
        (["--layer", "_blocks.99"], "no layer named"),
        (["--model", "resnet5O"], "unknown model"),
        (["--top-k", "0"], "--top-k must be at least 1"),
    ],
    ids=["class", "layer", "model", "top-k"],
)
def test_user_errors_exit_2_without_traceback(
    photos: dict[str, Path], args: list[str], message: str, tmp_path: Path
) -> None:
    proc = run("explain", str(photos["cat"]), "--out", str(tmp_path), *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_several_methods_and_the_figure(photos: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(
        "explain", str(photos["cat"]), "--method", "cam", "--method", "occlusion",
        "--method", "deconvolution", "--figure", "--window", "64", "--stride", "32",
        "--out", str(out), "--save-maps",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    folder = out / "cat"
    summary = json.loads((folder / "summary.json").read_text())
    kinds = [m["kind"] for m in summary["maps"]]
    assert kinds == [
        "cam",
        "occlusion",
        "deconvolution",
        "gradcam",
        "guided-backprop",
        "guided-gradcam",
    ]
    for entry in summary["maps"]:
        assert (folder / entry["overlay"]).is_file()
        assert (entry["box"] is None) == (
            entry["kind"] in ("deconvolution", "guided-backprop", "guided-gradcam")
        )
    (figure,) = summary["figures"]
    assert (folder / figure).is_file()
    arrays = np.load(folder / "maps.npz")
    assert arrays["guided_gradcam_maps"].shape == (1, 3, 224, 337)
    assert arrays["occlusion_raw"].shape == (1, 224, 337)
    assert arrays["cam_raw"].shape == (1, 7, 11)


def test_unknown_method(photos: dict[str, Path], tmp_path: Path) -> None:
    proc = run("explain", str(photos["cat"]), "--method", "gradkam", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown method 'gradkam'" in proc.stderr


def test_evaluate_localization_on_an_imagenet_style_folder(tmp_path: Path) -> None:
    images = tmp_path / "val"
    images.mkdir()
    photo("chelsea.png").save(images / "cat.png")
    photo("coffee.png").save(images / "coffee.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat.png 285\ncoffee.png espresso\nmissing.png 1\n")
    out = tmp_path / "out"
    proc = run(
        "evaluate", "localization", "--data", str(images), "--labels", str(labels),
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 1  # one image is missing: reported, the others evaluated
    assert "missing.png: no such file" in proc.stderr and "Traceback" not in proc.stderr
    assert "| method | images | cls_top1_error |" in proc.stdout
    folder = out / "localization-gradcam"
    (summary,) = json.loads((folder / "summary.json").read_text())
    assert summary["images"] == 2 and summary["cls_top1_error"] == 0.0
    rows = read_rows(folder)
    assert [r["error"] is None for r in rows] == [True, True, False]
    assert read_maps(folder, 0)["gradcam"].shape == (5, 7, 11)  # top-5 at layer resolution
    assert read_maps(folder, 2) == {}


def test_evaluate_user_errors(tmp_path: Path) -> None:
    proc = run("evaluate", "pointing", "--data", str(tmp_path), "--format", "coco")
    assert proc.returncode == 2 and "--format coco needs --annotations FILE" in proc.stderr
    proc = run("evaluate", "sanity", "--data", str(tmp_path))
    assert proc.returncode == 2 and "no images to evaluate" in proc.stderr


@pytest.mark.parametrize(
    ("protocol", "extra", "header"),
    [
        ("localization", [], "| method | images | cls_top1_error |"),
        ("pointing", ["--tolerance", "0"], "| method | variant | threshold |"),
        ("ablations", [], "| variant | pooling | relu | gradient_rule |"),
        ("faithfulness", ["--limit", "2", "--stride", "16"], "| method | images | spearman"),
        ("sanity", ["--limit", "2", "--points", "2"], "| randomized_to | layers | gradcam |"),
    ],
)
def test_evaluate_every_protocol_on_the_synthetic_benchmark(
    protocol: str, extra: list[str], header: str, tmp_path: Path
) -> None:
    proc = run(
        "evaluate", protocol, "--data", "synthetic", "--synthetic-images", "6",
        "--out", str(tmp_path), *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert header in proc.stdout
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith(protocol)]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary and all(row.get("images", 2) >= 2 for row in summary)
    assert len(read_rows(folder)) == (2 if "--limit" in extra else 6)


def test_help_lists_the_registries(capsys: pytest.CaptureFixture[str]) -> None:
    """``gradcam --help`` and the subcommands' help list what the registries hold."""
    from gradcam.evaluate import protocol_names, protocol_specs
    from gradcam.evaluate.registry import flag
    from gradcam.methods import methods

    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    assert all(name in top for name in [*protocol_names(), *methods()])
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    evaluate = capsys.readouterr().out
    flags = {flag(s, o) for s in protocol_specs() for o in s.options}
    flags -= {"--method", "--methods", "--options"}
    assert all(f in evaluate for f in flags | {"--method", "--layer", "--option"})
    assert all(name in " ".join(evaluate.split()) for name in protocol_names())
    for command in ("explain", "caption"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        # argparse wraps help at hyphens: join the wrapped names back.
        text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
        assert all(name in text for name in methods())


def test_every_command_has_a_handler() -> None:
    """``main`` dispatches through ``handler`` alone: every leaf command must set one."""
    import argparse

    from gradcam.cli import build_parser

    def leaves(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, Any]]:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            return [(path, parser.get_default("handler"))]
        return [
            leaf
            for group in groups
            for name, sub in group.choices.items()
            for leaf in leaves(sub, f"{path} {name}")
        ]

    found = leaves(build_parser(), "gradcam")
    assert len(found) > 9
    assert [path for path, handler in found if not callable(handler)] == []
