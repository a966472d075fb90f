"""load_model: the embedded default, torchvision names, weights files, class names."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from helpers.caches import fill_torchvision
from PIL import Image

import gradcam
import gradcam.weights
from gradcam import ModelLoadError, TargetError, load_model
from gradcam.images import Preprocess


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


def test_torchvision_random_weights_only_when_asked() -> None:
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_model("resnet18", weights="random")
    assert not loaded.pretrained and loaded.default_layer == "layer4"
    assert loaded.class_names == gradcam.models.imagenet_classes()


def test_torchvision_default_weights_from_torch_cache() -> None:
    file, source = fill_torchvision("squeezenet1_1")
    assert file.parent == Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pretrained: no warning
        loaded = load_model("squeezenet1_1")
    assert loaded.pretrained and not loaded.module.training
    weight = source.state_dict()["features.0.weight"].half().float()
    assert torch.equal(loaded.module.state_dict()["features.0.weight"], weight)
    meta = torchvision.models.SqueezeNet1_1_Weights.DEFAULT.meta["categories"]
    assert loaded.class_names == tuple(meta) and loaded.class_names[0] == "tench"
    assert loaded.preprocess == Preprocess(224, interpolation="bilinear")


def test_torchvision_weights_by_enum_name() -> None:
    fill_torchvision("mobilenet_v2", "IMAGENET1K_V1", seed=1)
    _, v2 = fill_torchvision("mobilenet_v2", "IMAGENET1K_V2", seed=2)
    loaded = load_model("mobilenet_v2", weights="imagenet1k_v2")  # any case
    expected = v2.state_dict()["classifier.1.weight"].half().float()
    assert torch.equal(loaded.module.state_dict()["classifier.1.weight"], expected)
    default = load_model("mobilenet_v2")  # DEFAULT is IMAGENET1K_V2
    assert torch.equal(default.module.state_dict()["classifier.1.weight"], expected)
    v1 = load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    assert not torch.equal(v1.module.state_dict()["classifier.1.weight"], expected)
    with pytest.raises(ModelLoadError) as error:
        load_model("mobilenet_v2", weights="IMAGENET1K_V3")
    message = str(error.value)
    assert "no such file, nor weights of mobilenet_v2" in message
    assert "IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT, random" in message


def test_torchvision_offline_empty_cache_fails_fast() -> None:
    cache = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        load_model("resnet18")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "\n" not in message
    assert f"weights resnet18 IMAGENET1K_V1 are not in the cache {cache}" in message
    assert "downloads are off (HF_HUB_OFFLINE=1)" in message


def test_torchvision_unreachable_host_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    hosts: list[str] = []
    monkeypatch.setattr(gradcam.weights, "_reachable", lambda url: hosts.append(url) or False)
    with pytest.raises(ModelLoadError, match=r"download\.pytorch\.org cannot be reached"):
        load_model("resnet18")
    assert hosts == [torchvision.models.ResNet18_Weights.DEFAULT.url]


def test_reachable_never_waits_long() -> None:
    start = time.perf_counter()
    assert not gradcam.weights._reachable("http://127.0.0.1:9/nothing")  # refused at once
    assert not gradcam.weights._reachable("not a url")
    assert time.perf_counter() - start < gradcam.weights.PROBE_SECONDS * 2 + 1


def test_damaged_cache_file_is_named() -> None:
    file, _ = fill_torchvision("squeezenet1_1")
    file.write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match=f"weights squeezenet1_1 IMAGENET1K_V1 \\({file}\\)"):
        load_model("squeezenet1_1")
    file.unlink()


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


FACTORY = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    )


def not_a_model():
    return 42


def broken():
    raise OSError("disk on fire")
"""


def test_user_factory_from_a_file(tmp_path: Path) -> None:
    source = tmp_path / "my_models.py"
    source.write_text(FACTORY)
    with pytest.raises(ModelLoadError, match="give its weights"):
        load_model(f"{source}:build")  # no silent random weights
    with pytest.warns(UserWarning, match="random weights"):
        random = load_model(f"{source}:build", weights="random")
    assert not random.pretrained and random.default_layer == "1"
    assert random.class_names == ("class 0", "class 1", "class 2")
    trained = random.module.state_dict()
    trained = {k: v + 1 for k, v in trained.items()}
    torch.save(trained, tmp_path / "trained.pt")
    loaded = load_model(f"{source}:build", weights=tmp_path / "trained.pt")
    assert loaded.pretrained and torch.equal(loaded.module[4].weight, trained["4.weight"])


