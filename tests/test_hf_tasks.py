"""Hugging Face models by task: the task read from ``config.json``, the one-line refusals, and
transformers' segmenters and detectors explained with ``--task`` (small random configs saved
by the test; nothing downloads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.caches import hub_snapshot_folder
from PIL import Image

from gradcam import GradCAM
from gradcam.cli import main
from gradcam.errors import ModelLoadError
from gradcam.hf_tasks import architecture_task
from gradcam.models import load_model
from gradcam.task_explain import infer_task, load_task_model
from gradcam.tasks import DetectionScore, SegmentationScore, detect

transformers = pytest.importorskip("transformers")

LABELS = {0: "sky", 1: "road", 2: "car"}


def _labels() -> dict[str, Any]:
    return {"num_labels": 3, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}


def _resnet(*stages: str) -> Any:
    return transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
        out_features=list(stages),
    )  # fmt: skip


def _save(build: Any, config: Any, folder: Path) -> Path:
    torch.manual_seed(0)  # each model its own seed: adding one does not change the others
    build(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random SegFormer, UperNet, DETR and Conditional DETR folders, and a ViT classifier."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    segformer = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
        decoder_hidden_size=16, **_labels(),
    )  # fmt: skip
    upernet = transformers.UperNetConfig(
        backbone_config=_resnet("stage1", "stage2"), hidden_size=16, auxiliary_in_channels=16,
        use_auxiliary_head=False, pool_scales=[1, 2], **_labels(),
    )  # fmt: skip
    detr = dict(
        use_timm_backbone=False, backbone_config=_resnet("stage2"), backbone=None,
        use_pretrained_backbone=False, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
        decoder_ffn_dim=16, num_queries=5, **_labels(),
    )  # fmt: skip
    vit = transformers.ViTConfig(
        image_size=224, patch_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, **_labels(),
    )  # fmt: skip
    mask2former = transformers.Mask2FormerConfig(
        backbone_config=transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
            layer_type="basic", out_features=["stage1", "stage2", "stage3", "stage4"],
        ),
        backbone=None, use_pretrained_backbone=False,
        feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
        dim_feedforward=32, num_attention_heads=2, encoder_layers=1, decoder_layers=2,
        num_queries=4, common_stride=4, **_labels(),
    )  # fmt: skip
    yolos = transformers.YolosConfig(
        image_size=[64, 96], patch_size=16, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=16, num_detection_tokens=5, **_labels(),
    )  # fmt: skip
    deformable = transformers.DeformableDetrConfig(
        **{**detr, "d_model": 32, "decoder_layers": 2},  # GroupNorm(32); one layer fails to tie
        num_feature_levels=3, encoder_n_points=2, decoder_n_points=2,
    )  # fmt: skip
    deformable.backbone_config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
        layer_type="basic", out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip
    return {
        "ddetr": _save(transformers.DeformableDetrForObjectDetection, deformable, root / "ddetr"),
        "yolos": _save(transformers.YolosForObjectDetection, yolos, root / "yolos"),
        "m2f": _save(transformers.Mask2FormerForUniversalSegmentation, mask2former, root / "m2f"),
        "seg": _save(transformers.SegformerForSemanticSegmentation, segformer, root / "seg"),
        "upernet": _save(transformers.UperNetForSemanticSegmentation, upernet, root / "upernet"),
        "detr": _save(
            transformers.DetrForObjectDetection, transformers.DetrConfig(**detr), root / "detr"
        ),
        "cdetr": _save(
            transformers.ConditionalDetrForObjectDetection,
            transformers.ConditionalDetrConfig(**detr),
            root / "cdetr",
        ),
        "vit": _save(transformers.ViTForImageClassification, vit, root / "vit"),
    }


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pixels = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype("uint8")
    pixels[20:60, 30:80] = (200, 30, 30)
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


def test_architecture_tasks_come_from_transformers_tables() -> None:
    expected = {
        "SegformerForSemanticSegmentation": "segmentation",
        "Mask2FormerForUniversalSegmentation": "segmentation",
        "DetrForObjectDetection": "detection",
        "YolosForObjectDetection": "detection",
        "ViTForImageClassification": "classification",
        "BlipForConditionalGeneration": "captioning",
        "VisionEncoderDecoderModel": "captioning",
        "BlipForQuestionAnswering": "vqa",
        "ViltForQuestionAnswering": "vqa",
        "CLIPModel": "image-text",
        "BlipForImageTextRetrieval": "image-text",
        "OwlViTForObjectDetection": "zero-shot-detection",
    }
    assert {name: architecture_task(name) for name in expected} == expected


def test_a_segmenter_loaded_as_a_classifier_is_refused_in_one_line(
    folders: dict[str, Path],
) -> None:
    with pytest.raises(ModelLoadError) as error:
        load_model(f"hf:{folders['seg']}")
    assert str(error.value) == (
        f"hf:{folders['seg']} is a semantic-segmentation model "
        "(SegformerForSemanticSegmentation): explain it with --task segmentation"
    )
    with pytest.raises(ModelLoadError, match=r"object-detection model \(DetrForObjectDetection\)"):
        load_model(f"hf:{folders['detr']}")


def test_image_text_models_are_refused_naming_their_task(tmp_path: Path) -> None:
    # Only the config is read: the refusal comes before any weights are looked for.
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["BlipForConditionalGeneration"], "model_type": "blip"})
    )
    with pytest.raises(ModelLoadError, match="is an image-captioning model") as error:
        load_model(f"hf:{tmp_path}")
    assert "\n" not in str(error.value)


def test_a_hub_id_is_refused_by_its_cached_config() -> None:
    folder = hub_snapshot_folder("org/segmenter")
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["UperNetForSemanticSegmentation"], "model_type": "upernet"})
    )
    with pytest.raises(ModelLoadError, match="hf:org/segmenter is a semantic-segmentation"):
        load_model("hf:org/segmenter")
    assert infer_task("hf:org/segmenter", None) == "segmentation"


def test_the_task_is_inferred_and_checked(folders: dict[str, Path]) -> None:
    assert infer_task(f"hf:{folders['seg']}", None) == "segmentation"
    assert infer_task(f"hf:{folders['detr']}", None) == "detection"
    assert infer_task(f"hf:{folders['vit']}", None) == "classification"
    assert infer_task("resnet50", None) == "classification"
    with pytest.raises(ModelLoadError, match="explain it with --task detection"):
        infer_task(f"hf:{folders['detr']}", "segmentation")
    with pytest.raises(ModelLoadError, match="is an image classifier"):
        infer_task(f"hf:{folders['vit']}", "detection")


def test_a_classifier_still_loads(folders: dict[str, Path]) -> None:
    loaded = load_model(f"hf:{folders['vit']}")
    assert loaded.class_names == ("sky", "road", "car") and loaded.pretrained


def test_a_missing_head_is_warned_as_random(tmp_path: Path, folders: dict[str, Path]) -> None:
    # The SegFormer encoder alone, saved with a segmenter's config: the decode head is random.
    model = transformers.SegformerForSemanticSegmentation.from_pretrained(folders["seg"])
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("decode_head")},
              tmp_path / "model.safetensors")  # fmt: skip
    with pytest.warns(UserWarning, match="random weights"):
        loaded = load_task_model(f"hf:{tmp_path}", "segmentation")
    assert not loaded.pretrained


@pytest.mark.parametrize("name", ["seg", "upernet", "m2f"])
def test_segmenters_give_a_finite_varying_map(folders: dict[str, Path], name: str) -> None:
    loaded = load_task_model(f"hf:{folders[name]}", "segmentation")
    assert loaded.pretrained and loaded.layer is not None
    assert "decode" not in loaded.layer.module and "head" not in loaded.layer.module
    x = torch.rand(1, 3, 128, 192)
    assert loaded.module(x).shape == (1, 3, 128, 192)
    # Over the whole image: a random model's predicted region may be a sliver.
    maps = GradCAM(loaded.module, loaded.layer)(
        x, [SegmentationScore(1, torch.ones(128, 192))]
    ).maps
    assert torch.isfinite(maps).all() and float(maps.max() - maps.min()) > 0


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("detr", "model.model.backbone."),
        ("cdetr", "model.model.backbone."),
        ("ddetr", "model.model.backbone."),
        ("yolos", "model.vit.encoder.layer.1.layernorm_before"),
    ],
)
def test_detectors_give_a_finite_varying_map(
    folders: dict[str, Path], name: str, layer: str
) -> None:
    loaded = load_task_model(f"hf:{folders[name]}", "detection")
    assert loaded.layer is not None and loaded.layer.module.startswith(layer)
    x = torch.rand(1, 3, 128, 192)
    found = detect(loaded.module, x)[0]
    assert found and all(0 <= d.label < 3 for d in found)
    # A random model's map may be all negative (zero after the ReLU): one of the best varies.
    targets = [DetectionScore.of(d) for d in found[:3]]
    maps = GradCAM(loaded.module, loaded.layer)(x, targets).maps
    assert torch.isfinite(maps).all()
    assert max(float(m.max() - m.min()) for m in maps[0]) > 0


def test_the_cli_explains_hf_segmenters_and_detectors_by_their_task(
    folders: dict[str, Path],
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gradcam.viz

    drawn: list[torch.Tensor] = []
    draw = gradcam.viz.overlay

    def keep(image: Any, heatmap: Any, **kwargs: Any) -> Any:
        drawn.append(torch.as_tensor(np.asarray(heatmap)))
        return draw(image, heatmap, **kwargs)

    monkeypatch.setattr(gradcam.viz, "overlay", keep)
    # No --task: the segmenter's config says it.
    assert main(["explain", str(photo), "--model", f"hf:{folders['seg']}",
                 "--out", str(tmp_path / "seg")]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "seg" / "photo" / "summary.json").read_text())
    assert summary["task"] == "segmentation" and summary["explained"]
    assert summary["layer"].startswith("model.segformer.")
    args = ["explain", str(photo), "--model", f"hf:{folders['detr']}", "--min-score", "0"]
    assert main([*args, "--task", "detection", "--out", str(tmp_path / "det")]) == 0
    summary = json.loads((tmp_path / "det" / "photo" / "summary.json").read_text())
    assert summary["task"] == "detection" and summary["explained"]
    # Every map drawn (the segmenter's, the detector's) is finite and not constant.
    assert len(drawn) >= 2
    assert all(torch.isfinite(m).all() and float(m.max() - m.min()) > 0 for m in drawn)
    capsys.readouterr()
    assert main([*args, "--task", "segmentation", "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("explain it with --task detection")
    assert main(["explain", str(photo), "--model", f"hf:{folders['seg']}", "--task",
                 "classification", "--out", str(tmp_path / "cls")]) == 2  # fmt: skip


@pytest.mark.parametrize(
    ("name", "processor"),
    [
        ("detr", "DetrImageProcessor"),
        ("cdetr", "ConditionalDetrImageProcessor"),
        ("ddetr", "DeformableDetrImageProcessor"),
        ("yolos", "YolosImageProcessor"),
    ],
)
def test_detections_are_transformers_post_processing(
    folders: dict[str, Path], name: str, processor: str
) -> None:
    loaded = load_task_model(f"hf:{folders[name]}", "detection")
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        ours = loaded.module(x)[0]
        output = loaded.module.model(pixel_values=x)
    theirs = getattr(transformers, processor)().post_process_object_detection(
        output, threshold=0.0, target_sizes=[(128, 192)]
    )[0]
    order, reference = ours["scores"].argsort(), theirs["scores"].argsort()
    torch.testing.assert_close(ours["scores"][order], theirs["scores"][reference])
    torch.testing.assert_close(ours["labels"][order], theirs["labels"][reference])
    torch.testing.assert_close(ours["boxes"][order], theirs["boxes"][reference], atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    ("name", "processor"),
    [("seg", "SegformerImageProcessor"), ("m2f", "Mask2FormerImageProcessor")],
)
def test_segments_are_transformers_post_processing(
    folders: dict[str, Path], name: str, processor: str
) -> None:
    loaded = load_task_model(f"hf:{folders[name]}", "segmentation")
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        ours = loaded.module(x).argmax(dim=1)[0]
        output = loaded.module.model(pixel_values=x)
    theirs = getattr(transformers, processor)().post_process_semantic_segmentation(
        output, target_sizes=[(128, 192)]
    )[0]
    assert float((ours == theirs).float().mean()) > 0.99  # ties at region borders aside
