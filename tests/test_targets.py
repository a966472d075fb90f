"""Target resolution: every accepted form on hand-made outputs."""

from __future__ import annotations

import pytest
import torch

from gradcam.errors import TargetError
from gradcam.targets import TopK, as_logits, resolve_targets

LOGITS = torch.tensor([[1.0, 3.0, 2.0], [5.0, 4.0, 6.0]])


def test_default_is_top1() -> None:
    resolved = resolve_targets(None, LOGITS, 2)
    assert resolved.classes.tolist() == [[1], [2]]
    assert resolved.scores.tolist() == [[3.0], [6.0]]


def test_topk_is_per_image_best_first() -> None:
    assert resolve_targets(TopK(2), LOGITS, 2).classes.tolist() == [[1, 2], [2, 0]]


def test_int_and_list_are_the_same_for_every_image() -> None:
    assert resolve_targets(0, LOGITS, 2).scores.tolist() == [[1.0], [5.0]]
    resolved = resolve_targets([2, 0], LOGITS, 2)
    assert resolved.classes.tolist() == [[2, 0], [2, 0]]
    assert resolved.scores.tolist() == [[2.0, 1.0], [6.0, 5.0]]


def test_tensor_ids_per_image() -> None:
    resolved = resolve_targets(torch.tensor([[0, 1], [2, 2]]), LOGITS, 2)
    assert resolved.scores.tolist() == [[1.0, 3.0], [6.0, 6.0]]
    assert resolve_targets(torch.tensor([[1]]), LOGITS, 2).classes.tolist() == [[1], [1]]


def test_callable_accepts_b1_shape() -> None:
    resolved = resolve_targets(lambda out: out[:, :1], LOGITS, 2)
    assert resolved.scores.tolist() == [[1.0], [5.0]]


def test_as_logits_forms() -> None:
    assert as_logits((LOGITS, "aux")) is LOGITS
    assert as_logits({"logits": LOGITS, "other": LOGITS * 2}) is LOGITS
    assert as_logits({"out": LOGITS}) is LOGITS
    with pytest.raises(TargetError, match="shape"):
        as_logits(torch.zeros(1, 3, 4, 4))
    with pytest.raises(TargetError, match="of type dict"):
        as_logits({"a": LOGITS, "b": LOGITS})
