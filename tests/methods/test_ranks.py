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
from gradcam.methods.occlusion import Occlusion
from tests.helpers.state import assert_unchanged, snapshot

# Options that keep the sampling methods to a few passes on 2 cores.
CHEAP: dict[str, dict[str, Any]] = {
    "smooth-gradcam++": {"num_samples": 2},
    "integrated-gradients": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "ss-cam": {"num_samples": 2},
    "is-cam": {"num_samples": 2},
    "occlusion": {"window": 4, "stride": 4},
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


def mean_net(rank: int) -> nn.Module:
    """``y = mean(x)`` over every position of a one-channel input."""
    pool = {1: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool3d}[rank]
    head = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(1.0)
    return nn.Sequential(pool(1), nn.Flatten(), head).eval()


def test_occlusion_segments_and_cubes_by_hand() -> None:
    # Segments of 2 on (1, 2, 3, 4): hiding one drops the mean by its sum / 4.
    signal = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    found = Occlusion(mean_net(1), window=2, stride=2)(signal, 0)
    torch.testing.assert_close(found.raw[0, 0], torch.tensor([0.75, 0.75, 1.75, 1.75]))
    # Cubes of 2 with stride 1 on a 3x2x2 volume: 2 windows along the depth, each 8 voxels.
    volume = torch.arange(12.0).view(1, 1, 3, 2, 2)
    found = Occlusion(mean_net(3), window=2, stride=1)(volume, 0)
    first, second = volume[0, 0, :2].sum() / 12, volume[0, 0, 1:].sum() / 12
    expected = torch.stack([first, (first + second) / 2, second]).view(3, 1, 1).expand(3, 2, 2)
    torch.testing.assert_close(found.raw[0, 0], expected)
    with pytest.raises(GradCAMError, match=r"window \(4, 4\) gives 2 sides.*give an int or 3"):
        Occlusion(mean_net(3), window=(4, 4))(volume, 0)
