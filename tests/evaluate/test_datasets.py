"""Dataset readers on small fixture folders written by the tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradcam.evaluate.coco import decode_rle, encode_rle
from gradcam.evaluate.datasets import (
    VOC_CLASSES,
    Dataset,
    DatasetError,
    Sample,
    open_dataset,
    read_coco,
    read_folder,
    read_synthetic,
    read_voc,
)


def _settings(data: Dataset) -> dict[str, object]:
    """The identity without its digest (tested on its own)."""
    assert len(data.identity["digest"]) == 16
    return {k: v for k, v in data.identity.items() if k != "digest"}


def _image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path)


def _voc_xml(
    path: Path, size: tuple[int, int], objects: list[tuple[str, tuple[int, ...], int]]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
        f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>"
        "</bndbox></object>"
        for name, b, difficult in objects
    )
    path.write_text(
        f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"<depth>3</depth></size>{body}</annotation>"
    )


def _box(*corners: str) -> str:
    keys = ("xmin", "ymin", "xmax", "ymax")
    values = "".join(f"<{k}>{v}</{k}>" for k, v in zip(keys, corners, strict=True))
    return f"<object><name>person</name><bndbox>{values}</bndbox></object>"


def test_plain_folder(tmp_path: Path) -> None:
    _image(tmp_path / "b.png", (8, 8))
    _image(tmp_path / "a.jpg", (8, 8))
    _image(tmp_path / "sub" / "c.jpeg", (8, 8))
    (tmp_path / "notes.txt").write_text("not an image")
    data = read_folder(tmp_path)
    assert [s.path.name for s in data.samples] == ["a.jpg", "b.png", "c.jpeg"]
    assert data.samples[0].labels == ()
    with pytest.raises(DatasetError, match="no such folder"):
        read_folder(tmp_path / "missing")


class TestVOC:
    def _voc(self, root: Path) -> None:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "ImageSets" / "Main" / "val.txt").write_text("000001\n000002\n000003\n")
        for image_id, size in [("000001", (50, 40)), ("000002", (30, 30)), ("000003", (20, 20))]:
            _image(root / "JPEGImages" / f"{image_id}.jpg", size)
        _voc_xml(
            root / "Annotations" / "000001.xml",
            (50, 40),
            [("cat", (1, 1, 50, 40), 0), ("dog", (10, 5, 20, 15), 1)],
        )
        _voc_xml(root / "Annotations" / "000002.xml", (30, 30), [("person", (3, 4, 10, 12), 0)])
        _voc_xml(root / "Annotations" / "000003.xml", (64, 64), [("cat", (1, 1, 5, 5), 0)])

    def test_boxes_are_zero_based_and_flags_kept(self, tmp_path: Path) -> None:
        self._voc(tmp_path)
        data = read_voc(tmp_path, "val")
        assert data.class_names == VOC_CLASSES
        first = data.samples[0]
        cat, dog = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")
        assert first.labels == (cat, dog) and first.size == (50, 40)
        assert first.annotations[0].box == (0, 0, 49, 39)  # the whole 50x40 image
        assert first.annotations[1].box == (9, 4, 19, 14) and first.annotations[1].difficult
        assert not first.annotations[0].difficult

    def test_size_disagreement_is_reported_and_left_out(self, tmp_path: Path) -> None:
        self._voc(tmp_path)
        data = read_voc(tmp_path, "val")
        assert [s.path.stem for s in data.samples] == ["000001", "000002"]
        (problem,) = data.problems
        assert "000003.jpg" in problem and "20x20 disagrees with the annotation's 64x64" in problem

    def test_errors_name_the_file(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match=r"is .* a VOC folder"):
            read_voc(tmp_path)

    @pytest.mark.parametrize(
        ("xml", "problem"),
        [
            ("<object><name>unicorn</name></object>", "unknown class 'unicorn'"),
            (_box("1", "2", "x9", "12"), r"object 1 \(person\): <xmax> is not a number \('x9'\)"),
            (_box("1", "2", "", "12"), r"object 1 \(person\): missing <xmax>"),
            (_box("1", "2", "nan", "12"), r"<xmax> is not a number \('nan'\)"),
            (_box("9", "2", "3", "12"), "empty box"),
            (_box("40", "40", "50", "50"), "box lies outside the 30x30 image"),
        ],
    )
    def test_a_bad_object_skips_its_image(self, tmp_path: Path, xml: str, problem: str) -> None:
        self._voc(tmp_path)
        (tmp_path / "Annotations" / "000002.xml").write_text(
            f"<annotation><size><width>30</width><height>30</height></size>{xml}</annotation>"
        )
        data = read_voc(tmp_path)
        assert [s.path.stem for s in data.samples] == ["000001"]
        bad, disagreeing = data.problems
        assert re.search(r"Annotations/000002\.xml: .*" + problem, bad), bad
        assert "000003.jpg" in disagreeing

    @pytest.mark.parametrize(
        ("size", "problem"),
        [
            ("", "missing <size>"),
            ("<size><width>30</width></size>", r"<size>: missing <height>"),
            ("<size><width>3O</width><height>30</height></size>", "<width> is not a number"),
            ("<size><width>0</width><height>30</height></size>", "size 0x30 is not positive"),
            ("<size><width>3.5</width><height>30</height></size>", "is not whole pixels"),
            (
                "<size><width>100000</width><height>100000</height></size>",
                "above the decompression-bomb limit",
            ),
        ],
    )
    def test_a_bad_size_skips_its_image(self, tmp_path: Path, size: str, problem: str) -> None:
        self._voc(tmp_path)
        (tmp_path / "Annotations" / "000002.xml").write_text(
            f"<annotation>{size}{_box('1', '1', '2', '2')}</annotation>"
        )
        data = read_voc(tmp_path)
        assert [s.path.stem for s in data.samples] == ["000001"]
        assert re.search(r"000002\.xml: .*" + problem, data.problems[0]), data.problems[0]

    def test_missing_and_unsafe_xml_skip_their_image(self, tmp_path: Path) -> None:
        self._voc(tmp_path)
        (tmp_path / "Annotations" / "000001.xml").write_text(
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><annotation>&lol2;</annotation>'
        )
        (tmp_path / "Annotations" / "000002.xml").unlink()
        data = read_voc(tmp_path)
        assert data.samples == []
        assert re.search(r"000001\.xml: refused unsafe XML", data.problems[0])
        assert re.search(r"000002\.xml: no such annotation file", data.problems[1])
        assert len(data.problems) == 3  # and 000003's size disagreement


class TestCOCO:
    def test_boxes_polygons_and_rle_against_pycocotools(self, tmp_path: Path) -> None:
        mask_utils = pytest.importorskip("pycocotools.mask")
        rng = np.random.default_rng(0)
        blob = np.zeros((12, 16), dtype=np.uint8, order="F")
        blob[3:9, 2:7] = 1
        blob[rng.random((12, 16)) > 0.8] = 1
        compressed = mask_utils.encode(np.asfortranarray(blob))
        _image(tmp_path / "img" / "a.jpg", (16, 12))
        data = {
            "images": [{"id": 7, "file_name": "a.jpg", "width": 16, "height": 12}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
            "annotations": [
                {"image_id": 7, "category_id": 18, "bbox": [2.0, 3.0, 5.0, 6.0],
                 "segmentation": [[2, 3, 6.9, 3, 6.9, 8.9, 2, 8.9]], "iscrowd": 0},
                {"image_id": 7, "category_id": 3, "bbox": [0, 0, 16, 12], "iscrowd": 1,
                 "segmentation": {"counts": compressed["counts"].decode(), "size": [12, 16]}},
            ],
        }  # fmt: skip
        path = tmp_path / "instances.json"
        path.write_text(json.dumps(data))
        dataset = read_coco(path, tmp_path / "img")
        assert dataset.class_names == ("car", "dog")  # in category id order
        (sample,) = dataset.samples
        dog, car = sample.annotations
        assert dog.class_id == 1 and dog.box == (2, 3, 6, 8) and not dog.difficult
        assert dog.mask is not None and dog.mask[3:9, 2:7].all() and dog.mask.sum() == 30
        assert car.class_id == 0 and car.difficult and car.box == (0, 0, 15, 11)
        assert car.mask is not None and np.array_equal(car.mask, blob.astype(bool))
        assert np.array_equal(mask_utils.decode(compressed), blob)  # pycocotools agrees
        assert sample.labels == (0, 1)

    def test_uncompressed_rle_and_bad_files(self, tmp_path: Path) -> None:
        # column-major runs over a 2x3 mask: 1 off, 2 on, 3 off -> pixels (1,0) and (0,1)
        assert decode_rle([1, 2, 3], 2, 3).tolist() == [[False, True, False], [True, False, False]]
        with pytest.raises(ValueError, match="cover 5 pixels"):
            decode_rle([1, 4], 2, 3)
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        with pytest.raises(DatasetError, match=r"bad\.json: not a JSON file"):
            read_coco(bad, tmp_path)
        bad.write_text('{"images": []}')
        with pytest.raises(DatasetError, match="not a COCO annotation file"):
            read_coco(bad, tmp_path)


def test_shipped_photos_with_their_hand_drawn_boxes() -> None:
    from PIL import Image

    from gradcam.evaluate.datasets import read_photos

    plain = read_photos()
    assert len(plain.samples) == 6 and all(not s.labels for s in plain.samples)
    annotated = read_photos(annotated=True)
    names = [s.path.name for s in annotated.samples]
    assert "astronaut.png" not in names and "coffee.png" in names and len(names) == 5
    for sample in annotated.samples:
        width, height = Image.open(sample.path).size
        assert sample.labels and {a.class_id for a in sample.annotations} == set(sample.labels)
        for a in sample.annotations:
            assert a.box is not None
            x0, y0, x1, y1 = a.box
            assert 0 <= x0 < x1 < width and 0 <= y0 < y1 < height


class TestCOCOProblems:
    """One bad image entry or annotation costs its image, never the file."""

    def _coco(self, root: Path, *, extra: list[dict[str, object]]) -> Path:
        _image(root / "img" / "good.png", (6, 4))
        _image(root / "img" / "other.png", (6, 4))
        mask = np.zeros((4, 6), dtype=bool)
        mask[1:3, 2:5] = True
        data = {
            "images": [
                {"id": 1, "file_name": "good.png", "width": 6, "height": 4},
                {"id": 2, "file_name": "other.png", "width": 6, "height": 4},
            ],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [
                {"image_id": 1, "category_id": 1, "bbox": [2, 1, 3, 2],
                 "segmentation": encode_rle(mask, compressed=True)},
                *extra,
            ],
        }  # fmt: skip
        path = root / "instances.json"
        path.write_text(json.dumps(data))
        return path

    @pytest.mark.parametrize(
        ("annotation", "problem"),
        [
            ({"segmentation": {"counts": "0X", "size": [4, 6]}}, "truncated RLE string"),
            ({"segmentation": {"counts": "52", "size": [4, 6]}}, "cover 7 pixels, not 4x6"),
            ({"segmentation": {"counts": [24], "size": [6, 4]}}, "RLE size 4x6 differs"),
            ({"segmentation": [[1, 2, 3]]}, "list of x, y pairs"),
            ({"category_id": 9}, "unknown category_id 9"),
            ({"bbox": [1, 2, "x", 4]}, "could not convert"),
            ({"bbox": [1, 2, 3]}, "bbox must be"),
        ],
    )
    def test_a_bad_annotation_skips_its_image(
        self, tmp_path: Path, annotation: dict[str, object], problem: str
    ) -> None:
        bad = {"image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 2], **annotation}
        data = read_coco(self._coco(tmp_path, extra=[bad]), tmp_path / "img")
        ((sample,), (message,)) = data.samples, data.problems
        assert sample.path.name == "good.png" and sample.annotations[0].box == (2, 1, 4, 2)
        assert sample.annotations[0].mask is not None and sample.annotations[0].mask.sum() == 6
        assert "instances.json: image 'other.png': annotation 2: " in message
        assert problem in message

    def test_entries_naming_nothing_or_bad_images(self, tmp_path: Path) -> None:
        path = self._coco(tmp_path, extra=[{"image_id": 7, "category_id": 1}])
        data = json.loads(path.read_text())
        data["images"].append({"id": 3, "file_name": "no-size.png"})
        path.write_text(json.dumps(data))
        dataset = read_coco(path, tmp_path / "img")
        assert [s.path.name for s in dataset.samples] == ["good.png", "other.png"]
        assert dataset.problems == [
            f"{path}: image entry 3: missing 'width'",
            f"{path}: annotation 2 names no image of 'images'",
        ]

    def test_an_image_above_the_bomb_limit(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
        _image(tmp_path / "img" / "huge.png", (30, 30))  # 900 pixels, past twice the limit
        _image(tmp_path / "img" / "big.png", (15, 10))  # 150 declared, 1.5 times the limit
        extra = [{"image_id": 3, "category_id": 1, "segmentation": {"counts": [0, 150]}}]
        path = self._coco(tmp_path, extra=extra)
        data = json.loads(path.read_text())
        data["images"] += [
            {"id": 3, "file_name": "big.png", "width": 15, "height": 10},
            {"id": 4, "file_name": "huge.png", "width": 6, "height": 4},  # declared small
        ]
        path.write_text(json.dumps(data))
        dataset = read_coco(path, tmp_path / "img")
        assert [s.path.name for s in dataset.samples] == ["good.png", "other.png"]
        assert dataset.problems == [
            f"{path}: image 'big.png': size 15x10 (150 pixels) is above the decompression-bomb "
            "limit of 100 pixels",
            f"{tmp_path / 'img' / 'huge.png'}: image is too large to decode safely "
            "(decompression-bomb limit)",
        ]


class TestSynthetic:
    def test_settings_are_recorded_and_another_seed_regenerates(self, tmp_path: Path) -> None:
        from gradcam.synthetic import SCENES_VERSION, benchmark_scene

        folder = tmp_path / "bench"
        first = read_synthetic(folder, 8, seed=0, size=64)
        info = json.loads((folder / "annotations.json").read_text())["info"]
        assert {k: info[k] for k in ("count", "seed", "size", "generator")} == {
            "count": 8, "seed": 0, "size": 64, "generator": SCENES_VERSION,
        }  # fmt: skip
        assert _settings(first) == {
            "format": "synthetic", "root": str(folder.resolve()), "count": 8, "seed": 0,
            "size": 64, "generator": SCENES_VERSION,
        }  # fmt: skip
        again = read_synthetic(folder, 8, seed=1, size=64)  # same count, other seed
        assert again.identity["seed"] == 1 and again.name == "synthetic-shapes-1-8"
        for index, sample in enumerate(again.samples):
            (obj,) = benchmark_scene(index, seed=1, size=64).objects
            assert sample.annotations[0].box == obj.box
            assert sample.annotations[0].mask is not None
            assert np.array_equal(sample.annotations[0].mask, obj.mask)

    def test_fewer_images_leave_no_stale_files_and_lost_ones_come_back(
        self, tmp_path: Path
    ) -> None:
        read_synthetic(tmp_path, 6, size=32)
        fewer = read_synthetic(tmp_path, 3, size=32)
        assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
            "000000.png", "000001.png", "000002.png",
        ]  # fmt: skip
        before = fewer.samples[1].path.read_bytes()
        fewer.samples[1].path.unlink()
        assert read_synthetic(tmp_path, 3, size=32).samples[1].path.read_bytes() == before

    def test_a_folder_of_other_annotations_is_never_overwritten(self, tmp_path: Path) -> None:
        (tmp_path / "annotations.json").write_text('{"images": [], "categories": []}')
        with pytest.raises(DatasetError, match="not a synthetic benchmark written by gradcam"):
            read_synthetic(tmp_path, 4)
        assert (tmp_path / "annotations.json").read_text() == '{"images": [], "categories": []}'
        with pytest.raises(DatasetError, match="at least 1 image"):
            read_synthetic(tmp_path / "new", 0)


class TestOpenDataset:
    def test_detection(self, tmp_path: Path) -> None:
        _image(tmp_path / "plain" / "a.png", (8, 8))
        assert _settings(open_dataset(tmp_path / "plain")) == {
            "format": "folder", "root": str((tmp_path / "plain").resolve()), "count": 1,
        }  # fmt: skip
        TestVOC()._voc(tmp_path / "voc")
        voc = open_dataset(tmp_path / "voc")
        assert voc.identity["format"] == "voc" and voc.identity["split"] == "val"
        assert len(voc.samples) == 2
        synthetic = open_dataset("synthetic", count=4, seed=2, workdir=tmp_path / "runs")
        assert synthetic.identity["seed"] == 2 and len(synthetic.samples) == 4
        written = tmp_path / "runs" / "synthetic-2-4"
        as_coco = open_dataset(written)  # the folder the benchmark wrote reads as COCO
        assert _settings(as_coco) == {
            "format": "coco", "root": str((written / "images").resolve()),
            "annotations": str((written / "annotations.json").resolve()), "count": 4,
        }  # fmt: skip
        assert open_dataset(written / "images", annotations=written / "annotations.json") == (
            as_coco
        )
        photos = open_dataset("photos", annotated=True)
        assert _settings(photos) == {"format": "photos", "annotated": True, "count": 5}
        assert open_dataset(written / "images", "folder").identity["format"] == "folder"

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match="unknown dataset format 'tfrecord'"):
            open_dataset(tmp_path, "tfrecord")
        with pytest.raises(DatasetError, match="--format coco needs --annotations FILE"):
            open_dataset(tmp_path, "coco")
        with pytest.raises(DatasetError, match="missing: no such folder"):
            open_dataset(tmp_path / "missing")
        with pytest.raises(DatasetError, match="missing: no such folder"):
            open_dataset(tmp_path / "missing", "voc")

    def test_the_digest_follows_the_annotations_not_the_folder(self, tmp_path: Path) -> None:
        import shutil

        TestVOC()._voc(tmp_path / "a")
        digest = open_dataset(tmp_path / "a").identity["digest"]
        assert open_dataset(tmp_path / "a").identity["digest"] == digest
        shutil.copytree(tmp_path / "a", tmp_path / "b")
        assert open_dataset(tmp_path / "b").identity["digest"] == digest  # moved: same data
        _voc_xml(
            tmp_path / "b" / "Annotations" / "000002.xml", (30, 30), [("person", (3, 4, 10, 13), 0)]
        )
        assert open_dataset(tmp_path / "b").identity["digest"] != digest  # one box moved

    def test_a_dataset_made_by_hand_has_an_identity(self) -> None:
        assert _settings(Dataset("mine", (), [Sample(Path("a.png"))])) == {
            "format": "custom", "name": "mine", "count": 1,
        }  # fmt: skip


def test_bench_datasets_quick_smoke() -> None:
    """The benchmark script runs and reads its whole fixture (no timing checks)."""
    script = Path(__file__).parents[2] / "benchmarks" / "bench_datasets.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert results["images"] == 50 and results["cls_loc_seconds"] > 0
    assert results["rle_decode_string_ms"] > 0
