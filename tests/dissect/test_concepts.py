"""Concept data: Broden's own layout (a tiny fixture written here) and the generated set."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gradcam.dissect import (
    BRODEN_COLORS,
    MAX_CONCEPT_PIXELS,
    MAX_GENERATED_SIZE,
    TEXTURES,
    Concept,
    ConceptError,
    decode_labels,
    generated_concepts,
    read_broden,
    read_concepts,
)
from gradcam.images import MAX_PIXELS
from gradcam.synthetic import SHAPES


def _encoded(labels: np.ndarray) -> Image.Image:
    """Label numbers to Broden's colour code: R = label % 256, G = label // 256."""
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    return Image.fromarray(rgb)


def _write_broden(root, *, rows: list[str] | None = None) -> None:
    images = root / "images" / "ade20k"
    images.mkdir(parents=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(images / "a.jpg")
    color = np.array([[1, 1], [0, 300]])  # 1 red, 300 sky-blue (R 44, G 1)
    objects = np.array([[0, 7], [7, 7]])  # 7 sky
    _encoded(color).save(images / "a_color.png")
    _encoded(objects).save(images / "a_object.png")
    (root / "index.csv").write_text(
        "image,split,ih,iw,sh,sw,color,object,texture\n"
        + "\n".join(
            rows
            or [
                "ade20k/a.jpg,train,4,4,2,2,ade20k/a_color.png,ade20k/a_object.png,12;13",
            ]
        )
        + "\n"
    )
    (root / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n"
        "0,-,-,0,0,\n"
        "1,red-c,color(10),10,1.0,\n"
        "7,sky,object(80);part(2),80,3.0,\n"
        "12,striped,texture(5),5,1.0,\n"
        "13,dotted,texture(4),4,1.0,\n"
        "300,sky-blue-c,color(3),3,1.0,\n"
        "400,unused,part(2),2,1.0,\n"
    )
    (root / "c_color.csv").write_text("code,number,name,frequency,coverage\n1,1,red-c,10,1\n")
    (root / "c_object.csv").write_text("code,number,name,frequency,coverage\n1,7,sky,80,3\n")


def test_decode_labels() -> None:
    labels = np.array([[0, 1, 255], [256, 300, 65535]])
    assert np.array_equal(decode_labels(_encoded(labels)), labels)


def test_read_broden(tmp_path) -> None:
    _write_broden(tmp_path)
    concepts = read_broden(tmp_path)
    assert concepts.categories == ("color", "object", "texture")
    assert concepts.concepts == (
        Concept("red-c", "color"),
        Concept("sky", "object"),
        Concept("striped", "texture"),
        Concept("dotted", "texture"),
        Concept("sky-blue-c", "color"),
    )
    assert len(concepts) == 1
    sample = concepts[0]
    assert sample.image.size == (4, 4)
    assert np.array_equal(np.asarray(concepts.image(0)), np.asarray(sample.image))
    layers = [(category, labels.tolist()) for category, labels in sample.layers]
    assert layers == [
        (0, [[1, 1], [0, 5]]),  # label numbers 1, 300 -> concept ids 1, 5
        (1, [[0, 2], [2, 2]]),
        (2, [[3, 3], [3, 3]]),  # whole-image texture labels cover every pixel
        (2, [[4, 4], [4, 4]]),
    ]
    assert concepts.category_of().tolist() == [-1, 0, 1, 2, 2, 0]


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing", "no such folder"),
        ("empty", "index.csv is missing"),
        ("no rows", "lists no images"),
        ("bad header", "expected the columns"),
        ("bad mask", "image 0"),
    ],
)
def test_read_broden_exception(tmp_path, setup: str, match: str) -> None:
    root = tmp_path / "broden"
    if setup != "missing":
        root.mkdir()
    if setup == "no rows":
        _write_broden(root)
        (root / "index.csv").write_text("image,split,ih,iw,sh,sw,color\n")
    elif setup == "bad header":
        _write_broden(root)
        (root / "index.csv").write_text("file,color\na.jpg,\n")
    elif setup == "bad mask":
        _write_broden(root, rows=["ade20k/a.jpg,train,4,4,2,2,ade20k/nothing.png,,"])
    with pytest.raises(ConceptError, match=match):
        read_broden(root)[0]


def test_generated_concepts() -> None:
    concepts = generated_concepts(24, size=48, seed=3)
    names = [c.name for c in concepts.concepts]
    assert names == [*BRODEN_COLORS, *TEXTURES, *SHAPES]
    assert concepts.categories == ("color", "texture", "shape")
    again = generated_concepts(24, size=48, seed=3)
    palette = np.array([(0, 0, 0)] + [BRODEN_COLORS[n] for n in names[: len(BRODEN_COLORS)]])
    seen_textures = 0
    for i in range(len(concepts)):
        sample = concepts[i]
        assert np.array_equal(np.asarray(sample.image), np.asarray(again[i].image))
        pixels = np.asarray(sample.image)
        by_category = {}
        for category, labels in sample.layers:
            assert labels.shape == (48, 48)
            by_category.setdefault(category, []).append(labels)
        shape_ids = by_category[2][0]
        inside = shape_ids > 0
        assert 1 <= len(set(np.unique(shape_ids)) - {0}) <= 3
        # Every shape pixel is painted exactly in its labelled colour.
        colour_ids = by_category[0][0]
        assert ((colour_ids > 0) == inside).all()
        assert (pixels[inside] == palette[colour_ids[inside]]).all()
        if 1 in by_category:  # textured background: every other pixel
            seen_textures += 1
            (texture,) = by_category[1]
            assert ((texture > 0) == ~inside).all()
        else:  # a flat colour background, a colour no shape has
            (back,) = by_category[0][1:]
            assert ((back > 0) == ~inside).all()
            (back_id,) = set(np.unique(back)) - {0}
            assert back_id not in set(np.unique(colour_ids))
            assert (pixels[~inside] == palette[back_id]).all()
    assert 0 < seen_textures < len(concepts)


