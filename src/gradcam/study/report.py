"""Scoring a study the way section 5 reports it, and exporting every answer.

* Class discrimination (5.1): per method, the share of answers that name the category whose
  map was shown ("human classification accuracy", Table 2), with a Wilson 95% interval;
  per item, the share of its raters who agree with the item's most common answer; and
  Fleiss' kappa of the answers across participants.
* Trust (5.2): per method, the mean signed score for model A (+2 clearly more reliable ...
  -2 clearly less, Table 2's "relative reliability") with a 95% t interval, and the share
  of answers preferring each model.

Answers from simulated participants are scored apart from people's and labelled so.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gradcam.outputs import output_file, spreadsheet_safe, write_atomic
from gradcam.study.store import Answer, Item, StudyStore, study_files

__all__ = [
    "MethodAccuracy",
    "MethodTrust",
    "StudyReport",
    "answers_csv",
    "fleiss_kappa",
    "mean_interval",
    "report",
    "wilson_interval",
    "write_csv",
]


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's score interval for a proportion (95% for the default ``z``).

    With ``p = k / n``: ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; unlike the
    normal approximation it stays inside [0, 1] and is not empty at ``p = 0`` or ``1``.

    Examples:
        >>> [round(v, 4) for v in wilson_interval(8, 10)]
        [0.4902, 0.9433]
    """
    if total <= 0:
        return (0.0, 1.0)
    p = successes / total
    z2 = z * z
    center = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    return (max(0.0, center - half), min(1.0, center + half))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its Student-t interval (``mean ± t·s/sqrt(n)``).

    With one value the interval is the whole trust scale, [-2, 2].

    Examples:
        >>> [round(v, 3) for v in mean_interval([1, 2, 0, 1])]
        [1.0, -0.299, 2.299]
    """
    from scipy import stats

    n = len(values)
    if n == 0:
        return (0.0, -2.0, 2.0)
    mean = sum(values) / n
    if n == 1:
        return (mean, -2.0, 2.0)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa for ``counts[i][j]`` raters who put item ``i`` in category ``j``.

    ``P_i = (Σ_j n_ij² - n_i) / (n_i (n_i - 1))``, ``P̄`` their mean, ``p_j = Σ_i n_ij / Σ_i
    n_i``, ``P_e = Σ_j p_j²`` and ``κ = (P̄ - P_e) / (1 - P_e)``. Items may have different
    numbers of raters (each ``P_i`` uses its own ``n_i``); items with fewer than two raters
    are left out. ``None`` when kappa is undefined: no item with two raters, or every answer
    in one category (``P_e = 1``).

    Examples:
        Wikipedia's worked example: 10 items, 14 raters, 5 categories.

        >>> table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
        ...          [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
        ...          [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
        >>> round(fleiss_kappa(table), 3)
        0.21
    """
    rows = [list(r) for r in counts if sum(r) >= 2]
    if not rows:
        return None
    agreement = [(sum(v * v for v in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows]
    total = sum(sum(r) for r in rows)
    p = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    chance = sum(v * v for v in p)
    if chance >= 1.0 - 1e-12:
        return None
    return (sum(agreement) / len(agreement) - chance) / (1 - chance)


@dataclass(frozen=True)
class MethodAccuracy:
    """Class discrimination results of one method.

    Attributes:
        method: its registry name.
        answers: answers scored.
        correct: answers naming the shown category.
        accuracy: ``correct / answers``.
        low: Wilson 95% lower bound.
        high: Wilson 95% upper bound.
        agreement: mean over items of the share of raters giving the item's most common
            answer.
        kappa: Fleiss' kappa over the method's items (``None`` when undefined).
    """

    method: str
    answers: int
    correct: int
    accuracy: float
    low: float
    high: float
    agreement: float
    kappa: float | None


@dataclass(frozen=True)
class MethodTrust:
    """Trust results of one method: the mean signed score for model A and the shares."""

    method: str
    answers: int
    mean: float
    low: float
    high: float
    prefer_a: float
    equal: float
    prefer_b: float


@dataclass(frozen=True)
class StudyReport:
    """The scores of one group of participants (people, or simulated participants)."""

    kind: str
    simulated: bool
    participants: int
    answers: int
    methods: list[Any]
    items: list[dict[str, Any]]
    models: Mapping[str, str]

    def markdown(self) -> str:
        """The tables, laid out like the paper's section 5 numbers."""
        who = "SIMULATED participants (not people)" if self.simulated else "participants"
        lines = [f"{self.participants} {who}, {self.answers} answers", ""]
        if not self.answers:
            return lines[0] + " (nothing to score yet)"
        if self.kind == "class-discrimination":
            lines += [
                "| method | answers | human classification accuracy | 95% CI (Wilson) | "
                "item agreement | Fleiss' kappa |",
                "|---|---|---|---|---|---|",
            ]
            for m in self.methods:
                kappa = "undefined" if m.kappa is None else f"{m.kappa:.3f}"
                lines.append(
                    f"| {m.method} | {m.answers} | {100 * m.accuracy:.2f}% | "
                    f"{100 * m.low:.1f}-{100 * m.high:.1f}% | {100 * m.agreement:.1f}% | {kappa} |"
                )
        else:
            a, b = self.models.get("A", "A"), self.models.get("B", "B")
            lines += [
                f"Score for model A ({a}) against model B ({b}): +2 clearly more reliable ... "
                "-2 clearly less reliable.",
                "",
                "| method | answers | relative reliability (mean) | 95% CI | prefer A | equal | "
                "prefer B |",
                "|---|---|---|---|---|---|---|",
            ]
            for t in self.methods:
                lines.append(
                    f"| {t.method} | {t.answers} | {t.mean:+.2f} | {t.low:+.2f} to {t.high:+.2f} "
                    f"| {100 * t.prefer_a:.1f}% | {100 * t.equal:.1f}% | {100 * t.prefer_b:.1f}% |"
                )
        return "\n".join(lines)

    def items_markdown(self) -> str:
        """One row per item: its answers and their agreement (and correct answers or the
        mean score for model A)."""
        last = "correct" if self.kind == "class-discrimination" else "mean score for A"
        lines = [
            f"| item | image | method | shown | answers | agreement | {last} |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in self.items:
            agreement = "" if row["agreement"] is None else f"{100 * row['agreement']:.0f}%"
            value = row.get("correct", row.get("mean_score"))
            shown = "" if value is None else f"{value:+.2f}" if "mean_score" in row else value
            lines.append(
                f"| {row['item']} | {row['image']} | {row['method']} | {row['truth']} | "
                f"{row['answers']} | {agreement} | {shown} |"
            )
        return "\n".join(lines)


def _class_methods(items: Sequence[Item], answers: Sequence[Answer]) -> list[MethodAccuracy]:
    by_item: dict[int, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_item[answer.item].append(answer)
    results = []
    for method in dict.fromkeys(i.method for i in items):
        mine = [i for i in items if i.method == method and by_item.get(i.id)]
        given = [a for i in mine for a in by_item[i.id]]
        if not given:
            continue
        correct = sum(bool(a.correct) for a in given)
        low, high = wilson_interval(correct, len(given))
        # The two answers of an item, in the order they were offered, are the categories.
        table = [[sum(a.answer == c for a in by_item[i.id]) for c in i.choices] for i in mine]
        agreement = sum(max(row) / sum(row) for row in table) / len(table)
        results.append(
            MethodAccuracy(
                method, len(given), correct, correct / len(given), low, high, agreement,
                fleiss_kappa(table),
            )
        )  # fmt: skip
    return results


def _trust_methods(items: Sequence[Item], answers: Sequence[Answer]) -> list[MethodTrust]:
    method_of = {i.id: i.method for i in items}
    results = []
    for method in dict.fromkeys(i.method for i in items):
        scores = [a.score for a in answers if method_of[a.item] == method and a.score is not None]
        if not scores:
            continue
        mean, low, high = mean_interval([float(s) for s in scores])
        n = len(scores)
        results.append(
            MethodTrust(
                method, n, mean, low, high,
                sum(s > 0 for s in scores) / n, sum(s == 0 for s in scores) / n,
                sum(s < 0 for s in scores) / n,
            )
        )  # fmt: skip
    return results


def _item_rows(items: Sequence[Item], answers: Sequence[Answer]) -> list[dict[str, Any]]:
    by_item: dict[int, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_item[answer.item].append(answer)
    rows = []
    for item in items:
        given = by_item.get(item.id, [])
        counts = Counter(a.answer for a in given)
        top = counts.most_common(1)[0][1] if counts else 0
        row: dict[str, Any] = {
            "item": item.id,
            "image": item.image,
            "method": item.method,
            "truth": item.truth,
            "answers": len(given),
            "agreement": top / len(given) if given else None,
        }
        if item.left_model is None:
            row["correct"] = sum(bool(a.correct) for a in given)
        else:
            row["mean_score"] = sum(a.score or 0 for a in given) / len(given) if given else None
        rows.append(row)
    return rows


def report(store: StudyStore, *, simulated: bool = False) -> StudyReport:
    """Score the answers of people (or, with ``simulated``, of simulated participants).

    Examples:
        >>> from gradcam.study import (
        ...     create_class_discrimination, load_study_model, simulate, study_images)
        >>> shapes = load_study_model("shapes")
        >>> study = create_class_discrimination(
        ...     "study.db", study_images("synthetic", shapes, count=4), shapes, ["gradcam"])
        >>> simulate(study, 9)
        36
        >>> print(report(study, simulated=True).markdown())
        9 SIMULATED participants (not people), 36 answers
        <BLANKLINE>
        | method | answers | human classification accuracy | ... | Fleiss' kappa |
        |---|---|---|---|---|---|
        | gradcam | 36 | 75.00% | 58.9-86.2% | 94.4% | 0.775 |
    """
    group = {p.token for p in store.participants() if p.simulated == simulated}
    answers = [a for a in store.answers() if a.participant in group]
    items = store.items()
    methods: list[Any]
    if store.kind == "class-discrimination":
        methods = _class_methods(items, answers)
        models: Mapping[str, str] = {"model": str(store.config.get("model", ""))}
    else:
        methods = _trust_methods(items, answers)
        models = dict(store.config.get("models", {}))
    active = {a.participant for a in answers}
    return StudyReport(
        store.kind, simulated, len(active), len(answers), methods, _item_rows(items, answers),
        models,
    )  # fmt: skip


CSV_FIELDS = (
    "participant", "simulated", "item", "image", "method", "truth", "answer", "correct",
    "score_for_a", "left_model", "answered",
)  # fmt: skip


def answers_csv(store: StudyStore) -> str:
    """Every answer (people's and simulated) as CSV text, one row per answer.

    Every text cell goes through :func:`gradcam.outputs.spreadsheet_safe`: a class name or
    token that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
    leading single quote, so a spreadsheet shows it and never runs it as a formula.
    """
    return _answers_csv(store)[0]


def _answers_csv(store: StudyStore) -> tuple[str, int]:
    # Answers first: a participant invited while this runs is in the later reads.
    answers = store.answers()
    items = {i.id: i for i in store.items()}
    simulated = {p.token: p.simulated for p in store.participants()}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for a in answers:
        item = items[a.item]
        row = [
            a.participant, int(simulated[a.participant]), a.item, item.image, item.method,
            item.truth, a.answer, "" if a.correct is None else int(a.correct),
            "" if a.score is None else a.score, item.left_model or "", a.answered,
        ]  # fmt: skip
        writer.writerow([spreadsheet_safe(cell) for cell in row])
    return buffer.getvalue(), len(answers)


def write_csv(store: StudyStore, path: str | os.PathLike[str]) -> int:
    """Write every answer (:func:`answers_csv`) to ``path``; return the number of rows.

    ``path`` is checked first (never the study nor its side files; its folder must exist
    and be writable), and the file is written through :func:`gradcam.outputs.write_atomic`,
    so a reader never sees half a file.

    Raises:
        GradCAMError: ``path`` is the study, a folder, in a missing folder, or cannot be
            written.
    """
    target = output_file(path, inputs=study_files(store.path))
    text, rows = _answers_csv(store)
    write_atomic(target, lambda tmp: tmp.write_text(text, newline=""))
    return rows
