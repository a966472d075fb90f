"""Section 8 on Hugging Face models (gradcam.vl.hf): BLIP, GIT and VisionEncoderDecoder
captioners, BLIP-VQA and ViLT, CLIP prompts; tiny random configs saved with a tokenizer written
here (a WordPiece vocabulary of 20 words), loaded as ``hf:DIR`` like a user's folder."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from gradcam import GradCAM
from gradcam.cli import main
from gradcam.errors import GradCAMError, ModelLoadError
from gradcam.explain import explain_image
from gradcam.layers import resolve_layer
from gradcam.targets import CaptionLogProb, CaptionWord
from gradcam.vl import TextError
from gradcam.vl.explain import explain_answer, explain_caption
from gradcam.vl.hf import (
    HFAnswerer,
    HFCaptioner,
    is_image_text,
    load_hf_answerer,
    load_hf_captioner,
    load_image_text,
)

transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "a", "photo", "of", "cat"]
WORDS += ["dog", "red", "circle", "what", "color", "is", "the", "?", "two", "blue"]
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
TEXT = {
    "vocab_size": len(WORDS),
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 40,
}
ANSWERS = {0: "red", 1: "blue", 2: "cat", 3: "two"}


def _model(config: Any, cls: str) -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = getattr(transformers, cls)(config).eval()
    return model


def _build(name: str) -> nn.Module:
    tf = transformers
    if name in ("blip", "blip-vqa"):
        text = {**TEXT, "bos_token_id": 5, "sep_token_id": 3, "pad_token_id": 0}
        config = tf.BlipConfig(text_config=text, vision_config=VISION, projection_dim=16)
        cls = "BlipForConditionalGeneration" if name == "blip" else "BlipForQuestionAnswering"
        return _model(config, cls)
    if name == "clip":
        text = {**TEXT, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
        return _model(
            tf.CLIPConfig(text_config=text, vision_config=VISION, projection_dim=16), "CLIPModel"
        )
    if name == "git":
        config = tf.GitConfig(
            vision_config=VISION, **TEXT, bos_token_id=2, eos_token_id=3, pad_token_id=0
        )
        return _model(config, "GitForCausalLM")
    if name == "ved":
        decoder = tf.BertConfig(**TEXT, is_decoder=True, add_cross_attention=True)
        config = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
            tf.ViTConfig(**VISION), decoder
        )
        config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = 2, 3, 0
        return _model(config, "VisionEncoderDecoderModel")
    config = tf.ViltConfig(
        **TEXT,
        image_size=32,
        patch_size=8,
        max_image_length=-1,
        num_labels=len(ANSWERS),
        id2label=ANSWERS,
        label2id={v: k for k, v in ANSWERS.items()},
    )
    return _model(config, "ViltForQuestionAnswering")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every model saved as a user's folder: weights, config, a 32 x 32 image processor and a
    BERT tokenizer of :data:`WORDS`."""
    root = tmp_path_factory.mktemp("hf-vl")
    found = {}
    for name in ("blip", "blip-vqa", "clip", "git", "ved", "vilt"):
        folder = root / name
        folder.mkdir()
        _build(name).save_pretrained(folder)
        (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
        transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
        transformers.BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
        found[name] = folder
    return found


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea()).resize((48, 40))  # a cat, not square


def _spec(folders: dict[str, Path], name: str) -> str:
    return f"hf:{folders[name]}"


@pytest.fixture(scope="module")
def captioners(folders: dict[str, Path]) -> dict[str, HFCaptioner]:
    found = {n: load_hf_captioner(_spec(folders, n)) for n in ("blip", "git", "ved")}
    for model in found.values():
        model.max_tokens = 6  # random weights write to the limit: keep the tests quick
    return found


# pytorch-grad-cam, with its ViT tutorial's reshape (the class token dropped, a square grid)


def _peer_raw(
    model: nn.Module, layer: nn.Module, x: Tensor, score: Callable[..., Tensor]
) -> Tensor:
    from pytorch_grad_cam import GradCAM as PeerGradCAM

    def reshape(tensor: Tensor, height: int = 4, width: int = 4) -> Tensor:
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    peer = PeerGradCAM(model, [layer], reshape_transform=reshape)
    try:
        peer(input_tensor=x, targets=[score])
        grads = peer.activations_and_grads
        acts, grad = grads.activations[0].numpy(), grads.gradients[0].numpy()
        raw = peer.get_cam_image(x, layer, [score], acts, grad, False)
        return torch.from_numpy(np.maximum(raw, 0)[0])
    finally:
        peer.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


