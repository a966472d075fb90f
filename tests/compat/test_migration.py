"""The snippets of docs/migration.md run as written, and its side-by-side spellings agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "migration.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return [body for lang, body in FENCE.findall(PAGE.read_text()) if lang == "python"]


def run(block: str) -> dict[str, Any]:
    torch.manual_seed(0)  # the same random weights in every spelling
    namespace: dict[str, Any] = {"__name__": "migration"}
    exec(compile(block, str(PAGE), "exec"), namespace)
    return namespace


def test_the_page_has_the_readme_in_three_spellings_and_more() -> None:
    blocks = python_blocks()
    assert len(blocks) == 10
    assert "from pytorch_grad_cam import GradCAM" in blocks[0]
    assert blocks[1] == blocks[0].replace("pytorch_grad_cam", "gradcam.compat.pytorch_grad_cam")


def test_readme_example_gives_pytorch_grad_cams_arrays() -> None:
    pytest.importorskip("pytorch_grad_cam")
    theirs, ours, native = (run(block) for block in python_blocks()[:3])
    np.testing.assert_allclose(ours["grayscale_cam"], theirs["grayscale_cam"], atol=1e-4)
    assert np.abs(ours["visualization"].astype(int) - theirs["visualization"]).max() <= 1
    torch.testing.assert_close(ours["model_outputs"], theirs["model_outputs"].detach())
    # gradcam's own maps upsample before normalizing: the same map within interpolation.
    np.testing.assert_allclose(native["grayscale_cam"], theirs["grayscale_cam"], atol=2e-2)
    torch.testing.assert_close(native["model_outputs"], theirs["model_outputs"].detach())


def test_one_class_per_image_snippet_runs() -> None:
    namespace = run(python_blocks()[3])
    assert namespace["arrays"].dtype == np.float32


def test_several_layers_in_three_spellings_agree() -> None:
    pytest.importorskip("pytorch_grad_cam")
    theirs, ours, native = (run(block) for block in python_blocks()[4:7])
    assert "pytorch_grad_cam import GradCAM" in python_blocks()[4]
    np.testing.assert_allclose(ours["grayscale_cam"], theirs["grayscale_cam"], atol=1e-4)
    np.testing.assert_allclose(native["grayscale_cam"], theirs["grayscale_cam"], atol=1e-4)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dff_in_three_spellings_agree() -> None:
    pytest.importorskip("pytorch_grad_cam")
    theirs, ours, native = (run(block) for block in python_blocks()[7:10])
    assert "DeepFeatureFactorization" in python_blocks()[7]
    np.testing.assert_allclose(ours["concepts"], theirs["concepts"], rtol=1e-3, atol=1e-3)
    for mine, peer in zip(ours["batch_explanations"], theirs["batch_explanations"], strict=True):
        np.testing.assert_allclose(mine, peer, atol=2e-3)
    want = theirs["concept_outputs"]
    for got in (ours["concept_outputs"], native["concept_outputs"].numpy()):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert native["concept_maps"].shape == (1, 4, 4, 4)
