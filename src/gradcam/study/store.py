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
import re
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
from gradcam.outputs import output_file, write_atomic

__all__ = [
    "DEFAULT_PORT",
    "FORMAT",
    "KINDS",
    "TRUST_SCALE",
    "Answer",
    "AnswerNotSaved",
    "AnswerRefused",
    "Item",
    "Participant",
    "StudyError",
    "StudyStore",
    "StudyUnavailable",
    "new_study_path",
    "open_study",
    "png_bytes",
    "study_files",
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


class AnswerRefused(StudyError):
    """An answer is not one the participant can give (unknown token or item, not a choice).

    Its message names only what the participant sent, never the study's file, so the server
    shows it to them.
    """


class StudyUnavailable(StudyError):
    """An opened study cannot be read just now: deleted, replaced, corrupted or locked while
    in use (the server answers 503 and never creates a new file in its place)."""


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


def _read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """A connection to the study at ``path``; only ``create`` may make a new file.

    An existing study is opened read-write without create (``mode=rw``), so a study deleted
    while served is an error, not a new empty file in its place. On a read-only file system
    it is opened ``immutable``: nobody can change it there, and SQLite could not make the
    WAL's side files it otherwise needs to read.
    """
    mode = "rwc" if create else "ro&immutable=1" if _read_only_file_system(path) else "rw"
    # Autocommit mode: transactions are explicit, so none is left open by accident.
    connection = sqlite3.connect(
        f"{Path(path).absolute().as_uri()}?mode={mode}", timeout=60.0, isolation_level=None,
        uri=True,
    )  # fmt: skip
    connection.execute("PRAGMA busy_timeout = 60000")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def study_files(path: str | os.PathLike[str]) -> list[Path]:
    """The study file and the side files SQLite keeps beside it: never an output."""
    study = Path(path)
    return [study, *(study.with_name(study.name + end) for end in ("-wal", "-shm", "-journal"))]


def new_study_path(path: str | os.PathLike[str]) -> Path:
    """Check, before any work, that a new study can be written at ``path``.

    Raises:
        GradCAMError: ``path`` exists (a study is never overwritten), is a folder, lies under
            a file or in a missing folder, or cannot be written.

    Examples:
        >>> new_study_path("new.db")
        PosixPath('new.db')
    """
    target = output_file(path)
    if target.exists():
        raise StudyError(f"{target}: already exists; a study is never overwritten")
    return target


def _unwritable(path: Path) -> str | None:
    """Why answers and participants cannot be stored in the study at ``path``, or ``None``."""
    # The folder too: SQLite keeps the WAL's side files beside the study.
    for where in (path, path.parent):
        if not os.access(where, os.W_OK):
            if _read_only_file_system(where):
                return "it lies on a read-only file system"
            return f"{where} cannot be written (permission denied)"
    return None


# The columns each table must have (a study written by gradcam-study/1 has exactly these).
_COLUMNS = {
    "meta": ("key", "value"),
    "items": ("id", "image", "method", "truth", "choices", "left_model", "info"),
    "pictures": ("item", "slot", "png", "sha256", "map"),
    "participants": ("token", "simulated", "created"),
    "answers": ("participant", "item", "answer", "correct", "score", "answered"),
}
_TRUST_CHOICES = {str(value) for value, _ in TRUST_SCALE}


def _parse_item(row: Sequence[Any], kind: str) -> Item:
    """An :class:`Item` from its row, or a ``ValueError`` naming what is wrong with it."""
    number, image, method, truth, choices_text, left_model, info_text = row
    try:
        choices = json.loads(choices_text)
    except (ValueError, TypeError):
        choices = None
    try:
        info = json.loads(info_text)
    except (ValueError, TypeError):
        info = None
    texts = isinstance(choices, list) and all(isinstance(c, str) for c in choices)
    if not texts or len(choices) < 2 or len(set(choices)) != len(choices):
        raise ValueError(f"item {number}: its choices are not a list of distinct texts")
    if not isinstance(info, dict):
        raise ValueError(f"item {number}: its info is not a JSON object")
    if not all(isinstance(v, str) for v in (image, method, truth)):
        raise ValueError(f"item {number}: its image, method or shown category is not text")
    if kind == "trust":
        if left_model not in ("A", "B") or not set(choices) <= _TRUST_CHOICES:
            raise ValueError(f"item {number}: not a trust item (side {left_model!r})")
    elif truth not in choices or left_model is not None:
        raise ValueError(f"item {number}: its shown category {truth!r} is not a choice")
    return Item(int(number), image, method, truth, tuple(choices), left_model, info)


class StudyStore:
    """A study file, opened for reading, answering and inviting.

    Each call opens its own short-lived connection, so one store can serve many threads
    (the web server's worker threads) and many processes at once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._meta = self._check()
        self.kind: Kind = "trust" if self._meta["kind"] == "trust" else "class-discrimination"
        self.seed = int(self._meta["seed"])
        self.question: str = self._meta["question"]
        self.config: Mapping[str, Any] = json.loads(self._meta["config"])

    def _check(self) -> dict[str, str]:
        """Check the whole study before any work and return its ``meta`` rows.

        The one check of every command that opens a study (``serve``, ``invite``,
        ``report``): a missing or foreign file, a missing table or column, missing or
        malformed meta (format, kind, seed, question, config, owner token), an item whose
        choices, info or side cannot be read, a picture missing, an answer of an unknown item
        or participant. One scan of each table; no picture is decoded.

        Raises:
            StudyError: naming the study and what is wrong with it.
        """
        where = self.path
        if not where.is_file():
            raise StudyError(f"{where}: no such study file")
        try:
            with open(where, "rb") as handle:
                head = handle.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StudyError(f"{where}: cannot read the study ({exc.strerror})") from None
        if head != _SQLITE_MAGIC:
            raise StudyError(f"{where}: not a gradcam study (not an SQLite database)")
        try:
            db = _connect(where)
            try:
                return self._check_tables(db)
            finally:
                db.close()
        except sqlite3.OperationalError as exc:
            # Cannot open or read it (locked, no permission): it may well be a study.
            raise StudyError(f"{where}: cannot read the study ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"{where}: damaged study ({exc})") from None

    def _check_tables(self, db: sqlite3.Connection) -> dict[str, str]:
        where = self.path
        columns = {
            table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for table in _COLUMNS
        }
        if not columns["meta"]:
            raise StudyError(f"{where}: not a gradcam study (no meta table)")
        rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if rows.get("format") != FORMAT:
            found = rows.get("format", "none")
            raise StudyError(f"{where}: not a gradcam study (format {found!r}, need {FORMAT!r})")

        def damaged(what: str) -> StudyError:
            return StudyError(f"{where}: damaged study: {what}")

        for table, needed in _COLUMNS.items():
            if not columns[table]:
                raise damaged(f"no {table} table")
            missing = [c for c in needed if c not in columns[table]]
            if missing:
                raise damaged(f"its {table} table has no column {missing[0]!r}")
        if rows.get("kind") not in KINDS:
            raise StudyError(f"{where}: unknown study kind {rows.get('kind')!r}")
        if not re.fullmatch(r"-?[0-9]{1,20}", str(rows.get("seed", ""))):
            raise damaged("no seed (a whole number)")
        if not isinstance(rows.get("question"), str) or not rows["question"].strip():
            raise damaged("no question")
        try:
            config = json.loads(rows.get("config", ""))
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise damaged("its config is not a JSON object")
        if not isinstance(rows.get("owner_token"), str) or len(rows["owner_token"]) < 16:
            raise damaged("no owner token")
        items = db.execute(
            "SELECT id, image, method, truth, choices, left_model, info FROM items"
        ).fetchall()
        if not items:
            raise damaged("no items")
        try:
            parsed = [_parse_item(row, rows["kind"]) for row in items]
        except (ValueError, TypeError) as exc:
            raise damaged(str(exc)) from None
        slots = set(db.execute("SELECT item, slot FROM pictures").fetchall())
        for item in parsed:
            for slot in ("map",) if item.left_model is None else ("A", "B"):
                if (item.id, slot) not in slots:
                    raise damaged(f"item {item.id} has no picture {slot!r}")
        orphans = db.execute(
            "SELECT COUNT(*) FROM answers WHERE item NOT IN (SELECT id FROM items) "
            "OR participant NOT IN (SELECT token FROM participants) "
            "OR typeof(correct) NOT IN ('integer', 'null') "
            "OR typeof(score) NOT IN ('integer', 'null')"
        ).fetchone()[0]
        if orphans:
            raise damaged(f"{orphans} answers of unknown items or participants, or not scores")
        return rows

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one short read or write; any SQLite error while the study is in
        use (deleted, replaced, corrupted, locked) becomes :class:`StudyUnavailable`."""
        try:
            connection = _connect(self.path)
        except sqlite3.Error as exc:
            raise StudyUnavailable(f"{self.path}: cannot open the study ({exc})") from None
        try:
            yield connection
        except sqlite3.Error as exc:
            raise StudyUnavailable(f"{self.path}: cannot use the study ({exc})") from None
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
        try:
            return [_parse_item(row, self.kind) for row in rows]
        except (ValueError, TypeError) as exc:
            # Checked when opened: it was changed since, by something else.
            raise StudyUnavailable(f"{self.path}: damaged study: {exc}") from None

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
            AnswerRefused: for an unknown participant or item, or an answer that is not one
                of the item's choices.
            AnswerNotSaved: a failed write (disk full, read-only file, the study deleted),
                in which case nothing of the answer is stored.
        """
        if self.participant(token) is None:
            raise AnswerRefused("unknown participant token")
        item = next((i for i in self.items() if i.id == item_id), None)
        if item is None:
            raise AnswerRefused(f"no item {item_id} in this study")
        if item_id not in self.order(token):
            raise AnswerRefused(f"item {item_id} is not one of this participant's questions")
        if answer not in item.choices:
            raise AnswerRefused(f"item {item_id}: {answer!r} is not one of its answers")
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
        except StudyUnavailable as exc:
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


def open_study(path: str | os.PathLike[str], *, writable: bool = False) -> StudyStore:
    """Open an existing study file, checked whole before any work (``serve``, ``invite`` and
    ``report`` all open it here); ``writable`` also checks that answers and participants can
    be stored in it (``serve``, ``invite``).

    Raises:
        StudyError: the file is missing, is not an SQLite database, is not a study, is
            damaged (a missing table, seed, owner token; an unreadable item), or, with
            ``writable``, cannot be written (a read-only file system, no permission).
    """
    where = Path(path)
    reason = _unwritable(where) if writable and where.is_file() else None
    if reason is not None:
        raise StudyError(f"{where}: answers and participants cannot be stored in it: {reason}")
    return StudyStore(where)


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
    """Write a new study file with its items in one go; the file appears only when complete
    (written through :func:`gradcam.outputs.write_atomic`).

    Raises:
        GradCAMError: when ``path`` exists already (a study is never overwritten), has no
            items, or cannot be written.
    """
    target = new_study_path(path)

    def write(partial: Path) -> None:
        db = _connect(partial, create=True)
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

    if not items:
        raise StudyError(f"{target}: a study needs at least one item")
    try:
        write_atomic(target, write)
    except sqlite3.Error as exc:
        raise StudyError(f"{target}: cannot write the study ({exc})") from None
    return StudyStore(target)
