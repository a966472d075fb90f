"""load_model: the embedded default, torchvision names, weights files, class names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import gradcam
from gradcam import ModelLoadError, TargetError, load_model


def test_embedded_default(lite0: gradcam.LoadedModel) -> None:
    assert lite0.name == "efficientnet_lite0" and lite0.pretrained
    assert not lite0.module.training
    assert len(lite0.class_names) == 1000 and lite0.class_names[967] == "espresso"
    assert lite0.default_layer == "_head_act"
    assert lite0.preprocess.size == 224


def test_class_index(lite0: gradcam.LoadedModel) -> None:
    assert lite0.class_index("espresso") == 967
    assert lite0.class_index("Egyptian cat") == 285
    assert lite0.class_index("967") == 967
    assert lite0.class_index(3) == 3
    # A bad class is a bad target, not a model that failed to load.
    with pytest.raises(TargetError, match="ambiguous") as error:
        lite0.class_index("cat")
    assert not isinstance(error.value, ModelLoadError)
    with pytest.raises(TargetError, match="did you mean 'espresso'"):
        lite0.class_index("espreso")
    with pytest.raises(TargetError, match="out of range"):
        lite0.class_index("1000")


def test_unknown_model_suggests() -> None:
    with pytest.raises(ModelLoadError, match="did you mean resnet50"):
        load_model("resnet5O")


def test_torchvision_without_weights_warns() -> None:
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_model("resnet18")
    assert not loaded.pretrained and loaded.default_layer == "layer4"


def test_torchvision_with_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None, num_classes=10)
    path = tmp_path / "fine_tuned.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = load_model("resnet18", weights=path)
    assert loaded.pretrained and len(loaded.class_names) == 10
    assert torch.equal(loaded.module.fc.weight, source.fc.weight)


def test_bad_weights_files(tmp_path: Path) -> None:
    text = tmp_path / "weights.pt"
    text.write_text("not weights")
    with pytest.raises(ModelLoadError, match="not a PyTorch weights file"):
        load_model("resnet18", weights=text)
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model("resnet18", weights=tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), wrong)
    with pytest.raises(ModelLoadError, match="does not fit resnet18"):
        load_model("resnet18", weights=wrong)