def _agrees(model: nn.Module, layer: str, x: Tensor, target: Callable[[Any], Tensor]) -> None:
    ours = GradCAM(model, layer)(x, target).raw[0, 0]
    theirs = _peer_raw(
        model, resolve_layer(model, layer).module, x, lambda out: target(out[None])[0]
    )
    assert ours.shape == theirs.shape == (4, 4) and theirs.amax() > 0
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


# Captioners ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("blip", "model.vision_model.encoder.layers.1"),
        ("git", "model.git.visual_projection"),
        ("ved", "model.encoder.layernorm"),
    ],
)
def test_captioners_explain_every_token(
    captioners: dict[str, HFCaptioner], photo: Image.Image, name: str, layer: str
) -> None:
    """The default layer is the last map of the image alone; every token of the caption gets
    the map of its step score, and the greedy caption is the argmax of the very step scores
    explained."""
    model = captioners[name]
    assert model.layer == layer
    methods = ["gradcam", "guided-gradcam"] if name == "blip" else ["gradcam"]
    result = explain_caption(model, photo, "a red cat", methods=methods)
    assert result.caption == "a red cat" and not result.generated
    labels = [(m.method, m.label, m.position) for m in result.maps]
    assert labels == [
        (method, label, position)
        for method in methods
        for label, position in (("<caption>", None), ("a", 0), ("red", 1), ("cat", 2))
    ]
    tokens = [WORDS.index("a"), WORDS.index("red"), WORDS.index("cat"), model._decoder.end]
    adapter = model.explainable(tokens)
    x = model.preprocess(photo)
    assert x.shape == (1, 3, 32, 32)  # the whole photo, resized to the model's square
    with torch.no_grad():
        steps = adapter(x)
    assert steps.shape == (1, 4, len(WORDS))
    assert result.maps[0].score == pytest.approx(float(CaptionLogProb(tokens)(steps)), rel=1e-5)
    assert result.maps[3].score == pytest.approx(float(steps[0, 2, WORDS.index("cat")]), rel=1e-5)
    cam = GradCAM(adapter, layer)(x, CaptionWord(tokens, 2))
    torch.testing.assert_close(result.maps[3].map, cam.maps[0, 0])
    assert cam.maps.amax() > 0 and torch.isfinite(cam.maps).all()

    own = explain_caption(model, photo, words=None)
    assert own.generated
    ids, _ = model.generate(x)
    with torch.no_grad():
        steps = model.explainable(ids)(x)[0]
    # Each token, and the end unless the caption reached its limit, is its step's best.
    best = steps.argmax(-1).tolist()
    assert best[:-1] == ids[:-1] and (len(ids) > model.max_tokens or best[-1] == ids[-1])


def test_blip_caption_word_equals_pytorch_grad_cam(captioners: dict[str, HFCaptioner]) -> None:
    pytest.importorskip("pytorch_grad_cam")
    model = captioners["blip"]
    tokens = [WORDS.index("a"), WORDS.index("cat"), model._decoder.end]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    _agrees(model.explainable(tokens), model.layer, x, CaptionWord(tokens, 1))


def test_caption_words_and_bad_captions(
    captioners: dict[str, HFCaptioner], photo: Image.Image
) -> None:
    model = captioners["blip"]
    result = explain_caption(model, photo, "a red cat a cat", words=["Cat"])
    assert [(m.label, m.position) for m in result.maps] == [
        ("<caption>", None),
        ("cat", 2),
        ("cat", 4),
    ]
    with pytest.raises(TextError, match="the word 'zebra' of the caption is not in the model's"):
        explain_caption(model, photo, "a zebra")
    with pytest.raises(TextError, match="the caption is empty"):
        explain_caption(model, photo, "  ")
    with pytest.raises(TextError, match="at most 32 are allowed"):
        explain_caption(model, photo, "a " * 33)
    with pytest.raises(TextError, match="the word 'dog' is not in the caption"):
        explain_caption(model, photo, "a cat", words=["dog"])


# VQA -----------------------------------------------------------------------------------------


def test_vilt_answers_and_forced_answers(folders: dict[str, Path], photo: Image.Image) -> None:
    model = load_hf_answerer(_spec(folders, "vilt"))
    assert isinstance(model, HFAnswerer) and model.answers == tuple(ANSWERS.values())
    assert model.layer == "model.vilt.embeddings.patch_embeddings"
    result = explain_answer(model, photo, "what color is the cat?", answers=["BLUE", "two"])
    x = model.preprocess(photo)
    with torch.no_grad():
        logits = model.model(
            input_ids=model.question_ids("what color is the cat?"), pixel_values=x
        ).logits[0]
    best = ANSWERS[int(logits.argmax())]
    assert result.answer == best and result.question == "what color is the cat?"
    wanted = list(dict.fromkeys([best, "blue", "two"]))
    assert [(m.label, m.forced) for m in result.maps] == [(a, a != best) for a in wanted]
    for item in result.maps:
        index = list(ANSWERS.values()).index(item.label)
        assert item.score == pytest.approx(float(logits[index]), rel=1e-5)
    with pytest.raises(TextError, match="unknown answer 'green'; the model's answers are: red"):
        explain_answer(model, photo, "what color is the cat?", answers=["green"])


