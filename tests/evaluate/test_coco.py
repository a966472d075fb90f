"""COCO's file format: RLE (both forms, against hand-computed strings and pycocotools), boxes,
and the atomic writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradcam.evaluate.coco import box_from_bbox, coco_bbox, decode_rle, encode_rle, write_coco

# A 3x2 mask; column-major pixels 0 1 0 | 1 1 0, so runs: 1 off, 1 on, 1 off, 2 on, 1 off.
SMALL = np.array([[0, 1], [1, 1], [0, 0]], dtype=bool)


class TestRLE:
    def test_hand_computed_counts(self) -> None:
        assert encode_rle(SMALL) == {"counts": [1, 1, 1, 2, 1], "size": [3, 2]}
        # From the fourth count on, each is stored minus the count two before it:
        # 1, 1, 1, 2 - 1 = 1, 1 - 1 = 0, each one 5-bit group: chr(48 + value).
        assert encode_rle(SMALL, compressed=True) == {"counts": "11110", "size": [3, 2]}
        assert np.array_equal(decode_rle("11110", 3, 2), SMALL)
        assert np.array_equal(decode_rle([1, 1, 1, 2, 1], 3, 2), SMALL)

    def test_hand_computed_multi_group_and_negative_delta(self) -> None:
        # Runs 0 on-first, 40 on, 3 off, 5 on over a 6x8 mask.
        mask = np.zeros(48, dtype=bool)
        mask[:40] = True
        mask[43:] = True
        mask = mask.reshape(8, 6).T
        # 40 = 0b01000 + (1 << 5): groups 8 (with the "more" bit: 8 + 32 + 48 = 'X'), 1 ('1').
        # 5 - 40 = -35: groups 29 (+32 more: 'm'), then 30 with the sign bit, last ('N').
        assert encode_rle(mask, compressed=True)["counts"] == "0X13mN"
        assert encode_rle(mask)["counts"] == [0, 40, 3, 5]
        assert np.array_equal(decode_rle("0X13mN", 6, 8), mask)

    @pytest.mark.parametrize("shape", [(1, 1), (7, 5), (16, 12), (0, 4)])
    def test_round_trip(self, shape: tuple[int, int]) -> None:
        rng = np.random.default_rng(sum(shape))
        for mask in (
            rng.random(shape) < 0.4,
            np.ones(shape, dtype=bool),
            np.zeros(shape, dtype=bool),
        ):
            for compressed in (False, True):
                rle = encode_rle(mask, compressed=compressed)
                assert rle["size"] == list(shape)
                assert np.array_equal(decode_rle(rle["counts"], *shape), mask)

    def test_agrees_with_pycocotools(self) -> None:
        mask_utils = pytest.importorskip("pycocotools.mask")
        rng = np.random.default_rng(3)
        for shape in [(12, 16), (40, 31), (5, 200)]:
            mask = rng.random(shape) < 0.3
            mask[2:5, 1:4] = True
            theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert encode_rle(mask, compressed=True)["counts"] == theirs["counts"].decode()
            assert np.array_equal(decode_rle(theirs["counts"].decode(), *shape), mask)

    def test_bad_encodings_say_what_is_wrong(self) -> None:
        with pytest.raises(ValueError, match="truncated RLE string: it ends inside count 2"):
            decode_rle("0X", 6, 8)  # 'X' announces another group that never comes
        with pytest.raises(ValueError, match="cover 43 pixels, not 6x8"):
            decode_rle("0X13", 6, 8)  # cut between counts
        with pytest.raises(ValueError, match=r"invalid character ' ' at 2"):
            decode_rle("0X 3", 6, 8)
        with pytest.raises(ValueError, match="cover 5 pixels, not 2x3"):
            decode_rle([1, 4], 2, 3)
        with pytest.raises(ValueError, match="must not be negative"):
            decode_rle([7, -1], 2, 3)
        with pytest.raises(ValueError, match="must be integers"):
            decode_rle([1.5, 4.5], 2, 3)  # type: ignore[list-item]
        with pytest.raises(ValueError, match="2-D"):
            encode_rle(np.zeros(4, dtype=bool))


def test_boxes_round_trip() -> None:
    assert coco_bbox((2, 3, 6, 8)) == [2, 3, 5, 6]
    assert box_from_bbox([2, 3, 5, 6]) == (2, 3, 6, 8)
    assert box_from_bbox([2.4, 3.0, 0.2, 0.0]) == (2, 3, 2, 3)  # thinner than a pixel: one
    for bad in ([1, 2, 3], "1234", [0, 0, -1, 4], [0, 0, float("nan"), 1]):
        with pytest.raises(ValueError, match="bbox"):
            box_from_bbox(bad)  # type: ignore[arg-type]


def test_write_coco_is_atomic_and_complete(tmp_path: Path) -> None:
    path = write_coco(
        tmp_path / "sub" / "instances.json",
        [{"id": 1, "file_name": "a.png", "width": 2, "height": 3}],
        [{"id": 0, "name": "cat"}],
        [{"id": 1, "image_id": 1, "category_id": 0, "bbox": coco_bbox((0, 0, 1, 2))}],
        {"seed": 4},
    )
    assert [p.name for p in path.parent.iterdir()] == ["instances.json"]  # no .partial left
    data = json.loads(path.read_text())
    assert data["info"] == {"seed": 4} and data["annotations"][0]["bbox"] == [0, 0, 2, 3]
    assert data["images"][0]["file_name"] == "a.png" and data["categories"][0]["name"] == "cat"
