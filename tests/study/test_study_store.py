"""The study file: reproducible items, idempotent answers, per-participant order, bad files
and failed writes."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gradcam.errors import GradCAMError
from gradcam.models import LoadedModel
from gradcam.study import StudyError, create_class_discrimination, open_study, study_images
from gradcam.study.store import FORMAT, AnswerNotSaved, StudyUnavailable


def test_pictures_are_stored_with_their_hashes(cd_study_file: Path) -> None:
    store = open_study(cd_study_file)
    pictures = store.pictures()
    assert len(pictures) == len(store.items()) == 6
    for _, _, png, digest in pictures:
        assert png.startswith(b"\x89PNG") and hashlib.sha256(png).hexdigest() == digest
    with sqlite3.connect(cd_study_file) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert dict(db.execute("SELECT key, value FROM meta"))["format"] == FORMAT


def test_answer_is_idempotent(cd_study_file: Path, copy_study: Callable[[Path], Path]) -> None:
    store = open_study(copy_study(cd_study_file))
    token = store.invite(1)[0]
    item = store.items()[0]
    assert store.record(token, item.id, item.choices[0]) is True
    # A resubmission, even with another answer, neither duplicates nor replaces the first.
    assert store.record(token, item.id, item.choices[1]) is False
    assert [(a.item, a.answer) for a in store.answers()] == [(item.id, item.choices[0])]


def test_order_is_seeded_per_participant(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    store = open_study(copy_study(cd_study_file))
    tokens = store.invite(8)
    orders = [store.order(t) for t in tokens]
    ids = sorted(i.id for i in store.items())
    assert all(sorted(o) == ids for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # 8 participants: not all in one order
    assert open_study(store.path).order(tokens[0]) == orders[0]  # same on every visit
    # A returning participant continues at the first unanswered item of their order.
    store.record(tokens[0], orders[0][0], store.item(orders[0][0]).choices[0])
    item, done, total = store.next_item(tokens[0])
    assert item is not None and (item.id, done, total) == (orders[0][1], 1, 6)


def test_tokens_are_unguessable(cd_study_file: Path, copy_study: Callable[[Path], Path]) -> None:
    store = open_study(copy_study(cd_study_file))
    tokens = store.invite(50)
    assert len(set(tokens)) == 50 and all(len(t) >= 22 for t in tokens)  # 128 random bits
    assert store.owner_token not in tokens


def test_bad_answers(cd_study_file: Path, copy_study: Callable[[Path], Path]) -> None:
    store = open_study(copy_study(cd_study_file))
    token = store.invite(1)[0]
    with pytest.raises(StudyError, match="unknown participant"):
        store.record("not-a-token", 1, store.item(1).choices[0])
    with pytest.raises(StudyError, match="not one of its answers"):
        store.record(token, 1, "giraffe")
    with pytest.raises(StudyError, match="no item 99"):
        store.record(token, 99, "ring")
    with pytest.raises(StudyError, match="at least 1"):
        store.invite(0)
    assert store.answers() == []


def test_not_a_study(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("hello")
    with pytest.raises(StudyError, match="not an SQLite database"):
        open_study(text)
    with pytest.raises(StudyError, match="no such study file"):
        open_study(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # opening never creates a file
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StudyError, match="not a gradcam study"):
        open_study(other)
    assert issubclass(StudyError, GradCAMError)


def test_full_disk_keeps_nothing_half_written(
    cd_study_file: Path, copy_study: Callable[[Path], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradcam.study.store as store_module

    store = open_study(copy_study(cd_study_file))
    tokens = store.invite(40)
    connect = store_module._connect

    def full(path: Path, **kwargs: Any) -> sqlite3.Connection:
        # The database may not grow by a single page: SQLite fails the write with
        # SQLITE_FULL, exactly as on a full disk.
        db = connect(path, **kwargs)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(store_module, "_connect", full)
    stored, refused = 0, 0
    for token in tokens:
        for item in store.items():
            try:
                stored += store.record(token, item.id, item.choices[0])
            except AnswerNotSaved as exc:
                assert "full" in str(exc)
                refused += 1
    assert refused > 0
    monkeypatch.setattr(store_module, "_connect", connect)
    # Every answer reported stored is there, whole; none of the refused ones is.
    answers = store.answers()
    assert len(answers) == stored
    assert all(a.answer == store.item(a.item).choices[0] for a in answers)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_failed_creation_leaves_no_file(
    shapes: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradcam.study.store as store_module

    connect = store_module._connect

    def tiny(path: Path, **kwargs: Any) -> sqlite3.Connection:
        db = connect(path, **kwargs)
        db.execute("PRAGMA max_page_count = 8")  # a disk that fills after 32 KiB
        return db

    monkeypatch.setattr(store_module, "_connect", tiny)
    images = study_images("synthetic", shapes, count=2)
    with pytest.raises(StudyError, match="cannot write the study"):
        create_class_discrimination(tmp_path / "s.db", images, shapes, ["gradcam"])
    assert list(tmp_path.iterdir()) == []


def test_each_image_once_rotates_methods(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    path = copy_study(cd_study_file)
    with sqlite3.connect(path) as db:
        config = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        config["each_image_once"] = True
        db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config),))
    store = open_study(path)
    items = {i.id: i for i in store.items()}  # 3 photos x 2 methods
    tokens = store.invite(4)
    seen = [[items[i] for i in store.order(t)] for t in tokens]
    for shown in seen:
        assert len(shown) == 3 and len({i.image for i in shown}) == 3
    # Two consecutive participants see every item once between them; the next two again.
    assert sorted(i.id for i in seen[0] + seen[1]) == sorted(items)
    assert sorted(i.id for i in seen[2] + seen[3]) == sorted(items)
    # A participant answers only their own questions.
    other = next(i for i in items if i not in store.order(tokens[0]))
    with pytest.raises(StudyError, match="not one of this participant's questions"):
        store.record(tokens[0], other, items[other].choices[0])
    for item_id in store.order(tokens[0]):
        store.record(tokens[0], item_id, items[item_id].choices[0])
    assert store.next_item(tokens[0]) == (None, 3, 3)


DAMAGE = {
    "no owner token": "DELETE FROM meta WHERE key = 'owner_token'",
    "no seed": "DELETE FROM meta WHERE key = 'seed'",
    "config is not a JSON object": "UPDATE meta SET value = '[1' WHERE key = 'config'",
    "no question": "UPDATE meta SET value = ' ' WHERE key = 'question'",
    "item 2: its choices are not a list": "UPDATE items SET choices = '{bad' WHERE id = 2",
    "item 1: its choices are not a list of distinct": "UPDATE items SET choices = '[\"a\"]'",
    "item 1: its shown category": "UPDATE items SET truth = 'giraffe'",
    "item 3: its info is not a JSON object": "UPDATE items SET info = '[]' WHERE id = 3",
    "no answers table": "DROP TABLE answers",
    "no column 'choices'": "ALTER TABLE items DROP COLUMN choices",
    "item 4 has no picture 'map'": "DELETE FROM pictures WHERE item = 4",
    "no items": "DELETE FROM pictures; DELETE FROM items",
    "answers of unknown items": "PRAGMA foreign_keys = OFF; INSERT INTO answers VALUES "
    "('nobody', 99, 'x', 1, NULL, 'now')",
}


@pytest.mark.parametrize("what", DAMAGE)
def test_damaged_study_is_refused_whole(
    cd_study_file: Path, copy_study: Callable[[Path], Path], what: str
) -> None:
    path = copy_study(cd_study_file)
    with sqlite3.connect(path) as db:
        db.executescript(DAMAGE[what])
    with pytest.raises(StudyError, match=f"damaged study: .*{re.escape(what)}"):
        open_study(path)


def test_opening_never_creates_the_study(
    cd_study_file: Path, copy_study: Callable[[Path], Path]
) -> None:
    path = copy_study(cd_study_file)
    store = open_study(path)
    token = store.invite(1)[0]
    path.unlink()
    for call in (lambda: store.participant(token), store.items, store.answers):
        with pytest.raises(StudyUnavailable, match="cannot open the study"):
            call()
    with pytest.raises(StudyUnavailable):
        store.record(token, 1, "ring")
    assert list(path.parent.iterdir()) == []


def test_writable_is_checked_first(
    cd_study_file: Path, copy_study: Callable[[Path], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradcam.study.store as store_module

    path = copy_study(cd_study_file)
    monkeypatch.setattr(store_module.os, "access", lambda *args, **kwargs: False)
    monkeypatch.setattr(store_module, "_read_only_file_system", lambda where: True)
    with pytest.raises(StudyError, match="cannot be stored in it: it lies on a read-only file"):
        open_study(path, writable=True)
    assert open_study(path).kind == "class-discrimination"  # reading needs no writing
