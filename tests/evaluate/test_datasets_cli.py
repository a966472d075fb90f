"""``gradcam evaluate --data`` on ImageNet as distributed, and its one-line dataset errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.imagenet import EGYPTIAN_CAT, ESPRESSO, NAME, write_box_xml
from helpers.photos import photo


def _gradcam(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gradcam.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_localization_on_the_cls_loc_release(tmp_path: Path) -> None:
    images = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    boxes = tmp_path / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
    images.mkdir(parents=True)
    for number, (name, wnid) in enumerate(
        [("chelsea.png", EGYPTIAN_CAT), ("coffee.png", ESPRESSO), ("coffee.png", ESPRESSO)], 1
    ):
        picture = photo(name).resize((128, 96))
        picture.save(images / f"{NAME.format(number)}.JPEG", format="JPEG")
        write_box_xml(boxes / f"{NAME.format(number)}.xml", (128, 96), [(wnid, (10, 10, 100, 90))])
    bad = boxes / f"{NAME.format(3)}.xml"
    bad.write_text(bad.read_text().replace("<xmax>100</xmax>", "<xmax>1OO</xmax>"))
    out = tmp_path / "out"
    proc = _gradcam("evaluate", "localization", "--data", str(tmp_path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{NAME.format(3)}.xml: object 1 ({ESPRESSO}): <xmax> is not a number ('1OO')" in (
        proc.stderr
    )
    (summary,) = json.loads((out / "localization-gradcam" / "summary.json").read_text())
    assert summary["images"] == 2


def test_dataset_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"a.JPEG \xff\xfe\n")
    proc = _gradcam("evaluate", "sanity", "--data", str(tmp_path / "val"), "--labels", str(labels))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"gradcam: error: {labels}: labels file is not UTF-8 text (byte 0xff at offset 7)"
    )
    proc = _gradcam("evaluate", "sanity", "--data", str(tmp_path / "val"), "--format", "imagenet")
    assert proc.returncode == 2 and "ImageNet needs a labels file" in proc.stderr
