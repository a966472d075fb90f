"""RefineCAM: a hand-worked two-layer product, agreement with pytorch-grad-cam's ``RefineCAM``
(Grad-CAM and Grad-CAM++ bases), the layers option as text, bad options."""

from __future__ import annotations

import pytest
import pytorch_grad_cam as pgc
import torch
from helpers.models import SmallCNN
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

import gradcam
from gradcam import GradCAMError, RefineCAM
from gradcam.methods.refine_cam import scaled_maps


class TwoLayerNet(nn.Module):
    """``a`` (identity) -> ``b`` (2 x 2 average pooling) -> GAP -> fc ``[[1], [-1]]``: on a
    (1, 1, 2, 4) input ``y_0`` is the input's mean, ``dy_0/da = 1/8`` and ``dy_0/db = 1/2``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Identity()
        self.b = nn.AvgPool2d(2)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.b(self.a(x)).mean(dim=(2, 3)))


X = torch.arange(8.0).reshape(1, 1, 2, 4)


def test_product_of_two_layers() -> None:
    # At a: Grad-CAM = x / 8, scaled x / 7. At b: b = (2.5, 4.5), Grad-CAM = b / 2, scaled
    # (0, 1), resized bilinearly to 4 columns (0, 1/4, 3/4, 1) on both rows.
    result = RefineCAM(TwoLayerNet(), "a", layers=("b",), base="gradcam")(X, [0])
    expected = torch.tensor([[0.0, 0.25, 1.5, 3.0], [0.0, 1.25, 4.5, 7.0]]) / 7
    torch.testing.assert_close(result.raw[0, 0], expected)
    torch.testing.assert_close(result.maps[0, 0], expected)
    assert result.layer == "a, b" and result.weights is None
    # One layer: the base map, scaled. Class 1 has no evidence: all zeros, never NaN.
    alone = RefineCAM(TwoLayerNet(), "a", base="gradcam")(X, [0, 1])
    torch.testing.assert_close(alone.raw[0, 0], X[0, 0] / 7)
    assert torch.equal(alone.maps[0, 1], torch.zeros(2, 4))


def test_scaled_maps_scale_again_after_resizing() -> None:
    # up((0, 1, 0)) to 6 columns peaks at 0.75: scaled again to 1.
    found = scaled_maps(torch.tensor([[0.0, 2.0, 0.0]]), (1, 6))
    torch.testing.assert_close(found, torch.tensor([[0.0, 1 / 3, 1.0, 1.0, 1 / 3, 0.0]]))


@pytest.mark.parametrize(
    ("base", "options", "peer"),
    [("gradcam", None, pgc.GradCAM), ("gradcam++", {"eps": 1e-6}, pgc.GradCAMPlusPlus)],
)
def test_agrees_with_pytorch_grad_cam(
    base: str, options: dict[str, float] | None, peer: type
) -> None:
    model = SmallCNN(seed=2).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    method = RefineCAM(model, "features.6", layers="features.3", base=base, base_options=options)
    ours = method(x, torch.tensor([[1], [3]])).maps[:, 0]
    refine = pgc.RefineCAM(model, [model.features[6], model.features[3]], base_method=peer)
    theirs = refine(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(3)])
    torch.testing.assert_close(ours, torch.from_numpy(theirs), rtol=0, atol=1e-4)


def test_every_layer_explains_the_first_layers_classes() -> None:
    model = SmallCNN(seed=5).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = RefineCAM(model, "features.6", layers=("features.3",))(x, gradcam.TopK(2))
    single = gradcam.GradCAMPlusPlus(model, "features.6")(x, gradcam.TopK(2))
    assert torch.equal(result.classes, single.classes)
    torch.testing.assert_close(result.scores, single.scores)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base": "occlusion"}, "base must be a heatmap method that explains through a layer"),
        ({"base": "refine-cam"}, "base must be a heatmap method"),
        ({"base": "nope"}, "unknown method 'nope'"),
        ({"layers": 5}, "layers must be a tuple of layer names"),
        ({"layers": "nope"}, "no layer named 'nope'"),
        ({"base_options": {"windw": 1}}, "has no option 'windw'"),
        ({"base_options": 3}, "base_options must be a mapping"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(GradCAMError, match=message):
        gradcam.create_method("refine-cam", SmallCNN(), "features", **options)


def test_registry_entry_and_layers_as_text() -> None:
    spec = gradcam.method_spec("refine-cam")
    assert spec.cls is RefineCAM and "2605.14641" in spec.citation
    text = spec.option("layers").parse("features.3, features.maxpool")
    assert text == "features.3, features.maxpool"  # split on commas only, by the method
    method = spec.create(SmallCNN(), "features.6", layers="features.3,features.0")
    assert method.layers == ("features.3", "features.0")
