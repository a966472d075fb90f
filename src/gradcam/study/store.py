"""The study file: one SQLite database (WAL mode) holding the items, their pictures, the
participants and every answer.

A study is written once by :mod:`gradcam.study.create` and then only gains participants and
answers. Every write is one short transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) with
``synchronous=FULL``, so a process killed at any moment leaves either the whole answer or
none of it. An answer is keyed by ``(participant, item)``: a resubmitted answer (a reloaded
form, a retried request) finds the first one and changes nothing.

Examples:
    >>> from gradcam.study import create_class_discrimination, load_study_model, study_images
    >>> shapes = load_study_model("shapes")
    >>> _ = create_class_discrimination(
    ...     "study.db", study_images("synthetic", shapes, count=4), shapes, ["gradcam"])
    >>> store = open_study("study.db")
    >>> store.kind, len(store.items())
    ('class-discrimination', 4)
    >>> token = store.invite(1)[0]
    >>> item = store.items()[0]
    >>> answer = item.choices[0]
    >>> store.record(token, item.id, answer), store.record(token, item.id, answer)  # kept once
    (True, False)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gradcam.errors import GradCAMError

__all__ = [
    "DEFAULT_PORT",
    "FORMAT",
    "KINDS",
    "TRUST_SCALE",
    "Answer",
    "AnswerNotSaved",
    "Item",
    "Participant",
    "StudyError",
    "StudyStore",
    "open_study",
    "png_bytes",
]

DEFAULT_PORT = 7870
"""The port ``gradcam study serve`` listens on, and ``invite`` links point to, by default."""

FORMAT = "gradcam-study/1"
"""The value of ``meta.format`` that marks a file as a study of this version."""

Kind = Literal["class-discrimination", "trust"]
KINDS: tuple[Kind, ...] = ("class-discrimination", "trust")
"""The two studies of section 5: 5.1 (class discrimination) and 5.2 (trust)."""

TRUST_SCALE: tuple[tuple[int, str], ...] = (
    (2, "the left model is clearly more reliable"),
    (1, "the left model is slightly more reliable"),
    (0, "both are equally reliable"),
    (-1, "the left model is slightly less reliable"),
    (-2, "the left model is clearly less reliable"),
)
"""Section 5.2's 5-point scale, as the participant reads it: the value is for the left model."""

_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    image TEXT NOT NULL,
    method TEXT NOT NULL,
    truth TEXT NOT NULL,
    choices TEXT NOT NULL,
    left_model TEXT,
    info TEXT NOT NULL
);
CREATE TABLE pictures (
    item INTEGER NOT NULL REFERENCES items(id),
    slot TEXT NOT NULL,
    png BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    map BLOB NOT NULL,
    PRIMARY KEY (item, slot)
);
CREATE TABLE participants (
    token TEXT PRIMARY KEY,
    simulated INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE answers (
    participant TEXT NOT NULL REFERENCES participants(token),
    item INTEGER NOT NULL REFERENCES items(id),
    answer TEXT NOT NULL,
    correct INTEGER,
    score INTEGER,
    answered TEXT NOT NULL,
    PRIMARY KEY (participant, item)
);
"""


class StudyError(GradCAMError):
    """A study file cannot be created, opened or answered; the message names what was wrong."""


class AnswerNotSaved(StudyError):
    """An answer could not be written (full disk, read-only file); nothing of it was stored."""


@dataclass(frozen=True)
class Item:
    """One question of a study.

    Attributes:
        id: its number in the study (1-based).
        image: the name of the photo it shows.
        method: the registry name of the method whose maps it shows.
        truth: class discrimination: the category whose map is shown; trust: the class both
            models predicted (shown to the participant).
        choices: the answers offered, in the order shown (the two categories, or the values
            of :data:`TRUST_SCALE` as text).
        left_model: trust: ``"A"`` or ``"B"``, the model whose map is on the left.
        info: what the simulation and the report need (boxes, model names, category ids).
    """

    id: int
    image: str
    method: str
    truth: str
    choices: tuple[str, ...]
    left_model: str | None
    info: Mapping[str, Any]


@dataclass(frozen=True)
class Participant:
    """A link holder: an unguessable token, and whether answers come from a simulation."""

    token: str
    simulated: bool


@dataclass(frozen=True)
class Answer:
    """One stored answer.

    Attributes:
        participant: the participant's token.
        item: the item's id.
        answer: the choice, as offered.
        correct: class discrimination: whether the answer names the shown category.
        score: trust: the signed score for model A (+2 ... -2).
        answered: UTC time of the commit, ISO 8601.
    """

    participant: str
    item: int
    answer: str
    correct: bool | None
    score: int | None
    answered: str


def png_bytes(picture: Any) -> bytes:
    """A PIL image as PNG bytes (deterministic for the same pixels)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float16), allow_pickle=False)
    return buffer.getvalue()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit, so none is left open by accident.
    connection = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 60000")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


