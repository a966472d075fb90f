"""Smoke runs of the diagnose study scripts and benchmark, so they cannot rot (slow: run with
``-m slow``; no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _run(*argv: str) -> str:
    proc = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_bias_study_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bias.json"
    args = ["--train", "32", "--test", "8", "--epochs", "1", "--out", str(out)]
    printed = _run("scripts/bias_study.py", *args)
    assert "| biased |" in printed and "| rebalanced |" in printed
    results = json.loads(out.read_text())["results"]
    assert 0.0 <= results["biased"]["test_accuracy"] <= 1.0


@pytest.mark.slow
def test_adversarial_study_smoke(tmp_path: Path) -> None:
    out = tmp_path / "adversarial.json"
    printed = _run("scripts/diagnose_adversarial.py", "--size", "64", "--out", str(out))
    assert "overall (" in printed
    assert json.loads(out.read_text())["overall"]["maps"] > 0


@pytest.mark.slow
def test_bench_diagnose_quick_smoke() -> None:
    printed = _run("benchmarks/bench_diagnose.py", "--quick")
    assert "every image a failure" in printed and "per iteration" in printed
