"""timm and Hugging Face models: GradCAM on them, and load_model("timm:NAME") / ("hf:...").

Every model here has random weights and is built from a config: nothing is downloaded. Weights
by name are read from the session's Hugging Face cache, filled here (``helpers/caches.py``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.caches import fill_hub, half_state
from helpers.state import assert_unchanged, snapshot
from PIL import Image

import gradcam.models
from gradcam import GradCAM, ModelLoadError, load_model
from gradcam.images import Preprocess
from gradcam.weights import hub_cache


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hugging Face libraries must not reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _image(size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, size, size, generator=generator)


def _assert_map(result: Any, layer: str) -> None:
    assert result.layer == layer
    assert torch.isfinite(result.maps).all() and torch.isfinite(result.raw).all()
    assert float(result.maps.std()) > 0, "the map is constant"


def _one_line(error: pytest.ExceptionInfo[ModelLoadError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# timm ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "layer"),
    [
        ("resnet50", {}, "layer4"),
        ("vit_small_patch16_224", {"img_size": 64}, "blocks.11.norm1"),
        # timm's ConvNeXt: the last stage's output is that of the `stages` container itself.
        ("convnext_tiny", {}, "stages"),
        # BatchNormAct2d: conv_head's BatchNorm with its SiLU, the last feature maps.
        ("efficientnet_b0", {}, "bn2"),
    ],
)
def test_timm_default_layer(name: str, kwargs: dict[str, Any], layer: str) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    before = snapshot(model)
    result = GradCAM(model)(_image(64))
    _assert_map(result, layer)
    assert result.maps.shape == (1, 1, 64, 64)
    assert_unchanged(before, model)


def test_timm_named_layer() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("convnext_tiny", pretrained=False).eval()
    result = GradCAM(model, "stages.2")(_image(64))
    _assert_map(result, "stages.2")
    assert result.raw.shape == (1, 1, 4, 4)


def test_load_timm_with_weights_file(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from timm.data import resolve_data_config

    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    loaded = load_model("timm:resnet18", weights=path)
    assert loaded.pretrained and loaded.name == "timm:resnet18"
    assert not loaded.module.training and loaded.default_layer == "layer4"
    assert loaded.class_names == tuple(f"class {i}" for i in range(10))
    assert torch.equal(loaded.module.fc.weight, source.fc.weight)
    config = resolve_data_config({}, model=source)
    assert loaded.preprocess == Preprocess(
        config["input_size"][-1],
        mean=config["mean"],
        std=config["std"],
        interpolation=config["interpolation"],
    )
    assert loaded.preprocess.interpolation == "bicubic"


def test_load_timm_random_weights_warns() -> None:
    pytest.importorskip("timm")
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_model("timm:vit_tiny_patch16_224", weights="random")
    assert not loaded.pretrained and loaded.class_names[0] == "tench"
    assert loaded.default_layer == "blocks.11.norm1"
    assert loaded.preprocess.mean == (0.5, 0.5, 0.5)
    # The position grid is fixed at 14x14: every photo is resized to 224x224, not cropped.
    assert loaded.preprocess.max_ratio == 1.0
    x = loaded.preprocess(Image.new("RGB", (320, 200), (90, 120, 30)))
    assert x.shape == (1, 3, 224, 224)


def test_load_timm_errors(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    with pytest.raises(ModelLoadError) as error:
        load_model("timm:resnet5O")
    assert "did you mean timm:resnet50" in _one_line(error)
    with pytest.raises(ModelLoadError) as error:
        load_model("timm:no_such_net_at_all")
    assert "unknown timm model 'no_such_net_at_all'" in _one_line(error)
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ModelLoadError) as error:
        load_model("timm:resnet18", weights=wrong)
    assert "does not fit timm:resnet18" in _one_line(error)


def test_timm_pretrained_tag_from_hub_cache() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    source = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    folder = fill_hub("timm/test_resnet.r160_in1k", {"model.safetensors": half_state(source)})
    assert folder.parent.parent == hub_cache() / "models--timm--test_resnet.r160_in1k"
    loaded = load_model("timm:test_resnet.r160_in1k")
    assert loaded.pretrained and loaded.class_names[0] == "tench"
    key = "fc.weight"
    assert torch.equal(loaded.module.state_dict()[key], source.state_dict()[key].half().float())
    # The tag's pretrained config: 160 px, mean and std 0.5.
    assert loaded.preprocess == Preprocess(160, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_timm_hf_hub_id_from_cache() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    source = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    config = {
        "architecture": "test_resnet",
        "num_classes": 3,
        "label_names": ["cat", "dog", "bird"],
        "pretrained_cfg": {"input_size": [3, 96, 96], "interpolation": "bilinear"},
    }
    files = {"config.json": config, "model.safetensors": half_state(source)}
    fill_hub("someone/tiny-resnet", files)
    loaded = load_model("timm:hf-hub:someone/tiny-resnet")
    assert loaded.pretrained and loaded.class_names == ("cat", "dog", "bird")
    assert loaded.preprocess.size == 96
    key = "fc.weight"
    assert torch.equal(loaded.module.state_dict()[key], source.state_dict()[key].half().float())


@pytest.mark.parametrize(
    "name", ["timm:hf-hub:timm/resnet18.a1_in1k", "timm:resnet18.a1_in1k", "timm:resnet50"]
)
def test_timm_offline_empty_cache_fails_fast(name: str) -> None:
    pytest.importorskip("timm")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        load_model(name)
    assert time.perf_counter() - start < 5  # was 32 s of retries, then a traceback
    message = _one_line(error)
    assert f"are not in the cache {hub_cache()} and downloads are off" in message
    assert "timm/resnet" in message


def test_timm_bad_tag() -> None:
    pytest.importorskip("timm")
    with pytest.raises(ModelLoadError) as error:
        load_model("timm:resnet18.a1_in2k")
    assert "has no pretrained tag 'a1_in2k'; choose from timm:resnet18.a1_in1k" in _one_line(error)


# Hugging Face -------------------------------------------------------------------------------------

LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _save_vit(folder: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(folder)
    processor = {
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "resample": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return model


def _save_convnext(folder: Path, processor: bool = True) -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(
        depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_labels=3, id2label=LABELS
    )
    model = transformers.ConvNextForImageClassification(config).eval()
    model.save_pretrained(folder)
    if processor:
        settings = {"size": {"shortest_edge": 64}, "resample": 3, "crop_pct": 0.875}
        (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    return model


def test_hf_vit(tmp_path: Path) -> None:
    source = _save_vit(tmp_path)
    loaded = load_model(f"hf:{tmp_path}")
    assert loaded.pretrained and loaded.class_names == ("cat", "dog", "bird")
    assert loaded.class_index("dog") == 1
    assert not loaded.module.training
    assert loaded.preprocess == Preprocess(
        32, mean=(0.5,) * 3, std=(0.5,) * 3, max_ratio=1.0, interpolation="bilinear"
    )
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    # A photo of any shape becomes the 32x32 input the ViT takes, given positionally.
    x = loaded.preprocess(Image.new("RGB", (50, 30), (200, 10, 10))) + _image(32)
    assert loaded.module(x).logits.shape == (1, 3)
    assert loaded.default_layer == "vit.layers.1.layernorm_before"
    before = snapshot(loaded.module)
    auto = GradCAM(loaded.module)(x, 1)
    _assert_map(auto, loaded.default_layer)
    assert auto.raw.shape == (1, 1, 4, 4)
    named = GradCAM(loaded.module, "vit.layers.0.layernorm_before")(x, 1)
    _assert_map(named, "vit.layers.0.layernorm_before")
    assert_unchanged(before, loaded.module)


def test_hf_convnext(tmp_path: Path) -> None:
    _save_convnext(tmp_path)
    loaded = load_model(f"hf:{tmp_path}")
    assert loaded.class_names == ("cat", "dog", "bird")
    assert loaded.preprocess.size == 64 and loaded.preprocess.interpolation == "bicubic"
    # ConvNeXt takes any input shape: photos keep their aspect.
    assert loaded.preprocess.max_ratio > 1.0
    assert loaded.default_layer == "convnext.encoder.stages.3"
    x = _image(64)
    before = snapshot(loaded.module)
    _assert_map(GradCAM(loaded.module)(x, 2), "convnext.encoder.stages.3")
    named = GradCAM(loaded.module, "convnext.encoder.stages.2")(x, 2)
    _assert_map(named, "convnext.encoder.stages.2")
    assert named.raw.shape == (1, 1, 4, 4)
    assert_unchanged(before, loaded.module)


def test_hf_without_preprocessor_config(tmp_path: Path) -> None:
    _save_convnext(tmp_path, processor=False)
    assert load_model(f"hf:{tmp_path}").preprocess == Preprocess(224)


def test_hf_errors(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ModelLoadError) as error:
        load_model(f"hf:{tmp_path / 'missing'}")
    assert "no such folder" in _one_line(error)
    with pytest.raises(ModelLoadError) as error:
        load_model(f"hf:{tmp_path}")
    assert "has no config.json" in _one_line(error)
    text = tmp_path / "bert"
    transformers.BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8
    ).save_pretrained(text)
    with pytest.raises(ModelLoadError) as error:
        load_model(f"hf:{text}")
    assert "not an image classifier's (model_type 'bert')" in _one_line(error)
    vit = tmp_path / "vit"
    _save_vit(vit)
    with pytest.raises(ModelLoadError) as error:
        load_model(f"hf:{vit}", weights=vit / "model.safetensors")
    assert "give no weights file" in _one_line(error)
    (vit / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as error:
        load_model(f"hf:{vit}")
    assert "cannot load Hugging Face image classifier" in _one_line(error)
    assert "model.safetensors" in _one_line(error)


def test_hf_hub_id_from_cache() -> None:
    source = _save_vit(fill_hub("someone/tiny-vit", {}))
    loaded = load_model("hf:someone/tiny-vit")
    assert loaded.pretrained and loaded.class_names == ("cat", "dog", "bird")
    assert loaded.preprocess.size == 32
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key


def test_hf_offline_empty_cache_fails_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        load_model("hf:google/vit-base-patch16-224")
    assert time.perf_counter() - start < 5
    message = _one_line(error)
    assert f"weights hf:google/vit-base-patch16-224 are not in the cache {hub_cache()}" in message


def test_hf_random_weights_when_asked(tmp_path: Path) -> None:
    _save_vit(tmp_path)
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_model(f"hf:{tmp_path}", weights="random")
    assert not loaded.pretrained and loaded.class_names == ("cat", "dog", "bird")


def test_hf_folder_code_is_never_run(tmp_path: Path) -> None:
    """Issue 30 item 3: an auto_map made transformers import the folder's own module."""
    _save_vit(tmp_path)
    marker = tmp_path / "ran"
    (tmp_path / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    for weights in (None, "random"):
        with pytest.raises(ModelLoadError) as error:
            load_model(f"hf:{tmp_path}", weights=weights)
        message = _one_line(error)
        assert f"{tmp_path / 'config.json'} asks to run the model folder's own code" in message
        assert "modeling_evil.py" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("file", "change", "expected"),
    [
        ("preprocessor_config.json", {"size": {"shortest_edge": 30000}}, "size.shortest_edge"),
        ("preprocessor_config.json", {"size": {"height": 0, "width": 32}}, "size.height"),
        ("preprocessor_config.json", {"size": "big"}, "size must be a whole number"),
        ("preprocessor_config.json", {"crop_size": 99999}, "crop_size"),
        ("config.json", {"num_labels": 20000000, "id2label": None}, "num_labels"),
        ("config.json", {"num_labels": 0, "id2label": None}, "num_labels"),
        ("config.json", {"image_size": 100000}, "image_size"),
    ],
)
def test_hf_sizes_and_labels_are_capped(
    tmp_path: Path, file: str, change: dict[str, Any], expected: str
) -> None:
    """Issue 30 item 10: a 1 KB config asked for a 4 GB model; size 0 gave a RuntimeError."""
    _save_vit(tmp_path)
    path = tmp_path / file
    settings = {**json.loads(path.read_text()), **change}
    path.write_text(json.dumps({k: v for k, v in settings.items() if v is not None}))
    with pytest.raises(ModelLoadError) as error:
        load_model(f"hf:{tmp_path}")
    message = _one_line(error)
    assert message.startswith(f"{path}: {expected}") and "from 1 to" in message


