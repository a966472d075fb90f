"""``gradcam study create|invite|report`` through the real CLI, and its one-line errors."""

from __future__ import annotations

import csv
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gradcam.cli import main
from gradcam.evaluate.coco import encode_rle
from gradcam.study import open_study
from gradcam.synthetic import SHAPES, make_scene


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradcam: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_create_invite_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "s.db"
    argv = ["study", "create", "class-discrimination", "--data", "synthetic", "--images", "2"]
    assert main([*argv, "--methods", "gradcam", "--out", str(study)]) == 0
    out = capsys.readouterr().out
    assert "class-discrimination study, 2 items, seed 0" in out
    assert open_study(study).owner_token in out
    assert main(["study", "invite", str(study), "-n", "3", "--url", "http://lab:9000/"]) == 0
    links = capsys.readouterr().out.split()
    tokens = [link.rsplit("/", 1)[1] for link in links]
    assert len(links) == 3 and all(link.startswith("http://lab:9000/p/") for link in links)
    assert {p.token for p in open_study(study).participants()} == set(tokens)
    answers = tmp_path / "answers.csv"
    argv = ["study", "report", str(study), "--simulate", "2", "--items", "--csv", str(answers)]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "## People" in report and "0 participants, 0 answers" in report
    assert "SIMULATED participants" in report and "| gradcam | 4 |" in report
    # Per item: 2 items, each answered by both simulated participants.
    assert len(re.findall(r"^\| \d \| scene-000\d \| gradcam \| \w+ \| 2 \|", report, re.M)) == 2
    rows = list(csv.DictReader(answers.open()))
    assert len(rows) == 4 and {r["simulated"] for r in rows} == {"1"}


def _coco_folder(root: Path) -> Path:
    """A COCO folder of 3 scenes: two with two shapes, one with a single shape."""
    images, annotations = [], []
    (root / "images").mkdir(parents=True)
    for index, shapes in enumerate((["ring", "star"], ["circle"], ["cross", "square"])):
        scene = make_scene(index, shapes=shapes, min_size=0.3, max_size=0.45)
        scene.image.save(root / "images" / f"{index}.png")
        images.append({"id": index + 1, "file_name": f"{index}.png", "width": 128, "height": 128})
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": SHAPES.index(obj.shape),
                    "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                    "iscrowd": 0,
                    "segmentation": encode_rle(obj.mask),
                }
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(SHAPES)]
    document = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(document))
    return root


def test_create_from_a_coco_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _coco_folder(tmp_path / "coco")
    study = tmp_path / "coco.db"
    argv = ["study", "create", "class-discrimination", "--data", str(data), "--model", "shapes"]
    argv += ["--methods", "gradcam", "--out", str(study), "--both-categories"]
    assert main([*argv, "--each-image-once"]) == 0
    store = open_study(study)
    items = store.items()
    assert store.config["each_image_once"] is True
    assert [len(store.order(t)) for t in store.invite(2)] == [2, 2]  # one item per photo
    # The one-shape photo is left out; both categories of each two-shape photo are asked.
    assert sorted((i.image, i.truth) for i in items) == [
        ("0.png", "ring"), ("0.png", "star"), ("2.png", "cross"), ("2.png", "square"),
    ]  # fmt: skip
    for item in items:
        assert np.asarray(item.info["boxes"][item.truth]).shape == (1, 4)


def test_errors_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cd_study_file: Path,
    copy_study: Callable[[Path], Path],
) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a study")
    assert "not a gradcam study" in _error(capsys, ["study", "report", str(notes)])
    assert "no such study file" in _error(capsys, ["study", "serve", str(tmp_path / "x.db")])
    out = str(tmp_path / "new.db")
    create = ["study", "create", "class-discrimination", "--out", out]
    assert "no-such" in _error(capsys, [*create, "--data", "synthetic", "--method", "no-such"])
    assert "unknown model" in _error(capsys, [*create, "--data", "synthetic", "--model", "nope"])
    assert "exactly two annotated categories" in _error(capsys, [*create, "--data", "photos"])
    trust = ["study", "create", "trust", "--data", "synthetic", "--out", out]
    assert "two models" in _error(capsys, [*trust, "--model", "shapes"])
    existing = copy_study(cd_study_file)
    before = existing.read_bytes()
    argv = ["study", "create", "class-discrimination", "--data", "synthetic", "--images", "1"]
    assert "already exists" in _error(capsys, [*argv, "--out", str(existing)])
    assert existing.read_bytes() == before
    assert "at least 1" in _error(capsys, ["study", "invite", str(existing), "-n", "0"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "cannot serve" in _error(capsys, ["study", "serve", str(existing), "--port", port])
    assert "--port must be" in _error(capsys, ["study", "serve", str(existing), "--port", "0"])
    assert not (tmp_path / "new.db").exists()
    assert re.search(r"\.partial", " ".join(p.name for p in tmp_path.iterdir())) is None
