"""Simulated participants: answers computed from the map, by hand on tiny maps."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gradcam.study import StudyError, open_study, report, simulate
from gradcam.study.simulate import box_mass, simulated_answer
from gradcam.study.store import Item


def _class_item(choices: tuple[str, str]) -> Item:
    boxes = {"ring": [[0, 0, 1, 1]], "star": [[2, 2, 3, 3]]}
    return Item(1, "x", "gradcam", "ring", choices, None, {"boxes": boxes})


def test_box_mass_by_hand() -> None:
    evidence = np.arange(16, dtype=np.float32).reshape(4, 4)  # total 120
    # Rows 0-1, columns 0-1: 0 + 1 + 4 + 5 = 10; two overlapping boxes count once.
    assert box_mass(evidence, [[0, 0, 1, 1]]) == pytest.approx(10 / 120)
    assert box_mass(evidence, [[0, 0, 1, 1], [1, 1, 1, 1]]) == pytest.approx(10 / 120)
    assert box_mass(np.zeros((4, 4)), [[0, 0, 3, 3]]) == 0.0


def test_class_answer_follows_the_mass() -> None:
    evidence = np.zeros((4, 4), dtype=np.float32)
    evidence[3, 3] = 1.0  # all of it in the star's box
    for choices in (("ring", "star"), ("star", "ring")):
        item = _class_item(choices)
        assert simulated_answer(item, {"map": evidence}, random.Random(0), 0.0) == "star"
    # With noise 1 every answer is a coin flip between the two categories.
    picks = [
        simulated_answer(_class_item(("ring", "star")), {"map": evidence}, random.Random(s), 1.0)
        for s in range(200)
    ]
    assert 60 < picks.count("ring") < 140


@pytest.mark.parametrize(
    ("left_share", "right_share", "left", "expected"),
    [
        (0.9, 0.5, "A", "2"),  # d = 0.4 > 0.2: clearly more reliable
        (0.6, 0.5, "A", "1"),  # d = 0.1 > 0.05: slightly
        (0.52, 0.5, "B", "0"),  # |d| = 0.02: equal
        (0.5, 0.6, "B", "-1"),
        (0.2, 0.9, "A", "-2"),
    ],
)
def test_trust_answer_thresholds(
    left_share: float, right_share: float, left: str, expected: str
) -> None:
    box = [[0, 0, 49, 0]]
    left_map = np.zeros((1, 100), dtype=np.float32)
    left_map[0, :50] = left_share
    left_map[0, 50:] = 1 - left_share
    right_map = np.zeros((1, 100), dtype=np.float32)
    right_map[0, :50] = right_share
    right_map[0, 50:] = 1 - right_share
    right = "B" if left == "A" else "A"
    item = Item(
        1, "x", "gradcam", "star", ("2", "1", "0", "-1", "-2"), left, {"boxes": {"star": box}}
    )
    maps = {left: left_map, right: right_map}
    assert simulated_answer(item, maps, random.Random(0), 0.0) == expected


def test_simulate_stores_marked_answers(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    store = open_study(copy_study(cd_study_file))
    assert simulate(store, 4, noise=0.0) == 4 * len(store.items())
    assert all(p.simulated for p in store.participants())
    assert report(store).answers == 0  # people's report: nobody yet
    simulated = report(store, simulated=True)
    assert simulated.simulated and simulated.answers == 4 * len(store.items())
    assert "SIMULATED" in simulated.markdown()
    # Without noise every simulated participant gives the same answer to an item.
    assert all(m.agreement == 1.0 for m in simulated.methods)
    with pytest.raises(StudyError, match="noise"):
        simulate(store, 1, noise=1.5)


def test_simulated_answers_are_reproducible(
    cd_study_file: Path, copy_study: Callable[[Path], Path], tmp_path: Path
) -> None:
    runs = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        store = open_study(copy_study(cd_study_file).replace(folder / "s.db"))
        simulate(store, 3, seed=5, noise=0.5)
        tokens = [p.token for p in store.participants()]
        runs.append(
            sorted((tokens.index(a.participant), a.item, a.answer) for a in store.answers())
        )
    assert runs[0] == runs[1]