def test_hf_config_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save_vit(tmp_path)
    monkeypatch.setattr(gradcam.models, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(
        ModelLoadError, match=r"config\.json: larger than 100 bytes, not a model config"
    ):
        load_model(f"hf:{tmp_path}")


def test_hub_download_fetches_configs_first_and_never_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online (a stand-in for the Hub): the config is checked before any weights are fetched,
    and only configs and weights are asked for."""
    import fnmatch

    import huggingface_hub

    import gradcam.weights

    repo_files = tmp_path / "repo"
    _save_vit(repo_files)
    (repo_files / "modeling_evil.py").write_text("raise SystemExit('ran')\n")
    asked: list[list[str]] = []

    def snapshot_download(repo: str, cache_dir: str, allow_patterns: list[str]) -> str:
        asked.append(allow_patterns)
        folder = fill_hub(repo, {})
        for file in repo_files.iterdir():
            if any(fnmatch.fnmatch(file.name, p) for p in allow_patterns):
                (folder / file.name).write_bytes(file.read_bytes())
        return str(folder)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(gradcam.weights, "_reachable", lambda url: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = load_model("hf:someone/online-vit")
    assert loaded.pretrained and loaded.class_names == ("cat", "dog", "bird")
    assert asked[0] == ["config.json", "preprocessor_config.json"]
    assert all(not fnmatch.fnmatch("modeling_evil.py", p) for a in asked for p in a)
    # A config that asks for code: refused after the configs, before any weights.
    config = json.loads((repo_files / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (repo_files / "config.json").write_text(json.dumps(config))
    asked.clear()
    with pytest.raises(ModelLoadError, match="asks to run the model folder's own code"):
        load_model("hf:someone/evil-vit")
    assert asked == [["config.json", "preprocessor_config.json"]]


def test_hf_parameter_count_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config of a few hundred bytes can describe a model of any size: counted on the meta
    device, refused before anything is allocated."""
    _save_vit(tmp_path)
    count = sum(p.numel() for p in load_model(f"hf:{tmp_path}").module.parameters())
    monkeypatch.setattr(gradcam.models, "MAX_PARAMETERS", count - 1)
    for weights in (None, "random"):
        with pytest.raises(ModelLoadError) as error:
            load_model(f"hf:{tmp_path}", weights=weights)
        assert f"describes {count:,} parameters, more than {count - 1:,}" in _one_line(error)
