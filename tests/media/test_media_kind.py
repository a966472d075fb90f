"""gradcam.media.media_kind: which reader a file needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradcam.errors import MediaLoadError
from gradcam.media import media_kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.mp4", "video"),
        ("a.AVI", "video"),
        ("a.webm", "video"),
        ("a.gif", "video"),
        ("a.nii", "volume"),
        ("a.NII.GZ", "volume"),
        ("a.csv", "signal"),
        ("a.png", None),
        ("a.gz", None),
    ],
)
def test_by_suffix(name: str, kind: str | None) -> None:
    assert media_kind(name) == kind


def test_npy_by_rank(tmp_path: Path) -> None:
    for rank, kind in [(1, "signal"), (2, "signal"), (3, "volume"), (4, "volume")]:
        np.save(tmp_path / f"r{rank}.npy", np.zeros((2,) * rank))
        assert media_kind(tmp_path / f"r{rank}.npy") == kind
    np.save(tmp_path / "r5.npy", np.zeros((2,) * 5))
    with pytest.raises(MediaLoadError, match="a 5-D array is neither a signal"):
        media_kind(tmp_path / "r5.npy")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(MediaLoadError, match=r"not a readable \.npy array"):
        media_kind(tmp_path / "bad.npy")