class StudyStore:
    """A study file, opened for reading, answering and inviting.

    Each call opens its own short-lived connection, so one store can serve many threads
    (the web server's worker threads) and many processes at once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._meta = self._read_meta()
        self.kind: Kind = "trust" if self._meta["kind"] == "trust" else "class-discrimination"
        self.seed = int(self._meta["seed"])
        self.question: str = self._meta["question"]
        self.config: Mapping[str, Any] = json.loads(self._meta["config"])

    def _read_meta(self) -> dict[str, str]:
        where = self.path
        if not where.is_file():
            raise StudyError(f"{where}: no such study file")
        with open(where, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
        if head != _SQLITE_MAGIC:
            raise StudyError(f"{where}: not a gradcam study (not an SQLite database)")
        try:
            with self._connection() as db:
                rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"{where}: not a gradcam study ({exc})") from None
        if rows.get("format") != FORMAT:
            found = rows.get("format", "none")
            raise StudyError(f"{where}: not a gradcam study (format {found!r}, need {FORMAT!r})")
        if rows.get("kind") not in KINDS:
            raise StudyError(f"{where}: unknown study kind {rows.get('kind')!r}")
        return rows

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        connection = _connect(self.path)
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed whole on success, rolled back whole on any error."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                # Some errors (SQLITE_FULL) have rolled the transaction back already.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @property
    def owner_token(self) -> str:
        """The token that opens the report pages of ``gradcam study serve``."""
        return self._meta["owner_token"]

    def items(self) -> list[Item]:
        """Every item, by id."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT id, image, method, truth, choices, left_model, info FROM items ORDER BY id"
            ).fetchall()
        return [
            Item(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], json.loads(r[6]))
            for r in rows
        ]

    def item(self, item_id: int) -> Item:
        """The item ``item_id``.

        Raises:
            StudyError: when the study has no such item.
        """
        for item in self.items():
            if item.id == item_id:
                return item
        raise StudyError(f"{self.path}: no item {item_id}")

    def picture(self, item_id: int, slot: str) -> bytes:
        """The stored PNG of an item's slot (``"map"``; trust: ``"A"`` or ``"B"``)."""
        with self._connection() as db:
            row = db.execute(
                "SELECT png FROM pictures WHERE item = ? AND slot = ?", (item_id, slot)
            ).fetchone()
        if row is None:
            raise StudyError(f"{self.path}: item {item_id} has no picture {slot!r}")
        return bytes(row[0])

    def pictures(self) -> list[tuple[int, str, bytes, str]]:
        """``(item, slot, png, sha256)`` of every stored picture."""
        with self._connection() as db:
            rows = db.execute("SELECT item, slot, png, sha256 FROM pictures").fetchall()
        return [(r[0], r[1], bytes(r[2]), r[3]) for r in rows]

    def map(self, item_id: int, slot: str) -> np.ndarray:
        """The stored map behind a picture: (H, W) non-negative evidence at the photo's size."""
        with self._connection() as db:
            row = db.execute(
                "SELECT map FROM pictures WHERE item = ? AND slot = ?", (item_id, slot)
            ).fetchone()
        if row is None:
            raise StudyError(f"{self.path}: item {item_id} has no map {slot!r}")
        array: np.ndarray = np.load(io.BytesIO(bytes(row[0])), allow_pickle=False)
        return array.astype(np.float32)

    def invite(self, count: int, *, simulated: bool = False) -> list[str]:
        """Add ``count`` participants and return their tokens (128 random bits each)."""
        if count < 1:
            raise StudyError(f"the number of participants must be at least 1, got {count}")
        tokens = [secrets.token_urlsafe(16) for _ in range(count)]
        with self._write() as db:
            db.executemany(
                "INSERT INTO participants (token, simulated, created) VALUES (?, ?, ?)",
                [(t, int(simulated), _now()) for t in tokens],
            )
        return tokens

    def participant(self, token: str) -> Participant | None:
        """The participant with this token, or ``None`` for an unknown token."""
        with self._connection() as db:
            row = db.execute(
                "SELECT token, simulated FROM participants WHERE token = ?", (token,)
            ).fetchone()
        return None if row is None else Participant(row[0], bool(row[1]))

    def participants(self) -> list[Participant]:
        """Every participant, in the order they were invited."""
        with self._connection() as db:
            rows = db.execute("SELECT token, simulated FROM participants ORDER BY rowid").fetchall()
        return [Participant(r[0], bool(r[1])) for r in rows]

    def order(self, token: str) -> list[int]:
        """The item ids this participant sees, in their order: a permutation seeded by the
        study's seed and the token, so it is the same on every visit and for every server.

        In a study created with ``each_image_once``, a participant sees one item per photo:
        participant number ``p`` (in invitation order) gets item ``(p + i) mod k`` of the
        ``k`` items of photo ``i``, so methods rotate over photos and participants (a Latin
        square) and nobody sees a photo explained twice.
        """
        items = self.items()
        if self.config.get("each_image_once"):
            with self._connection() as db:
                row = db.execute(
                    "SELECT rowid FROM participants WHERE token = ?", (token,)
                ).fetchone()
            number = int(row[0]) if row else 0
            photos: dict[str, list[int]] = {}
            for item in items:
                photos.setdefault(item.image, []).append(item.id)
            ids = [group[(number + i) % len(group)] for i, group in enumerate(photos.values())]
        else:
            ids = [item.id for item in items]
        digest = hashlib.sha256(f"{self.seed}:{token}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(ids)
        return ids

    def answered(self, token: str) -> set[int]:
        """The ids of the items this participant has answered."""
        with self._connection() as db:
            rows = db.execute("SELECT item FROM answers WHERE participant = ?", (token,))
            return {int(r[0]) for r in rows.fetchall()}

    def next_item(self, token: str) -> tuple[Item | None, int, int]:
        """``(next unanswered item or None when done, answered so far, total)``."""
        done = self.answered(token)
        order = self.order(token)
        pending = [i for i in order if i not in done]
        item = self.item(pending[0]) if pending else None
        return item, len(done), len(order)

    def record(self, token: str, item_id: int, answer: str) -> bool:
        """Store one answer in its own transaction; ``False`` when it was already answered.

        The first answer to an item stands: a second submission (a reload, a retry after a
        lost response) is not stored again and does not replace the first.

        Raises:
            StudyError: for an unknown participant or item, an answer that is not one of the
                item's choices, or a failed write (disk full, read-only file), in which case
                nothing of the answer is stored.
        """
        if self.participant(token) is None:
            raise StudyError("unknown participant token")
        item = self.item(item_id)
        if item_id not in self.order(token):
            raise StudyError(f"item {item_id} is not one of this participant's questions")
        if answer not in item.choices:
            raise StudyError(f"item {item_id}: {answer!r} is not one of its answers")
        correct: int | None = None
        score: int | None = None
        if self.kind == "class-discrimination":
            correct = int(answer == item.truth)
        else:
            left = int(answer)
            score = left if item.left_model == "A" else -left
        try:
            with self._write() as db:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO answers (participant, item, answer, correct, score, "
                    "answered) VALUES (?, ?, ?, ?, ?, ?)",
                    (token, item_id, answer, correct, score, _now()),
                )
                return cursor.rowcount == 1
        except sqlite3.Error as exc:
            raise AnswerNotSaved(
                f"the answer could not be saved ({exc}); nothing was stored"
            ) from None

    def answers(self) -> list[Answer]:
        """Every stored answer, in the order they were committed."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT participant, item, answer, correct, score, answered FROM answers "
                "ORDER BY rowid"
            ).fetchall()
        return [
            Answer(r[0], r[1], r[2], None if r[3] is None else bool(r[3]), r[4], r[5]) for r in rows
        ]


def open_study(path: str | os.PathLike[str]) -> StudyStore:
    """Open an existing study file.

    Raises:
        StudyError: when the file is missing, is not an SQLite database, or is not a study.
    """
    return StudyStore(path)


@dataclass(frozen=True)
class NewItem:
    """An item to write: what :class:`Item` holds, and its pictures ``slot -> (png, map)``."""

    image: str
    method: str
    truth: str
    choices: Sequence[str]
    left_model: str | None
    info: Mapping[str, Any]
    pictures: Mapping[str, tuple[bytes, np.ndarray]]


def write_study(
    path: str | os.PathLike[str],
    kind: Kind,
    items: Sequence[NewItem],
    *,
    seed: int,
    question: str,
    config: Mapping[str, Any],
) -> StudyStore:
    """Write a new study file with its items in one go; the file appears only when complete.

    Raises:
        StudyError: when ``path`` exists already (a study is never overwritten) or cannot be
            written.
    """
    target = Path(path)
    if target.exists():
        raise StudyError(f"{target}: already exists; a study is never overwritten")
    partial = target.with_name(target.name + ".partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    try:
        db = _connect(partial)
        try:
            db.executescript(_SCHEMA)
            db.execute("BEGIN")
            meta = {
                "format": FORMAT,
                "kind": kind,
                "seed": str(seed),
                "question": question,
                "config": json.dumps(dict(config), sort_keys=True),
                "owner_token": secrets.token_urlsafe(16),
                "created": _now(),
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
            for number, item in enumerate(items, start=1):
                db.execute(
                    "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        number, item.image, item.method, item.truth,
                        json.dumps(list(item.choices)), item.left_model,
                        json.dumps(dict(item.info), sort_keys=True),
                    ),
                )  # fmt: skip
                for slot, (png, evidence) in item.pictures.items():
                    db.execute(
                        "INSERT INTO pictures VALUES (?, ?, ?, ?, ?)",
                        (number, slot, png, hashlib.sha256(png).hexdigest(), _npy_bytes(evidence)),
                    )
            db.execute("COMMIT")
            # WAL is a property of the file: every later connection uses it.
            db.execute("PRAGMA journal_mode = WAL")
        finally:
            db.close()
        partial.replace(target)
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise StudyError(f"{target}: cannot write the study ({exc})") from None
    return StudyStore(target)