def test_user_factory_from_a_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "user_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_model("user_nets:build", weights="random")
    assert isinstance(loaded.module, torch.nn.Sequential)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("FILE:not_a_model", "returned int, not a torch.nn.Module"),
        ("FILE:broken", "broken() failed: OSError: disk on fire"),
        ("FILE:missing", "has no function 'missing'"),
        ("missing_file.py:build", "model file missing_file.py: no such file"),
        ("no_such_package_here.nets:build", "cannot import no_such_package_here.nets"),
    ],
)
def test_user_factory_errors(tmp_path: Path, spec: str, expected: str) -> None:
    source = tmp_path / "my_models.py"
    source.write_text(FACTORY)
    with pytest.raises(ModelLoadError) as error:
        load_model(spec.replace("FILE", str(source)), weights="random")
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_user_factory_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from gradcam.cli import main

    source = tmp_path / "my_models.py"
    source.write_text(FACTORY)
    Image.new("RGB", (40, 40), "red").save(tmp_path / "red.png")
    args = ["explain", str(tmp_path / "red.png"), "--model", f"{source}:build"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "give its weights" in capsys.readouterr().err
    assert main([*args, "--weights", "random", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "red" / "summary.json").is_file()


def test_torchvision_downloads_a_missing_file_when_online(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online: torchvision's own download (here a stand-in) fills torch's cache, once."""
    source = tmp_path / "shufflenet.pth"
    torch.manual_seed(3)
    model = torchvision.models.shufflenet_v2_x0_5(weights=None)
    torch.save(model.state_dict(), source)
    fetched: list[str] = []

    def download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        fetched.append(url)
        Path(dst).write_bytes(source.read_bytes())

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(gradcam.weights, "_reachable", lambda url: True)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    url = torchvision.models.ShuffleNet_V2_X0_5_Weights.DEFAULT.url
    for _ in range(2):
        loaded = load_model("shufflenet_v2_x0_5")
        assert torch.equal(loaded.module.fc.weight, model.fc.weight)
    assert fetched == [url]
    assert gradcam.weights.torch_checkpoint(url).is_file()


def test_every_torchvision_classifier_has_default_weights_to_load() -> None:
    """Metadata only (no weights read): every classifier name resolves its DEFAULT weights,
    their cache file, ImageNet's class names and a preprocessing without a crop."""
    from gradcam.models import _enum_preprocess
    from gradcam.weights import torch_checkpoint, torchvision_member

    names = torchvision.models.list_models(torchvision.models)
    assert len(names) >= 80
    for name in names:
        member = torchvision_member(name, "DEFAULT")
        assert member is not None, name
        assert torch_checkpoint(member.url).suffix in (".pth", ".pt"), name
        assert len(member.meta["categories"]) == 1000, name
        preprocess = _enum_preprocess(member)
        assert 200 <= preprocess.size <= 600, name  # EfficientNet-B7: 600
    assert _enum_preprocess(torchvision.models.Inception_V3_Weights.DEFAULT).size == 299
    vit = _enum_preprocess(torchvision.models.ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1)
    assert vit.size == 384 and vit.interpolation == "bicubic"


def test_torchvision_vit_takes_photos_of_any_shape() -> None:
    """torchvision's ViT asserts a 224 x 224 input: photos are resized to the square, not
    cropped (a non-square photo was an AssertionError traceback)."""
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_model("vit_b_32", weights="random")
    assert loaded.preprocess.max_ratio == 1.0
    x = loaded.preprocess(Image.new("RGB", (300, 200)))
    assert x.shape == (1, 3, 224, 224)
    with pytest.warns(UserWarning, match="random weights"):
        cnn = load_model("squeezenet1_1", weights="random")
    assert cnn.preprocess.max_ratio > 1.0  # a CNN keeps the photo's aspect