def test_blip_vqa_answers_are_written_and_any_can_be_forced(
    folders: dict[str, Path], photo: Image.Image
) -> None:
    model = load_hf_answerer(_spec(folders, "blip-vqa"))
    model.max_tokens = 4
    assert model.layer == "model.vision_model.encoder.layers.1"
    result = explain_answer(model, photo, "what color is the cat?", answers=["a blue cat"])
    own, forced = result.maps
    assert (own.label, own.forced) == (result.answer, False)
    assert (forced.label, forced.forced) == ("a blue cat", True)
    assert result.probabilities == {result.answer: pytest.approx(np.exp(own.score), abs=1e-5)}
    assert forced.score < 0 and forced.map.amax() > 0
    # The forced answer's score is its log-probability given the question.
    pytest.importorskip("pytorch_grad_cam")
    ((adapter, target, _),) = model.forced("what color is the cat?", ["a blue cat"])
    x = model.preprocess(photo)
    with torch.no_grad():
        assert forced.score == pytest.approx(float(target(adapter(x))), rel=1e-5)
    _agrees(adapter, model.layer, x, target)


# CLIP ----------------------------------------------------------------------------------------


def test_clip_prompts_are_classes_and_agree_with_pytorch_grad_cam(
    folders: dict[str, Path], photo: Image.Image
) -> None:
    """Class ``i`` is ``logits_per_image[:, i]``; the default is the last vision block's first
    norm, pytorch-grad-cam's CLIP layer, and the maps equal its maps there."""
    pytest.importorskip("pytorch_grad_cam")
    spec = _spec(folders, "clip")
    assert is_image_text(spec) and not is_image_text(_spec(folders, "blip"))
    prompts = ["a photo of a cat", "a photo of a dog", "two red circle"]
    loaded = load_image_text(spec, prompts)
    assert loaded.class_names == tuple(prompts)
    assert loaded.default_layer == "model.vision_model.encoder.layers.1.layer_norm1"
    x = loaded.preprocess(photo)
    explanation = explain_image(loaded, photo, classes=[0, 2])
    with torch.no_grad():
        logits = loaded.module.model(
            pixel_values=x,
            input_ids=loaded.module.input_ids,
            attention_mask=loaded.module.attention_mask,
        ).logits_per_image
    entries = explanation.entries
    assert [e.class_name for e in entries] == ["a photo of a cat", "two red circle"]
    assert [e.score for e in entries] == pytest.approx(
        [float(logits[0, 0]), float(logits[0, 2])], rel=1e-5
    )
    for index in (0, 2):
        _agrees(loaded.module, loaded.default_layer, x, lambda out, i=index: out[:, i])
    # One prompt alone is scored as in the list: the softmax over the prompts is not taken.
    alone = load_image_text(spec, ["two red circle"])
    with torch.no_grad():
        assert float(alone.module(x)[0, 0]) == pytest.approx(float(logits[0, 2]), rel=1e-5)


def test_clip_bad_prompts(folders: dict[str, Path]) -> None:
    spec = _spec(folders, "clip")
    with pytest.raises(TextError, match="give the text prompts"):
        load_image_text(spec, [])
    with pytest.raises(TextError, match="'zebra' of the prompt is not in the model's vocabulary"):
        load_image_text(spec, ["a zebra"])
    with pytest.raises(TextError, match="at most 64 are allowed"):
        load_image_text(spec, [f"cat {i}" for i in range(65)])


# Commands ------------------------------------------------------------------------------------


