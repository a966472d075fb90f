"""Small ImageNet fixtures as the ILSVRC release ships them: JPEGs and box XML files."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

EGYPTIAN_CAT, TABBY, ESPRESSO = "n02124075", "n02123045", "n07920052"  # classes 285, 281, 967
NAME = "ILSVRC2012_val_{:08d}"


def write_jpeg(path: Path, size: tuple[int, int]) -> None:
    """A plain JPEG of ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path, format="JPEG")


def write_box_xml(
    path: Path, size: tuple[int, int], objects: list[tuple[str, tuple[int, ...]]]
) -> None:
    """A box file as ImageNet ships them (folder, filename, source, size, objects); boxes are
    VOC's 1-based inclusive ``(xmin, ymin, xmax, ymax)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    path.write_text(
        f"<annotation><folder>val</folder><filename>{path.stem}</filename>"
        "<source><database>ILSVRC_2012</database></source>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{body}</annotation>"
    )
