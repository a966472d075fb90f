"""ImageNet as distributed (the ILSVRC CLS-LOC release) and as a flat folder with labels and/or
the official box XML files, on small fixtures written here."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.imagenet import (
    EGYPTIAN_CAT,
    ESPRESSO,
    NAME,
    TABBY,
    write_box_xml,
    write_jpeg,
)

from gradcam.evaluate.datasets import (
    Dataset,
    DatasetError,
    imagenet_synsets,
    open_dataset,
    read_imagenet,
)
from gradcam.models import imagenet_classes


def _settings(data: Dataset) -> dict[str, object]:
    """The identity without its digest (tested on its own)."""
    assert len(data.identity["digest"]) == 16
    return {k: v for k, v in data.identity.items() if k != "digest"}


def _release(root: Path) -> tuple[Path, Path]:
    """Three images of the CLS-LOC layout: two cats, a cat beside an espresso, a broken file."""
    images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    boxes = root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
    write_jpeg(images / f"{NAME.format(1)}.JPEG", (60, 40))
    write_jpeg(images / f"{NAME.format(2)}.JPEG", (50, 30))
    write_jpeg(images / f"{NAME.format(3)}.JPEG", (20, 20))
    write_box_xml(
        boxes / f"{NAME.format(1)}.xml",
        (60, 40),
        [(EGYPTIAN_CAT, (1, 1, 30, 40)), (EGYPTIAN_CAT, (31, 5, 60, 35))],
    )
    write_box_xml(
        boxes / f"{NAME.format(2)}.xml",
        (50, 30),
        [(ESPRESSO, (26, 1, 50, 30)), (TABBY, (1, 1, 25, 30))],
    )
    (boxes / f"{NAME.format(3)}.xml").write_text("<annotation><size><width>20</width>")
    return images, boxes


def test_the_synset_list_is_torchvisions_class_order() -> None:
    synsets = imagenet_synsets()
    assert len(synsets) == len(set(synsets)) == 1000 and list(synsets) == sorted(synsets)
    names = imagenet_classes()
    assert (names[synsets.index(EGYPTIAN_CAT)], names[synsets.index(ESPRESSO)]) == (
        "Egyptian cat",
        "espresso",
    )
    assert (synsets[0], names[0], synsets[999], names[999]) == (
        "n01440764",
        "tench",
        "n15075141",
        "toilet tissue",
    )


class TestRelease:
    def test_every_object_gives_a_label_and_a_box(self, tmp_path: Path) -> None:
        _release(tmp_path)
        data = read_imagenet(tmp_path)
        assert data.class_names == imagenet_classes()
        assert [s.path.name for s in data.samples] == [f"{NAME.format(i)}.JPEG" for i in (1, 2)]
        first, second = data.samples
        assert first.labels == (285,)  # two Egyptian cats, one label
        assert [a.box for a in first.annotations] == [(0, 0, 29, 39), (30, 4, 59, 34)]
        assert second.labels == (281, 967)  # all of the image's classes, sorted
        assert [(a.class_id, a.box) for a in second.annotations] == [
            (967, (25, 0, 49, 29)),
            (281, (0, 0, 24, 29)),
        ]
        (problem,) = data.problems
        assert f"{NAME.format(3)}.xml: not a readable annotation file" in problem

    def test_detected_from_the_root_or_ilsvrc(self, tmp_path: Path) -> None:
        _, boxes = _release(tmp_path)
        for root in (tmp_path, tmp_path / "ILSVRC"):
            data = open_dataset(root)
            assert len(data.samples) == 2
            assert _settings(data) == {
                "format": "imagenet",
                "root": str(root.resolve()),
                "layout": "cls-loc",
                "split": "val",
                "labels": None,
                "boxes": str(boxes.resolve()),
                "count": 2,
            }

    def test_missing_box_folder_and_split(self, tmp_path: Path) -> None:
        _, boxes = _release(tmp_path)
        with pytest.raises(DatasetError, match="ILSVRC/Data/CLS-LOC/train beside"):
            read_imagenet(tmp_path, split="train")
        for xml in boxes.iterdir():
            xml.unlink()
        boxes.rmdir()
        with pytest.raises(DatasetError, match=r"CLS-LOC/val: no such folder \(the CLS-LOC"):
            open_dataset(tmp_path)


class TestFlatFolder:
    def test_boxes_without_labels(self, tmp_path: Path) -> None:
        images, boxes = _release(tmp_path)
        flat, xml = tmp_path / "val", tmp_path / "bbox_val"
        images.rename(flat)
        boxes.rename(xml)
        (xml / f"{NAME.format(2)}.xml").unlink()  # an image without a box file: reported
        data = open_dataset(flat, boxes=xml)
        assert [s.labels for s in data.samples] == [(285,)]
        assert data.identity["layout"] == "flat" and data.identity["labels"] is None
        assert len(data.problems) == 2
        assert f"{NAME.format(2)}.xml: no such annotation file" in data.problems[0]

    def test_labels_and_boxes(self, tmp_path: Path) -> None:
        images, boxes = _release(tmp_path)
        labels = tmp_path / "labels.txt"
        labels.write_text(
            f"{NAME.format(1)}.JPEG 281\n\n{NAME.format(2)}.JPEG espresso\n"
            f"{NAME.format(3)}.JPEG {ESPRESSO}\n{NAME.format(4)}.JPEG unicorn\n"
            f"{NAME.format(5)}.JPEG\n"
        )
        data = read_imagenet(images, labels, boxes)
        # Labels come from the file; boxes from the XML (kept as they are named there).
        assert [s.labels for s in data.samples] == [(281,), (967,)]
        assert {a.class_id for a in data.samples[0].annotations} == {285}
        assert data.problems[0].endswith("labels.txt:5: unknown label 'unicorn'")
        assert data.problems[1].endswith(
            f"labels.txt:6: expected 'FILENAME LABEL', got '{NAME.format(5)}.JPEG'"
        )
        assert "not a readable annotation file" in data.problems[2]
        assert len(data.problems) == 3

    def test_labels_only_and_other_class_lists(self, tmp_path: Path) -> None:
        folder = tmp_path / "val"
        write_jpeg(folder / "a.JPEG", (8, 8))
        write_jpeg(folder / "b.JPEG", (8, 8))
        labels = tmp_path / "labels.txt"
        labels.write_text(f"a.JPEG {EGYPTIAN_CAT}\nb.JPEG 967\n")
        data = open_dataset(folder, labels=labels)
        assert [s.labels for s in data.samples] == [(285,), (967,)]
        assert all(s.annotations == () for s in data.samples)
        labels.write_text("a.JPEG kitten\nb.JPEG 1\n")
        mine = read_imagenet(folder, labels, classes=["puppy", "kitten"])
        assert mine.class_names == ("puppy", "kitten")
        assert [s.labels for s in mine.samples] == [(1,), (1,)]

    def test_a_labels_file_that_is_not_utf8(self, tmp_path: Path) -> None:
        folder = tmp_path / "val"
        write_jpeg(folder / "a.JPEG", (8, 8))
        labels = tmp_path / "labels.txt"
        labels.write_bytes("a.JPEG café\n".encode("latin-1"))
        with pytest.raises(
            DatasetError, match=r"labels\.txt: labels file is not UTF-8 text \(byte 0xe9"
        ):
            read_imagenet(folder, labels)
        with pytest.raises(DatasetError, match=r"nope\.txt: no such labels file"):
            read_imagenet(folder, tmp_path / "nope.txt")

    def test_needs_labels_or_boxes(self, tmp_path: Path) -> None:
        write_jpeg(tmp_path / "val" / "a.JPEG", (8, 8))
        with pytest.raises(DatasetError, match="ImageNet needs a labels file"):
            open_dataset(tmp_path / "val", "imagenet")
        with pytest.raises(DatasetError, match="no such folder of box XML files"):
            open_dataset(tmp_path / "val", boxes=tmp_path / "nope")
