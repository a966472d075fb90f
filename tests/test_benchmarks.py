"""A one-round smoke run of the benchmark harness, so the script cannot rot (no timing checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_core.py"


def test_bench_core_quick_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--models", "efficientnet_lite0", "--no-memory"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| efficientnet_lite0 (`_head_act`) |" in proc.stdout


def test_bench_evaluate_quick_smoke() -> None:
    script = SCRIPT.with_name("bench_evaluate.py")
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "| shapes | synthetic | 8 |" in proc.stdout
