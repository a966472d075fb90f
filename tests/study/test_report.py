"""Scoring: hand-computed intervals and kappas, and reports of stored answers."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gradcam.errors import GradCAMError
from gradcam.outputs import spreadsheet_safe
from gradcam.study import fleiss_kappa, open_study, report, wilson_interval, write_csv
from gradcam.study.report import answers_csv, mean_interval

# Wikipedia's worked example of Fleiss' kappa: 10 subjects, 14 raters, 5 categories.
WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_wikipedia() -> None:
    # P-bar = 0.378, P_e = 0.213 (p_j = .143 .200 .279 .150 .229), kappa = 0.210.
    assert fleiss_kappa(WIKIPEDIA) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_two_categories_by_hand() -> None:
    # Items [3,0], [0,3], [2,1]: P_i = 1, 1, 1/3; P-bar = 7/9; p = (5/9, 4/9);
    # P_e = 41/81; kappa = (63/81 - 41/81) / (40/81) = 22/40.
    assert fleiss_kappa([[3, 0], [0, 3], [2, 1]]) == pytest.approx(0.55)


def test_fleiss_unequal_raters_and_degenerate() -> None:
    # Items with one rater are left out; [2,0], [0,2] agree perfectly: kappa 1.
    assert fleiss_kappa([[2, 0], [0, 2], [1, 0]]) == pytest.approx(1.0)
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # every answer in one category
    assert fleiss_kappa([[1, 0]]) is None  # no item with two raters


def test_wilson_by_hand() -> None:
    # 8 of 10, z = 1.96: center 0.7167, half width 0.2266.
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(0, 5)[1] > 0.4
    assert wilson_interval(5, 5) == (pytest.approx(0.5655, abs=1e-4), 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mean_interval_by_hand() -> None:
    # mean 1, s = sqrt(2/3), t(0.975, 3) = 3.1824: half width 1.2992.
    mean, low, high = mean_interval([1, 2, 0, 1])
    assert (mean, low, high) == pytest.approx((1.0, -0.2992, 2.2992), abs=1e-4)
    assert mean_interval([2.0]) == (2.0, -2.0, 2.0)


def test_class_discrimination_report_exact(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    store = open_study(copy_study(cd_study_file))
    items = store.items()
    people = store.invite(3)
    # Person 0 right on every item, person 1 right on Grad-CAM items only, person 2 wrong on
    # every item.
    for item in items:
        wrong = next(c for c in item.choices if c != item.truth)
        store.record(people[0], item.id, item.truth)
        store.record(people[1], item.id, item.truth if item.method == "gradcam" else wrong)
        store.record(people[2], item.id, wrong)
    scored = {m.method: m for m in report(store).methods}
    assert (scored["gradcam"].answers, scored["gradcam"].correct) == (9, 6)
    assert (scored["guided-backprop"].answers, scored["guided-backprop"].correct) == (9, 3)
    assert scored["gradcam"].accuracy == pytest.approx(6 / 9)
    assert (scored["gradcam"].low, scored["gradcam"].high) == wilson_interval(6, 9)
    assert scored["gradcam"].agreement == pytest.approx(2 / 3)
    # No simulated participant: the simulated report is empty.
    assert report(store, simulated=True).answers == 0
    assert "3 participants, 18 answers" in report(store).markdown()


def test_trust_report_exact(trust_study_file: Path, copy_study: Callable[[Path], Path]) -> None:
    store = open_study(copy_study(trust_study_file))
    items = store.items()
    assert items and {i.left_model for i in items} <= {"A", "B"}
    token = store.invite(1)[0]
    # "+2 for the left model" on every item: +2 for A where A is left, -2 where B is.
    for item in items:
        store.record(token, item.id, "2")
    expected = [2 if i.left_model == "A" else -2 for i in items]
    (method,) = report(store).methods
    assert method.mean == pytest.approx(sum(expected) / len(expected))
    assert method.prefer_a == pytest.approx(expected.count(2) / len(expected))
    assert method.prefer_b == pytest.approx(expected.count(-2) / len(expected))
    assert [a.score for a in store.answers()] == [
        2 if store.item(a.item).left_model == "A" else -2 for a in store.answers()
    ]


def test_csv_has_every_answer(
    cd_study_file: Path, copy_study: Callable[[Path], Path], tmp_path: Path
) -> None:
    store = open_study(copy_study(cd_study_file))
    token = store.invite(1)[0]
    for item in store.items():
        store.record(token, item.id, item.choices[0])
    target = tmp_path / "answers.csv"
    assert write_csv(store, target) == len(store.items())
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == len(store.items())
    assert {r["participant"] for r in rows} == {spreadsheet_safe(token)}
    by_item = {int(r["item"]): r for r in rows}
    for item in store.items():
        assert by_item[item.id]["answer"] == item.choices[0]
        assert by_item[item.id]["correct"] == str(int(item.choices[0] == item.truth))


FORMULAS = ['=HYPERLINK("http://evil.example","open")', "@SUM(A1:A9)", "+cmd|' /C calc'!A0"]


def test_csv_cells_are_never_formulas(
    cd_study_file: Path,
    trust_study_file: Path,
    copy_study: Callable[[Path], Path],
    tmp_path: Path,
) -> None:
    path = copy_study(cd_study_file)
    # A dataset whose class names are formulas, and a participant token that starts with "-".
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE items SET truth = ?, choices = ?", (FORMULAS[0], json.dumps(FORMULAS[:2]))
        )
        db.execute("UPDATE items SET image = ?", ("-2+3",))
        db.execute("INSERT INTO participants VALUES ('-1+1', 0, 'now')")
    store = open_study(path)
    for token in [*store.invite(1), "-1+1"]:
        for item in store.items():
            store.record(token, item.id, FORMULAS[1])
    trust = open_study(copy_study(trust_study_file))
    for item in trust.items():
        trust.record(trust.invite(1)[0], item.id, "-1")
    for study in (store, trust):
        write_csv(study, tmp_path / "answers.csv")
        rows = list(csv.reader((tmp_path / "answers.csv").open(newline="")))[1:]
        assert rows and [list(r) for r in csv.reader(io.StringIO(answers_csv(study)))][1:] == rows
        for row in rows:
            for cell in row:
                number = re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", cell)
                assert number or not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    rows = list(csv.DictReader((tmp_path / "answers.csv").open(newline="")))
    assert {r["answer"] for r in rows} == {"-1"}  # trust scores stay numbers
    assert {r["score_for_a"] for r in rows} <= {"-1", "1"}
    write_csv(store, tmp_path / "answers.csv")
    rows = list(csv.DictReader((tmp_path / "answers.csv").open(newline="")))
    assert {r["answer"] for r in rows} == {"'" + FORMULAS[1]}
    assert {r["truth"] for r in rows} == {"'" + FORMULAS[0]}
    assert "'-1+1" in {r["participant"] for r in rows}


def test_csv_never_replaces_the_study(
    cd_study_file: Path, copy_study: Callable[[Path], Path], tmp_path: Path
) -> None:
    path = copy_study(cd_study_file)
    store = open_study(path)
    before = path.read_bytes()
    for target in (path, tmp_path / "." / path.name, path.with_name(path.name + "-wal")):
        with pytest.raises(GradCAMError, match="is an input of this command"):
            write_csv(store, target)
    with pytest.raises(GradCAMError, match="is a folder"):
        write_csv(store, tmp_path)
    with pytest.raises(GradCAMError, match="does not exist"):
        write_csv(store, tmp_path / "missing" / "answers.csv")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
