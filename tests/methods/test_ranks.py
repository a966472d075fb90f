"""Every method of the registry on signals (B, C, L) and volumes (B, C, D, H, W): it explains
them, with the shapes of 2-D and finite maps, exactly when its entry lists the rank, and
refuses them otherwise with one line naming why."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import gradcam
from gradcam.errors import GradCAMError
from gradcam.methods import method_specs
from tests.helpers.state import assert_unchanged, snapshot

# Options that keep the sampling methods to a few passes on 2 cores.
CHEAP: dict[str, dict[str, Any]] = {
    "smooth-gradcam++": {"num_samples": 2},
    "integrated-gradients": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "ss-cam": {"num_samples": 2},
    "is-cam": {"num_samples": 2},
}


def tiny_net(rank: int) -> nn.Module:
    """Conv, BatchNorm, ReLU twice, global average pooling and a linear head, in ``rank`` D."""
    torch.manual_seed(0)
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[rank]
    norm = {1: nn.BatchNorm1d, 3: nn.BatchNorm3d}[rank]
    pool = {1: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool3d}[rank]
    net = nn.Sequential(
        conv(2, 4, 3, padding=1),
        norm(4),
        nn.ReLU(),
        conv(4, 5, 3, stride=2),
        nn.ReLU(),
        pool(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    return net.eval()


SHAPES = {1: (2, 2, 16), 3: (2, 2, 5, 8, 8)}


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("spec", method_specs(), ids=lambda s: s.name)
def test_every_method_explains_or_refuses_the_rank(spec: Any, rank: int) -> None:
    net = tiny_net(rank)
    x = torch.randn(SHAPES[rank], generator=torch.Generator().manual_seed(3))
    before = snapshot(net)
    method = gradcam.create_method(spec.name, net, **CHEAP.get(spec.name, {}))
    if rank not in spec.ranks:
        with pytest.raises(GradCAMError, match=r"explains \(B, C, H, W\) images only") as error:
            method(x, gradcam.TopK(2))
        assert "\n" not in str(error.value)
        return
    result = method(x, gradcam.TopK(2))
    spatial = x.shape[2:]
    expected = (2, 2, *spatial) if spec.kind == "heatmap" else (2, 2, 2, *spatial)
    assert result.maps.shape == expected
    assert torch.isfinite(result.maps).all()
    if spec.kind == "heatmap":
        assert float(result.maps.min()) >= 0 and float(result.maps.max()) <= 1
        if hasattr(result, "raw") and spec.needs.layer:
            assert result.raw.dim() == 2 + rank  # (B, K, *the layer's spatial size)
    assert_unchanged(before, net)
