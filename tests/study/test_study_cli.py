"""``gradcam study create|invite|report`` through the real CLI, and its one-line errors."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
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


def test_report_never_writes_over_an_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cd_study_file: Path,
    copy_study: Callable[[Path], Path],
) -> None:
    study = copy_study(cd_study_file)
    before = study.read_bytes()
    report = ["study", "report", str(study), "--simulate", "2", "--csv"]
    for target, what in [
        (str(study), "is an input of this command"),
        (f"{study.parent}/./{study.name}", "is an input of this command"),
        (f"{study}-wal", "is an input of this command"),
        (str(tmp_path), "is a folder"),
        (str(tmp_path / "missing" / "a.csv"), "does not exist"),
        (str(tmp_path / "x.db" / "a.csv"), "does not exist"),
    ]:
        assert what in _error(capsys, [*report, target])
    # Checked before any work: no simulated participant was added.
    assert study.read_bytes() == before and open_study(study).participants() == []


def test_create_checks_out_and_limit_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradcam.study.create as create_module

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(create_module, "load_study_model", no_work)
    (tmp_path / "notes.txt").write_text("x")
    create = ["study", "create", "class-discrimination", "--data", "synthetic", "--out"]
    for out, what in [
        (tmp_path / "notes.txt", "already exists"),
        (tmp_path / "notes.txt" / "s.db", "is a file"),
        (tmp_path, "is a folder"),
        (tmp_path / "missing" / "s.db", "does not exist"),
    ]:
        assert what in _error(capsys, [*create, str(out)])
    for limit in ("-2", "0"):
        err = _error(capsys, [*create, str(tmp_path / "s.db"), "--limit", limit])
        assert f"limit must be at least 1 photo, got {limit}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        ("DELETE FROM meta WHERE key = 'owner_token'", "no owner token"),
        ("DELETE FROM meta WHERE key = 'seed'", "no seed"),
        ("UPDATE meta SET value = 'oops' WHERE key = 'config'", "config is not a JSON object"),
        ("UPDATE items SET choices = 'oops'", "choices are not a list"),
        ("DROP TABLE answers", "no answers table"),
    ],
)
def test_damaged_study_is_one_line_for_every_step(
    capsys: pytest.CaptureFixture[str],
    cd_study_file: Path,
    copy_study: Callable[[Path], Path],
    damage: str,
    what: str,
) -> None:
    study = copy_study(cd_study_file)
    with sqlite3.connect(study) as db:
        db.execute(damage)
    for step in (["invite", str(study), "-n", "2"], ["report", str(study)], ["serve", str(study)]):
        assert what in _error(capsys, ["study", *step])
    with sqlite3.connect(study) as db:  # checked before anyone was invited
        assert db.execute("SELECT COUNT(*) FROM participants").fetchone()[0] == 0


_READ_ONLY = """
import sys
from gradcam.cli import main
study, other = sys.argv[1:]
for argv in (
    ["study", "serve", study, "--port", "1"],
    ["study", "invite", study],
    ["study", "report", other, "--csv", study + ".csv"],
    ["study", "create", "trust", "--data", "synthetic", "--out", study + ".new"],
):
    print(main(argv))
print(main(["study", "report", study]))
"""


def test_read_only_file_system(
    tmp_path: Path, cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    # A real read-only file system: a tmpfs remounted read-only in a mount namespace of its own.
    mount = tmp_path / "ro"
    mount.mkdir()
    other = copy_study(cd_study_file)
    script = (
        f"mount -t tmpfs none {mount} && cp {cd_study_file} {mount}/s.db && "
        f'mount -o remount,ro {mount} && exec {sys.executable} -c "$0" {mount}/s.db {other}'
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no mount namespaces here (unshare -m)")
    run = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, _READ_ONLY],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    lines = run.stdout.splitlines()
    errors = [line for line in run.stderr.splitlines() if line.startswith("gradcam: error:")]
    assert lines[:4] == ["2", "2", "2", "2"] and lines[-1] == "0", run.stderr[-2000:]
    assert "Traceback" not in run.stderr and len(errors) == 4
    serve, invite, report, create = errors
    assert "read-only file system" in serve and "read-only file system" in invite
    assert "not a gradcam study" not in serve
    assert f"{mount}/s.db.csv" in report and f"{mount}/s.db.new" in create
    assert "# class-discrimination study" in run.stdout  # reading works there