@pytest.fixture()
def photo_file(tmp_path: Path, photo: Image.Image) -> str:
    path = tmp_path / "cat.png"
    photo.save(path)
    return str(path)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_caption_and_vqa_commands(
    folders: dict[str, Path], photo_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "caption"
    code, text, _ = _run(
        [
            "caption",
            photo_file,
            "--model",
            _spec(folders, "git"),
            "--caption",
            "two cat",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0 and "caption: two cat" in text
    summary = json.loads((out / "summary.json").read_text())
    assert [m["label"] for m in summary["maps"]] == ["<caption>", "two", "cat"]
    assert (out / "figure_gradcam.png").is_file()
    out = tmp_path / "vqa"
    code, text, _ = _run(
        [
            "vqa",
            photo_file,
            "--model",
            _spec(folders, "vilt"),
            "--question",
            "what color is the cat?",
            "--answer",
            "blue",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0 and "question: what color is the cat?" in text
    assert json.loads((out / "summary.json").read_text())["maps"][-1]["label"] == "blue"


def test_explain_clip_prompt_command(
    folders: dict[str, Path], photo_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clip"
    code, _, _ = _run(
        [
            "explain",
            photo_file,
            "--model",
            _spec(folders, "clip"),
            "--class",
            "a photo of a cat",
            "--class",
            "a photo of a dog",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    (summary,) = out.rglob("summary.json")
    names = [m["name"] for m in json.loads(summary.read_text())["maps"]]
    assert names == ["a photo of a cat", "a photo of a dog"]


def test_commands_refuse_the_wrong_model(
    folders: dict[str, Path], photo_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    code = main(["caption", photo_file, "--model", _spec(folders, "vilt"), "--out", out])
    err = capsys.readouterr().err
    assert code != 0 and "is a visual-question-answering model (ViltForQuestionAnswering): " in err
    assert "gradcam vqa IMAGE --model hf:..." in err and "Traceback" not in err
    code = main(["vqa", photo_file, "--question", "what?", "--model", "resnet50", "--out", out])
    assert code != 0 and "takes a Hugging Face model" in capsys.readouterr().err
    code = main(["explain", photo_file, "--model", _spec(folders, "clip"), "--out", out])
    assert code != 0 and "give the text prompts" in capsys.readouterr().err
    assert not Path(out).exists()
    with pytest.raises(ModelLoadError, match="is an image-captioning model"):
        load_hf_answerer(_spec(folders, "blip"))
    with pytest.raises(GradCAMError, match="holds its own weights"):
        load_hf_captioner(_spec(folders, "blip"), "weights.pt")


# The web demo's session ---------------------------------------------------------------------


def test_demo_session_serves_hugging_face_models(
    folders: dict[str, Path], captioners: dict[str, HFCaptioner], photo_file: str, tmp_path: Path
) -> None:
    """The Captioning and VQA tabs' callbacks on Hugging Face models: a caption's words are
    its tokens, ViLT's answers are the forced answers offered, BLIP-VQA offers none."""
    from gradcam.demo.vl import VLSession

    vilt = load_hf_answerer(_spec(folders, "vilt"))
    session = VLSession(captioners["git"], vilt, folder=tmp_path / "scenes", examples=1)
    try:
        views = session.caption(photo_file, "a red cat")
        assert views.words == ("a", "red", "cat") and views.position("cat") == 2
        assert set(session.caption_pictures(views, "cat")) == {"Grad-CAM", "Guided Grad-CAM"}
        with pytest.raises(TextError, match="'zebra' of the caption is not in the model's"):
            session.caption(photo_file, "a zebra")
        assert session.answer_choices == tuple(ANSWERS.values())
        answered = session.answer(photo_file, "what color is the cat?")
        labels = {m.label for m in answered.explanation.maps}
        assert labels == set(ANSWERS.values())
        assert set(session.answer_pictures(answered, "Blue")) == {"Grad-CAM", "Guided Grad-CAM"}
        with pytest.raises(TextError, match="unknown answer 'green'; the answers are: "):
            session.answer_pictures(answered, "green")
    finally:
        session.close()
    blip = load_hf_answerer(_spec(folders, "blip-vqa"))
    blip.max_tokens = 3
    session = VLSession(captioners["git"], blip, folder=tmp_path / "blip", examples=1)
    try:
        assert session.answer_choices == ()
        answered = session.answer(photo_file, "what color is the cat?")
        assert len(answered.explanation.maps) == 2  # its own answer, two methods
    finally:
        session.close()


def test_demo_tabs_take_the_model_given(folders: dict[str, Path], tmp_path: Path) -> None:
    """``gradcam serve --model hf:DIR``: a captioner or VQA model goes in its tab."""
    from gradcam.demo.vl import vl_session

    session = vl_session(_spec(folders, "vilt"), folder=tmp_path / "a", examples=1)
    try:
        assert isinstance(session.vqa, HFAnswerer) and not isinstance(
            session.captioner, HFCaptioner
        )
    finally:
        session.close()
    with pytest.raises(ModelLoadError, match="is not a Hugging Face captioner or VQA model"):
        vl_session(_spec(folders, "clip"), folder=tmp_path / "b")
