"""A one-round smoke run of the benchmark harness, so the script cannot rot (no timing checks)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_bench_peers_transformer_quick_smoke() -> None:
    """Swin-T (the smaller transformer) through the harness: its layer is gradcam's automatic
    one, every installed peer's map agrees with ours through the reshape each one is given, and
    the issue's target against forward + gradient to the layer is reported."""
    script = SCRIPT.with_name("bench_peers.py")
    argv = [sys.executable, str(script), "--quick", "--models", "swin_t", "--memory-batches"]
    proc = subprocess.run([*argv, "none"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    prefix = "| swin_t 224x224 | Grad-CAM, 1 image, 1 class |"
    agreement = [line for line in lines if line.startswith(prefix) and "(min" not in line]
    assert len(agreement) == 1, agreement
    cells = agreement[0].split("|")[3:6]
    assert all(float(v) < 1e-3 for v in cells if v.strip() != "n/a"), agreement[0]
    assert "all zero" not in agreement[0]
    assert any(line.startswith("| swin_t 224x224 (`norm`) |") for line in lines)
    assert any(
        line.startswith("| Grad-CAM, 1 image, 1 class | swin_t | forward + grad to layer |")
        for line in lines
    )


def test_bench_peers_vit_layout_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ViT transforms the peers get, on a tiny ViT: the wrapped layer Captum hooks leaves the
    model's output unchanged, Captum's and torchcam's raw maps equal ours, and so do
    pytorch-grad-cam's upsampled maps (it returns no raw map). vit_b_16 itself is too big for
    the default run; the Swin smoke test runs the script."""
    from torchvision.models import VisionTransformer

    import gradcam

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import bench_peers

    torch.manual_seed(0)
    vit = VisionTransformer(64, 16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    vit.heads.head.reset_parameters()  # torchvision's zero head gives all-zero maps
    vit.eval()
    x, layer = torch.randn(2, 3, 64, 64), "encoder.layers.encoder_layer_1.ln_1"
    layout = bench_peers.LAYOUTS["vit_b_16"]
    tokens = torch.randn(2, 17, 32)
    assert torch.equal(layout.from_maps(layout.to_maps(tokens), tokens), tokens)
    assert gradcam.find_default_layer(vit, x) == layer
    ours = gradcam.GradCAM(vit, layer)(x, torch.tensor([[1], [2]])).raw[:, 0]
    assert ours.shape == (2, 4, 4) and bool(ours.amax(dim=(1, 2)).gt(0).all())

    tapped = copy.deepcopy(vit)
    hooked = bench_peers.tapped(tapped, layer, layout)
    with torch.no_grad():
        assert torch.equal(tapped(x), vit(x))
    pytest.importorskip("captum")
    from captum.attr import LayerGradCam

    lgc = LayerGradCam(tapped, tapped.get_submodule(hooked))
    captum = lgc.attribute(x, target=[1, 2], relu_attributions=True)[:, 0]
    torch.testing.assert_close(captum, ours, rtol=1e-5, atol=1e-7)

    pytest.importorskip("torchcam")
    from torchcam.methods import GradCAM as TorchcamGradCAM

    model = copy.deepcopy(vit)
    with TorchcamGradCAM(model, layer, reshape_transform=layout.to_maps) as extractor:
        torchcam = extractor(class_idx=[1, 2], scores=model(x), normalized=False)[0]
    torch.testing.assert_close(torchcam, ours, rtol=1e-5, atol=1e-7)

    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = copy.deepcopy(vit)
    pgc = PgcGradCAM(model, [model.get_submodule(layer)], reshape_transform=layout.to_maps)
    theirs = pgc(x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    # It returns maps upsampled to the input and min-max normalized: ours, shown the same way.
    shown = bench_peers.upsampled(ours, (64, 64))
    torch.testing.assert_close(torch.from_numpy(theirs), shown, rtol=0, atol=1e-5)


def test_bench_video_quick_smoke() -> None:
    """r3d_18 at 4 x 32 x 32, one round: the table has every case, and the peers' raw maps
    agree with ours (a fast wrong answer must not pass)."""
    script = SCRIPT.with_name("bench_video.py")
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--no-memory"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    for case in ("forward", "fwd_grad", "gradcam_1", "gradcam_top5"):
        assert f"| {case} |" in proc.stdout
    marker = "Largest |peer raw - ours raw|: "
    agreement = proc.stdout.split(marker)[1].splitlines()[0] if marker in proc.stdout else ""
    for pair in filter(None, agreement.split(", ")):
        assert float(pair.split()[1]) < 1e-5, pair
