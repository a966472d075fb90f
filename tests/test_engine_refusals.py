"""Inputs and models the engine cannot explain, each named in one line (issue 30, item 14):
an input smaller than the model's windows, a meta-device input, a TorchScript model, and
another thread's forward pass of the same model during an explanation."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from torch import nn

from gradcam import load_model
from gradcam.errors import GradCAMError
from gradcam.methods import create_method


@pytest.fixture(scope="module")
def shapes() -> nn.Module:
    return load_model("shapes").module


@pytest.mark.parametrize(
    "method", ["gradcam", "cam", "eigen-cam", "score-cam", "fullgrad", "integrated-gradients"]
)
def test_an_input_smaller_than_the_model_is_named(shapes: nn.Module, method: str) -> None:
    explain = create_method(method, shapes, "features")
    with pytest.raises(GradCAMError, match=r"\(1, 3, 1, 1\)"):
        explain(torch.rand(1, 3, 1, 1))


@pytest.mark.parametrize("method", ["gradcam", "cam", "eigen-cam", "score-cam", "occlusion"])
def test_a_meta_input_is_named(shapes: nn.Module, method: str) -> None:
    explain = create_method(method, shapes, "features")
    with pytest.raises(GradCAMError, match="meta device"):
        explain(torch.rand(1, 3, 64, 64, device="meta"))


def test_a_torchscript_model_is_named(shapes: nn.Module) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        scripted = torch.jit.script(shapes)
    for method in ("gradcam", "cam"):
        with pytest.raises(GradCAMError, match="TorchScript models cannot be explained"):
            create_method(method, scripted, "features")(torch.rand(1, 3, 64, 64))


class _OtherThread(nn.Module):
    """Runs ``model`` once in another thread, in the middle of the first forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[nn.Module] = []  # a list: not a submodule (the model holds this one)
        self.theirs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.models:
            model = self.models.pop()

            def run() -> None:
                with torch.no_grad():
                    self.theirs = model(torch.rand(1, 3, 8, 8))

            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
        return x


def test_another_threads_forward_is_named_and_left_alone() -> None:
    torch.manual_seed(0)
    other = _OtherThread()
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), other, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    other.models.append(net)
    with pytest.raises(GradCAMError, match="another forward pass of this model ran in another"):
        create_method("gradcam", net, net[0])(torch.rand(1, 3, 8, 8))
    assert other.theirs is not None and other.theirs.shape == (1, 2)  # their pass went on
    assert create_method("gradcam", net, net[0])(torch.rand(1, 3, 8, 8)).raw.shape == (1, 1, 6, 6)
