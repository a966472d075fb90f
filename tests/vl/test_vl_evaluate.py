"""Section 8's scores say what they hold: names that are not the evaluate protocols' names."""

from __future__ import annotations

import dataclasses
import threading

import torch

import gradcam.evaluate as protocols
from gradcam.vl import load_captioner, load_vqa, vl_scene
from gradcam.vl.evaluate import (
    OcclusionCorrelation,
    PointingScore,
    Ratio,
    occlusion_correlation,
    word_pointing,
)


def test_word_pointing_returns_a_score_not_the_pointing_protocol() -> None:
    score = word_pointing(load_captioner(), [vl_scene(0)])
    assert isinstance(score, PointingScore) and score.total == 4
    assert PointingScore is not protocols.Pointing
    assert not hasattr(protocols.Pointing, "accuracy")  # the protocol is not a result


def test_occlusion_correlation_counts_questions() -> None:
    (row,) = occlusion_correlation(load_vqa(), [vl_scene(0)], ["gradcam"], window=32, stride=32)
    assert isinstance(row, OcclusionCorrelation) and row.method == "gradcam"
    assert row.questions == 4  # two objects, a color and a shape question each
    assert [f.name for f in dataclasses.fields(Ratio)][-1] == "regions"
    assert -1.0 <= row.mean <= 1.0


def test_generate_restores_every_flag_and_takes_turns() -> None:
    captioner = load_captioner().train()
    captioner.encoder.eval()  # a frozen part inside a training model
    flags = [m.training for m in captioner.modules()]
    x = torch.rand(1, 3, 96, 96)
    said = captioner.generate(x)
    assert [m.training for m in captioner.modules()] == flags
    seen: list[list[str]] = []
    threads = [threading.Thread(target=lambda: seen.append(captioner.generate(x))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert seen == [said, said]
    assert [m.training for m in captioner.modules()] == flags
