"""Several layers in one call (registry ``multi_layer``): exact maps on a hand-weighted net,
one forward pass, pytorch-grad-cam's ``target_layers=[a, b]`` agreement, and refusals."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from torch import nn

from gradcam import GradCAMError
from gradcam.errors import LayerError
from gradcam.methods import GradCAM, create_method, explain_methods, method_specs
from gradcam.methods.multi_layer import combine_layers

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

MULTI = [s.name for s in method_specs() if s.multi_layer]


def pooled_net() -> nn.Sequential:
    """``a`` (1x1 conv, weight 1) at 4x4, 2x2 average pooling, ``b`` (1x1 conv, weight 1) at
    2x2, then class 0 = the sum of ``b`` and class 1 = minus it."""
    a, b = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
    head = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(1.0)
        head.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
    return nn.Sequential(a, nn.AvgPool2d(2), b, nn.Flatten(), head).eval()


# Columns 0, 0, 4, 4: A_a = x, A_b = [[0, 4], [0, 4]].
X = torch.tensor([0.0, 0.0, 4.0, 4.0]).expand(1, 1, 4, 4).contiguous()


def test_exact_maps_on_a_hand_weighted_net() -> None:
    """Class 0: alpha_a = 1/4, L_a = x/4, scaled [0, 0, 1, 1] per row; alpha_b = 1, L_b = A_b,
    scaled [[0, 1], [0, 1]] and upsampled to [0, 1/4, 3/4, 1]; the mean is
    [0, 1/8, 7/8, 1]. Class 1: both maps are ReLU'd to zero."""
    net = pooled_net()
    result = GradCAM(net, ["0", "2"])(X, [0, 1])
    row = torch.tensor([0.0, 0.125, 0.875, 1.0])
    torch.testing.assert_close(result.raw[0, 0], row.expand(4, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.maps[0, 0], row.expand(4, 4), atol=1e-6, rtol=0)
    assert result.raw.shape == (1, 2, 4, 4) and not result.raw[0, 1].any()
    assert result.layer == "0 + 2" and result.weights is None
    assert result.classes.tolist() == [[0, 1]]


def test_combine_layers_is_the_mean_of_scaled_maps() -> None:
    fine = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    coarse = torch.full((1, 1, 1, 1), 2.0)
    want = (fine - 1) / (6 + 1e-7) / 2
    torch.testing.assert_close(combine_layers([fine, coarse], (2, 2)), want)


def test_one_forward_pass_and_no_hooks_left() -> None:
    net = pooled_net()
    calls = []
    handle = net.register_forward_hook(lambda *_: calls.append(1))
    try:
        create_method("gradcam++", net, ["0", "2"])(X, [0, 1])
    finally:
        handle.remove()
    assert len(calls) == 1
    assert not any(m._forward_hooks for m in net.modules())


def test_a_list_of_one_layer_is_that_layer() -> None:
    net = pooled_net()
    one = create_method("eigen-cam", net, ["2"])(X, [0])
    torch.testing.assert_close(one.raw, create_method("eigen-cam", net, "2")(X, [0]).raw)


def test_explain_methods_takes_several_layers() -> None:
    net = pooled_net()
    found = explain_methods(["gradcam", "layercam"], net, X, [0], layer=["0", "2"])
    assert found["gradcam"].layer == found["layercam"].layer == "0 + 2"


@pytest.mark.parametrize("name", ["eigen-cam", "score-cam", "cam", "finer-cam"])
def test_methods_without_multi_layer_refuse_several(name: str) -> None:
    with pytest.raises(GradCAMError, match=r"explains through one layer.*gradcam, "):
        create_method(name, pooled_net(), ["0", "2"])


def test_repeated_and_unrun_layers_are_refused() -> None:
    net = pooled_net()
    with pytest.raises(LayerError, match="given twice"):
        GradCAM(net, ["0", net[0]])

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.extra = pooled_net(), nn.Conv2d(1, 1, 1)  # extra never runs

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    with pytest.raises(LayerError, match="'extra' did not run"):
        GradCAM(Unused(), ["net.0", "extra"])(X, [0])


@pytest.mark.parametrize("name", [n for n in MULTI if n != "counterfactual"])
def test_agrees_with_pytorch_grad_cam(name: str) -> None:
    """pytorch-grad-cam's ``target_layers=[a, b]``: per layer ReLU, ``scale_cam_image`` to the
    input, mean, ``scale_cam_image``; ours normalized is the same map."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()
    x = torch.randn(2, 3, 12, 12)
    classes = {
        "gradcam": "GradCAM",
        "hirescam": "HiResCAM",
        "gradcam-elementwise": "GradCAMElementWise",
        "gradcam++": "GradCAMPlusPlus",
        "xgradcam": "XGradCAM",
        "layercam": "LayerCAM",
        "eigen-gradcam": "EigenGradCAM",
    }
    options = {"sign": "lapack"} if name == "eigen-gradcam" else {}
    options = {"eps": 1e-6} if name == "gradcam++" else options
    ours = create_method(name, net, ["1", "3"], **options)(x, torch.tensor([[0], [2]]))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cam = getattr(pgc, classes[name])(net, [net[1], net[3]])
        want = cam(x, [ClassifierOutputTarget(0), ClassifierOutputTarget(2)])
    np.testing.assert_allclose(ours.maps[:, 0].numpy(), want, atol=1e-4)
