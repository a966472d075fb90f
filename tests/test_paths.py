"""Output names: one slug rule, and no name that leaves the output folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.photos import photo

from gradcam.paths import slug, unique_slugs

SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")

ODD_NAMES = [
    "",
    ".",
    "..",
    "...",
    "../../etc/passwd",
    "a/../../b",
    "C:\\Windows\\system32",
    "猫",
    "猫の写真",
    " \t\n",
    "-",
    "\x00\x01",
    "x" * 500,
    "é" * 300,
    "Ünïcödé name",
    "IMG_0001",
    "\udcff",  # a file name that was not valid UTF-8
]


@pytest.mark.parametrize("text", ODD_NAMES)
def test_every_slug_is_a_safe_single_name(text: str, tmp_path: Path) -> None:
    name = slug(text)
    assert SLUG.fullmatch(name), name
    assert 1 <= len(name) <= 40
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert slug(text) == name  # stable


def test_slug_folds_case_accents_and_separators() -> None:
    assert slug("Egyptian cat") == "egyptian-cat"
    assert slug("Café au lait") == "cafe-au-lait"
    assert slug("features.6.0") == "features-6-0"
    assert slug("  --Hello,   World!--  ") == "hello-world"
    assert slug("IMG_0001") == "img-0001"


def test_names_with_nothing_to_keep_get_a_fallback_and_distinct_digests() -> None:
    names = {slug(t, fallback="image") for t in ["", ".", "..", "...", "猫", "犬", "/"]}
    assert len(names) == 7
    assert all(re.fullmatch(r"image-[0-9a-f]{8}", n) for n in names)


def test_long_names_are_cut_and_keep_their_difference() -> None:
    a, b = slug("a" * 60 + "1"), slug("a" * 60 + "2")
    assert a != b and len(a) == len(b) == 40
    assert a.startswith("a" * 31 + "-")
    assert len(slug("y" * 100, max_length=16)) == 16


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="fallback"):
        slug("x", fallback="../up")
    with pytest.raises(ValueError, match="max_length"):
        slug("x", max_length=8)


def test_unique_slugs_number_repeats_in_order() -> None:
    assert unique_slugs(["a.jpg", "A.jpg", "a-jpg", "b"]) == ["a-jpg", "a-jpg-2", "a-jpg-3", "b"]
    assert unique_slugs(["..", "..", "."], fallback="image")[1].endswith("-2")


def test_explain_keeps_odd_file_names_inside_out(tmp_path: Path) -> None:
    """``...jpg`` has the stem ``..`` and ``..jpg`` the stem ``.``: their folders once were the
    parent of ``--out`` and ``--out`` itself."""
    photos = tmp_path / "photos"
    photos.mkdir()
    picture = photo("chelsea.png").resize((64, 64))
    names = ["...jpg", "..jpg", "猫.png"]
    for name in names:
        picture.save(photos / name, format="PNG")
    out = tmp_path / "work" / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "gradcam.cli", "explain", "--model", "shapes", "--out", str(out)]
        + [str(photos / n) for n in names],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]
    folders = sorted(p for p in out.iterdir())
    assert len(folders) == 3 and all(p.is_dir() for p in folders)
    sources = {json.loads((f / "summary.json").read_text())["image"] for f in folders}
    assert sources == {str(photos / n) for n in names}
    assert [f.name for f in folders] == sorted(unique_slugs(["..", ".", "猫"], fallback="image"))
