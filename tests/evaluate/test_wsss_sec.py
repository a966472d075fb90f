"""SEC's losses in scripts/wsss_sec.py, exact on tiny tensors; a slow smoke run of the script."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "wsss_sec.py"


@pytest.fixture(scope="module")
def sec() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("wsss_sec", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wsss_sec"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["wsss_sec"]


def test_gwrp_by_hand(sec: ModuleType) -> None:
    probs = torch.tensor([0.2, 0.8, 0.4]).view(1, 1, 1, 3)
    # Sorted 0.8, 0.4, 0.2 with weights 1, 0.5, 0.25: 1.05 / 1.75.
    assert sec.gwrp(probs, torch.tensor([[0.5]])).item() == pytest.approx(0.6)
    assert sec.gwrp(probs, torch.tensor([[0.0]])).item() == pytest.approx(0.8)  # max pooling
    assert sec.gwrp(probs, torch.tensor([[1.0]])).item() == pytest.approx(1.4 / 3)  # average


def test_seeding_loss_by_hand(sec: ModuleType) -> None:
    probs = torch.tensor([[[[0.5, 0.25]], [[0.5, 0.75]]]]).repeat(2, 1, 1, 1)
    cues = torch.tensor([[[[True, False]], [[False, True]]]]).repeat(2, 1, 1, 1)
    expected = -(math.log(0.5) + math.log(0.75)) / 2
    assert sec.seeding_loss(probs[:1], cues[:1]).item() == pytest.approx(expected)
    cues[1] = False  # an image without seeds adds 0 to the batch mean
    assert sec.seeding_loss(probs, cues).item() == pytest.approx(expected / 2)


def test_expansion_loss_by_hand(sec: ModuleType) -> None:
    # Background, a present class and an absent one, on two positions.
    probs = torch.tensor([[[[0.5, 0.2]], [[0.3, 0.7]], [[0.2, 0.1]]]])
    present = torch.tensor([[True, False]])
    g_bg = (0.5 + 0.999 * 0.2) / (1 + 0.999)
    g_present = (0.7 + 0.996 * 0.3) / (1 + 0.996)
    g_absent = 0.2  # decay 0: the maximum
    expected = -math.log(g_present) - math.log(1 - g_absent) - math.log(g_bg)
    assert sec.expansion_loss(probs, present).item() == pytest.approx(expected, rel=1e-6)


def test_mean_iou_by_hand(sec: ModuleType) -> None:
    truth = torch.tensor([[0, 0, 1, 1]])
    predicted = torch.tensor([[0, 1, 1, 1]])
    counts = sec.confusion(predicted, truth)
    # Background: 1 / 2; class 0 (label 1): 2 / 3; the other classes do not occur.
    assert sec.mean_iou(counts) == pytest.approx(100 * (0.5 + 2 / 3) / 2)


@pytest.mark.slow
def test_script_smoke(sec: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--train", "32", "--held-out", "8", "--epochs", "1", "--classifier-epochs", "1"]
    assert sec.main(args) == 0
    printed = capsys.readouterr().out
    assert "| CAM (GAP network) |" in printed and "| Grad-CAM (FC network) |" in printed
