"""Simulated participants, to run a study end to end without people.

A simulated participant sees what a person sees, the stored map, and answers from it alone:

* class discrimination: it picks the category whose annotated boxes hold more of the map's
  mass (the sum of the map over the union of the category's boxes);
* trust: it compares how much of each model's map falls in the predicted category's boxes,
  ``d = share_left - share_right``, and answers +2 / +1 / 0 / -1 / -2 for the left model at
  ``d > 0.2``, ``d > 0.05``, ``|d| <= 0.05``, ... .

With probability ``noise`` it answers at random instead (a lapse). Its answers go through
:meth:`StudyStore.record`, like a person's, and its participants are marked ``simulated``,
so the report scores them apart and labels them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np

from gradcam.study.store import Item, StudyError, StudyStore

__all__ = ["box_mass", "simulate", "simulated_answer"]

# Thresholds on the difference of in-box shares: "clearly" and "slightly" more reliable.
CLEARLY, SLIGHTLY = 0.2, 0.05


def box_mass(evidence: np.ndarray, boxes: Sequence[Sequence[int]]) -> float:
    """Share of the map's total mass inside the union of ``boxes`` (0 for an empty map).

    Examples:
        >>> m = np.zeros((4, 4)); m[0, 0] = 3.0; m[3, 3] = 1.0
        >>> box_mass(m, [[0, 0, 1, 1]])
        0.75
    """
    total = float(evidence.sum())
    if total <= 0:
        return 0.0
    inside = np.zeros(evidence.shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside[max(0, y0) : y1 + 1, max(0, x0) : x1 + 1] = True
    return float(evidence[inside].sum()) / total


def simulated_answer(
    item: Item, maps: Mapping[str, np.ndarray], rng: random.Random, noise: float
) -> str:
    """The answer a simulated participant gives to ``item`` from its maps (slot -> map)."""
    if rng.random() < noise:
        return rng.choice(item.choices)
    boxes = item.info["boxes"]
    if item.left_model is None:
        masses = [box_mass(maps["map"], boxes[c]) for c in item.choices]
        if masses[0] == masses[1]:
            return rng.choice(item.choices)
        return item.choices[int(masses[1] > masses[0])]
    right_model = "B" if item.left_model == "A" else "A"
    target = boxes[item.truth]
    d = box_mass(maps[item.left_model], target) - box_mass(maps[right_model], target)
    value = (
        2
        if d > CLEARLY
        else 1
        if d > SLIGHTLY
        else -2
        if d < -CLEARLY
        else -1
        if d < -SLIGHTLY
        else 0
    )
    return str(value)


def simulate(store: StudyStore, participants: int, *, seed: int = 0, noise: float = 0.1) -> int:
    """Add ``participants`` simulated participants who answer every item; return the answers
    stored.

    Each answers in its own order (:meth:`StudyStore.order`), one committed answer at a time,
    like a person through the web page. The answers depend only on the study, ``seed`` and
    ``noise`` (not on the random tokens), so a rerun gives the same report.

    Examples:
        >>> from gradcam.study import (
        ...     create_class_discrimination, load_study_model, study_images)
        >>> shapes = load_study_model("shapes")
        >>> study = create_class_discrimination(
        ...     "study.db", study_images("synthetic", shapes, count=4), shapes, ["gradcam"])
        >>> simulate(study, 9)  # 9 participants x 4 items
        36
    """
    if not 0.0 <= noise <= 1.0:
        raise StudyError(f"noise must be in [0, 1], got {noise}")
    items = {i.id: i for i in store.items()}
    slots = ("map",) if store.kind == "class-discrimination" else ("A", "B")
    maps = {i: {s: store.map(i, s) for s in slots} for i in items}
    stored = 0
    for number, token in enumerate(store.invite(participants, simulated=True)):
        for item_id in store.order(token):
            # Seeded by participant and item, not by the token's order: the same seed gives
            # the same answers to the same study.
            rng = random.Random(f"{seed}:{number}:{item_id}")
            answer = simulated_answer(items[item_id], maps[item_id], rng, noise)
            stored += store.record(token, item_id, answer)
    return stored