def test_generated_concepts_exception() -> None:
    with pytest.raises(ConceptError, match="at least 1 image"):
        generated_concepts(0)
    with pytest.raises(ConceptError, match="16 px"):
        generated_concepts(4, size=8)
    with pytest.raises(IndexError):
        generated_concepts(4)[4]


def test_read_concepts(tmp_path) -> None:
    assert read_concepts("generated", count=5, size=32).source == "generated:5:32:0"
    _write_broden(tmp_path)
    assert read_concepts(str(tmp_path)).source == str(tmp_path)


# Memory caps and refusals (issue 30, item 9): each once took gigabytes or a traceback.


def _huge_palette_png(path, side: int = 3000) -> None:
    """A palette PNG that decodes to ``side``^2 pixels from a few kilobytes."""
    Image.new("P", (side, side)).save(path, format="PNG", optimize=True)
    assert path.stat().st_size < 50_000


def test_caps_are_the_pixel_cap() -> None:
    assert MAX_CONCEPT_PIXELS == MAX_PIXELS and MAX_GENERATED_SIZE == 1024


def test_generated_size_is_capped() -> None:
    """--size 20000 took 23 GB before the kernel killed it."""
    with pytest.raises(ConceptError, match="16 px to 1024 px a side, got 20000"):
        generated_concepts(4, size=20000)
    assert generated_concepts(1, size=MAX_GENERATED_SIZE)[0].image.size == (1024, 1024)


@pytest.mark.parametrize(
    ("sh", "sw", "match"),
    [("20000", "20000", "label size 20000x20000 must be positive and at most"),
     ("0", "2", "label size 0x2"), ("x", "2", "sh, sw must be integers, got 'x', '2'")],
)  # fmt: skip
def test_index_size_cells_are_checked_when_read(tmp_path, sh: str, sw: str, match: str) -> None:
    """An index.csv size cell of 20000 was killed at 5 GB (a whole-image label's map)."""
    _write_broden(tmp_path, rows=[f"ade20k/a.jpg,train,4,4,{sh},{sw},,,12"])
    with pytest.raises(ConceptError, match=f"index.csv: row 1: {match}"):
        read_broden(tmp_path)


def test_huge_mask_is_refused_before_it_is_decoded(tmp_path) -> None:
    """A 9000 x 9000 mask in 10 KB took 3.7 GB: its size is read from the header first."""
    _write_broden(tmp_path)
    _huge_palette_png(tmp_path / "images" / "ade20k" / "a_color.png")
    concepts = read_broden(tmp_path)
    with pytest.raises(ConceptError, match=r"a_color\.png: mask of 3000x3000 pixels, more than"):
        concepts[0]


def test_grayscale_mask_is_refused(tmp_path) -> None:
    """A grayscale mask was read as label 257 * v: every pixel silently unlabelled."""
    _write_broden(tmp_path)
    Image.new("L", (2, 2), 1).save(tmp_path / "images" / "ade20k" / "a_color.png")
    with pytest.raises(ConceptError, match=r"a_color\.png: a Broden mask must be an RGB image"):
        read_broden(tmp_path)[0]


def test_palette_mask_is_read_by_its_colours(tmp_path) -> None:
    _write_broden(tmp_path)
    palette = _encoded(np.array([[1, 1], [0, 300]])).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.save(tmp_path / "images" / "ade20k" / "a_color.png")
    assert read_broden(tmp_path)[0].layers[0][1].tolist() == [[1, 1], [0, 5]]


@pytest.mark.parametrize("which", ["a.jpg", "a_color.png"])
def test_bomb_is_one_line_naming_the_file(tmp_path, monkeypatch, which: str) -> None:
    """Pillow's DecompressionBombError came through as a traceback."""
    _write_broden(tmp_path)
    folder = tmp_path / "images" / "ade20k"
    big = Image.new("RGB", (64, 64))
    big.save(folder / which, format="PNG")  # Pillow reads it by content, whatever the name
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is then a bomb
    concepts = read_broden(tmp_path)
    with pytest.raises(ConceptError, match=f"{which}: .*too large to decode safely"):
        concepts[0]


def test_huge_photo_is_decoded_at_the_pixel_cap(tmp_path) -> None:
    _write_broden(tmp_path)
    _huge_palette_png(tmp_path / "images" / "ade20k" / "a.jpg")
    photo = read_broden(tmp_path).image(0)
    assert photo.width * photo.height <= MAX_CONCEPT_PIXELS and photo.mode == "RGB"
