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


def test_bench_peers_quick_smoke(tmp_path: Path) -> None:
    """One case, one round, every installed library, memory at batch 1: the harness runs, the
    report names every library (a missing one is reported as skipped, never silently dropped),
    and the peers' Grad-CAM maps agree with ours (a fast wrong answer must not pass)."""
    import importlib.util

    script = SCRIPT.with_name("bench_peers.py")
    out, png = tmp_path / "BENCHMARKS.md", tmp_path / "ratios.png"
    out.write_text("# Benchmarks\n\nKept text.\n")
    argv = [sys.executable, str(script), "--quick", "--models", "efficientnet_lite0"]
    proc = subprocess.run(
        [*argv, "--out", str(out), "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = out.read_text()
    assert report.startswith("# Benchmarks\n\nKept text.\n")
    assert png.stat().st_size > 0
    modules = {"captum": "captum", "torchcam": "torchcam", "pytorch-grad-cam": "pytorch_grad_cam"}
    present = [lib for lib, mod in modules.items() if importlib.util.find_spec(mod)]
    for lib in modules:
        if lib not in present:
            assert f"SKIPPED {lib}" in proc.stderr
            assert lib in report.split("Skipped (not installed):")[1]
    prefix = "| efficientnet_lite0 224x224 | Grad-CAM, 1 image, 1 class |"
    timed, agreement = (
        [line for line in report.splitlines() if line.startswith(prefix) and kind(line)]
        for kind in (lambda line: "(min" in line, lambda line: "(min" not in line)
    )
    assert len(timed) == 1 and timed[0].count("(min") == 1 + len(present), timed
    assert len(agreement) == 1, agreement
    diffs = [float(v) for v in agreement[0].split("|")[3 : 3 + len(present)]]
    assert all(d < 1e-3 for d in diffs), agreement[0]
    assert "| efficientnet_lite0 | 1 |" in report


def test_bench_methods_quick_smoke() -> None:
    """Two rounds of three methods at 64 px: the harness runs and the peers' maps agree."""
    script = SCRIPT.with_name("bench_methods.py")
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--model", "efficientnet_lite0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "`gradcam`",
        "`counterfactual`",
        "`guided-backprop`",
    ]
    assert "pytorch-grad-cam:" in rows[0] and "torchcam:" in rows[0]
    diffs = [float(part.split("diff ")[1].split()[0]) for part in rows[0].split("; ")]
    assert all(d < 1e-3 for d in diffs), rows[0]
