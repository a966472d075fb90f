"""Where each caption word and each answer looks: the plain functions under ``gradcam
caption`` and ``gradcam vqa`` (Figs. 10-12).

:func:`explain_caption` explains a caption (given, or generated greedily) word by word with
:class:`~gradcam.targets.CaptionWord` (section 8.1.1), and as a whole with
:class:`~gradcam.targets.CaptionLogProb` (section 8.1). :func:`explain_answer` explains the
model's answer to a question and any "forced" answers (Fig. 12) with
:class:`~gradcam.targets.Answer`. Targets are explained :data:`TARGET_CHUNK` at a time: each
chunk shares one forward and one backward pass per method, so memory stays bounded however
long the caption (at most :data:`~gradcam.vl.text.MAX_WORDS` words).
:func:`save_text_explanation` writes the pictures and ``summary.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from gradcam.engine import eval_mode
from gradcam.errors import GradCAMError
from gradcam.maps import peak
from gradcam.methods import explain_methods, method_spec
from gradcam.methods import methods as all_methods
from gradcam.methods.registry import DEFAULT_METHOD
from gradcam.outputs import output_folder
from gradcam.paths import slug
from gradcam.targets import Answer, CaptionLogProb, CaptionWord
from gradcam.vl.hf import HFAnswerer, HFCaptioner
from gradcam.vl.models import VL_LAYER, Captioner, VQAModel
from gradcam.vl.scenes import VL_PREPROCESS
from gradcam.vl.text import ANSWERS, END, VOCAB, TextError, encode

__all__ = [
    "TARGET_CHUNK",
    "AnswerExplanation",
    "CaptionExplanation",
    "TextMap",
    "explain_answer",
    "explain_caption",
    "save_text_explanation",
]


#: Words or answers explained per pass: the backward pass is batched over them, so its memory
#: grows with their number.
TARGET_CHUNK = 8


@dataclass(frozen=True)
class TextMap:
    """One map: a method's explanation of one word, the whole caption, or one answer.

    Attributes:
        method: a method name from :func:`gradcam.methods.methods`.
        label: the word, ``"<caption>"`` for the whole caption, or the answer.
        position: the word's index in the caption (``None`` for the others).
        score: the target score ``y^c`` (a word's or answer's logit, the caption's
            log-probability).
        forced: an answer that is not the model's own (Fig. 12).
        map: (H, W) heatmap in [0, 1] at input resolution, or (3, H, W) pixel-space map.
        peak: ``(x, y)`` of the heatmap's maximum in image pixels (``None`` for pixel maps
            and all-zero heatmaps).
    """

    method: str
    label: str
    position: int | None
    score: float
    forced: bool
    map: Tensor
    peak: tuple[int, int] | None


@dataclass(frozen=True)
class CaptionExplanation:
    """A caption and its maps.

    Attributes:
        caption: the caption explained.
        generated: ``True`` when the model wrote it (no caption was given).
        log_prob: ``log p(caption, <end> | image)``.
        maps: the maps, method by method: the whole caption first, then the words.
    """

    caption: str
    generated: bool
    log_prob: float
    maps: tuple[TextMap, ...]


@dataclass(frozen=True)
class AnswerExplanation:
    """A question, the model's answer and the maps of the answers explained.

    Attributes:
        question: the question.
        answer: the model's answer.
        probabilities: the five most probable answers and their probabilities.
        maps: the maps, method by method: the model's answer first, then forced ones.
    """

    question: str
    answer: str
    probabilities: dict[str, float]
    maps: tuple[TextMap, ...]


def _check_methods(names: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(names))
    if not chosen:
        raise GradCAMError(f"no method given; choose from {', '.join(all_methods())}")
    for name in chosen:
        method_spec(name)
    return chosen


def _image_peak(map2d: Tensor, image: Image.Image) -> tuple[int, int] | None:
    point = peak(map2d)
    if point is None:
        return None
    x, y = point
    height, width = map2d.shape
    return (
        min(image.width - 1, int((x + 0.5) * image.width / width)),
        min(image.height - 1, int((y + 0.5) * image.height / height)),
    )


Label = tuple[str, int | None, bool]  # (label, position, forced)


class _ToyCaptioner:
    """The shipped :class:`Captioner` as :func:`explain_caption` reads a captioner (the
    interface of :class:`gradcam.vl.hf.HFCaptioner`)."""

    layer = VL_LAYER
    preprocess = VL_PREPROCESS

    def __init__(self, model: Captioner) -> None:
        self.model = model

    def generate(self, x: Tensor) -> tuple[list[int], list[str]]:
        return self.caption_tokens(self.model.generate(x)[0])

    def caption_tokens(self, text: str) -> tuple[list[int], list[str]]:
        tokens = [*encode(text, what="caption"), VOCAB.index(END)]
        return tokens, [VOCAB[t] for t in tokens[:-1]]

    def caption_text(self, tokens: Sequence[int]) -> str:
        return " ".join(VOCAB[t] for t in tokens[:-1])

    def explainable(self, tokens: Sequence[int]) -> torch.nn.Module:
        return self.model.explainable(list(tokens))


class _ToyAnswerer:
    """The shipped :class:`VQAModel` as :func:`explain_answer` reads a VQA model (the
    interface of :class:`gradcam.vl.hf.HFAnswerer`): one adapter per question, so that every
    answer shares its passes."""

    layer = VL_LAYER
    preprocess = VL_PREPROCESS

    def __init__(self, model: VQAModel) -> None:
        self.model = model
        self._asked: dict[str, torch.nn.Module] = {}

    def _ask(self, question: str) -> torch.nn.Module:
        if question not in self._asked:
            self._asked = {question: self.model.explainable(question)}
        return self._asked[question]

    def question_text(self, question: str) -> str:
        return " ".join(VOCAB[t] for t in encode(question, what="question"))

    def forced(self, question: str, answers: Sequence[str]) -> list[tuple[Any, Any, str]]:
        adapter = self._ask(question)
        unknown = [a for a in answers if a.lower() not in ANSWERS]
        if unknown:
            raise TextError(f"unknown answer {unknown[0]!r}; the answers are: {', '.join(ANSWERS)}")
        indices = [ANSWERS.index(a.lower()) for a in answers]
        return [(adapter, Answer(i), ANSWERS[i]) for i in indices]

    def answer(
        self, x: Tensor, question: str
    ) -> tuple[str, dict[str, float], list[tuple[Any, Any, str]]]:
        adapter = self._ask(question)
        with torch.no_grad(), eval_mode(self.model):
            probabilities = adapter(x).softmax(dim=1)[0]
        best = int(probabilities.argmax())
        top = probabilities.topk(5)
        found = {
            ANSWERS[int(i)]: round(float(p), 5)
            for p, i in zip(top.values, top.indices, strict=True)
        }
        return ANSWERS[best], found, [(adapter, Answer(best), ANSWERS[best])]


def _run(
    adapter: torch.nn.Module,
    x: Tensor,
    targets: list[Any],
    labels: list[Label],
    methods: Sequence[str],
    image: Image.Image,
    layer: Any,
) -> list[TextMap]:
    maps = []
    results = explain_methods(methods, adapter, x, targets, layer=layer)
    for name, result in results.items():
        pixel = method_spec(name).kind == "pixel"
        for k, (label, position, forced) in enumerate(labels):
            value = result.maps[0, k]
            maps.append(
                TextMap(
                    name,
                    label,
                    position,
                    float(result.scores[0, k]),
                    forced,
                    value,
                    None if pixel else _image_peak(value, image),
                )
            )
    return maps


def _run_in_chunks(
    items: Sequence[tuple[torch.nn.Module, Any, Label]],
    x: Tensor,
    methods: Sequence[str],
    image: Image.Image,
    layer: Any,
) -> list[TextMap]:
    """:func:`_run` on :data:`TARGET_CHUNK` targets of one adapter at a time (the targets of
    one adapter share its passes); the maps method by method, each in the order of ``items``."""
    groups: dict[int, list[int]] = {}
    for index, (adapter, _, _) in enumerate(items):
        groups.setdefault(id(adapter), []).append(index)
    found: dict[str, dict[int, TextMap]] = {}
    for indices in groups.values():
        adapter = items[indices[0]][0]
        for start in range(0, len(indices), TARGET_CHUNK):
            part = indices[start : start + TARGET_CHUNK]
            targets = [items[i][1] for i in part]
            labels = [items[i][2] for i in part]
            for k, item in enumerate(_run(adapter, x, targets, labels, methods, image, layer)):
                found.setdefault(item.method, {})[part[k % len(part)]] = item
    return [maps[i] for maps in found.values() for i in sorted(maps)]


def explain_caption(
    model: Captioner | HFCaptioner,
    image: Image.Image,
    caption: str | None = None,
    *,
    words: Sequence[str] | None = None,
    methods: Sequence[str] = (DEFAULT_METHOD,),
) -> CaptionExplanation:
    """Explain a caption of ``image`` word by word, and as a whole.

    Args:
        model: the captioner (:func:`~gradcam.vl.load_captioner`, or a Hugging Face one,
            :func:`gradcam.vl.hf.load_hf_captioner`, whose "words" are its tokens).
        image: an RGB photo; its shorter side is scaled to 96 pixels (a Hugging Face model's
            input size).
        caption: the caption to explain; ``None`` explains the model's own (greedy) caption.
        words: explain only these words of the caption (every occurrence); ``None``: all.
        methods: names from :func:`gradcam.methods.methods` (CAM needs a global-pooling head,
            which the shipped scene models do not have).

    Raises:
        TextError: for an empty caption, one of more than :data:`~gradcam.vl.text.MAX_WORDS`
            words, a word outside the vocabulary, or a word of ``words`` that is not in the
            caption.

    Examples:
        >>> from gradcam.vl import load_captioner, vl_scene
        >>> result = explain_caption(load_captioner(), vl_scene(0).image, words=["circle"])
        >>> [(m.label, m.peak) for m in result.maps]
        [('<caption>', (44, 68)), ('circle', (28, 60))]
    """
    chosen = _check_methods(methods)
    reader = _ToyCaptioner(model) if isinstance(model, Captioner) else model
    generated = caption is None
    if caption is not None:
        tokens, said = reader.caption_tokens(caption)  # before any model pass
    x = reader.preprocess(image)
    if caption is None:
        tokens, said = reader.generate(x)
    text = reader.caption_text(tokens)
    if words is not None:
        missing = [w for w in words if w.lower() not in said]
        if missing:
            raise TextError(f"the word {missing[0]!r} is not in the caption {text!r}")
    wanted = set(said) if words is None else {w.lower() for w in words}
    positions = [i for i, w in enumerate(said) if w in wanted]
    adapter = reader.explainable(tokens)
    items: list[tuple[torch.nn.Module, Any, Label]] = [
        (adapter, CaptionLogProb(tokens), ("<caption>", None, False))
    ]
    items += [(adapter, CaptionWord(tokens, i), (said[i], i, False)) for i in positions]
    maps = _run_in_chunks(items, x, chosen, image, reader.layer)
    return CaptionExplanation(text, generated, maps[0].score, tuple(maps))


def explain_answer(
    model: VQAModel | HFAnswerer,
    image: Image.Image,
    question: str,
    *,
    answers: Sequence[str] = (),
    methods: Sequence[str] = (DEFAULT_METHOD,),
) -> AnswerExplanation:
    """Answer ``question`` about ``image`` and explain the answer and any forced ``answers``.

    ``model`` is the shipped VQA model (:func:`~gradcam.vl.load_vqa`) or a Hugging Face one
    (:func:`gradcam.vl.hf.load_hf_answerer`: ViLT's answers are its labels; BLIP writes its
    answers, whose score is their log-probability, and any text can be forced).

    Raises:
        TextError: for an empty question, one of more than :data:`~gradcam.vl.text.MAX_WORDS`
            words, a word outside the vocabulary, or an answer that is not one of
            :data:`~gradcam.vl.text.ANSWERS` (repeats count once).

    Examples:
        A red circle above a purple cross; the answer "purple" is forced:

        >>> from gradcam.vl import load_vqa, vl_scene
        >>> result = explain_answer(load_vqa(), vl_scene(0).image, "what color is the circle?",
        ...                         answers=["purple"])
        >>> result.answer, [(m.label, m.forced, m.peak) for m in result.maps]
        ('red', [('red', False, (12, 27)), ('purple', True, (51, 83))])
    """
    chosen = _check_methods(methods)
    if not question.strip():
        raise TextError("the question is empty")
    reader = _ToyAnswerer(model) if isinstance(model, VQAModel) else model
    asked = reader.question_text(question)
    forced = reader.forced(question, answers)  # before any model pass
    x = reader.preprocess(image)
    best, probabilities, own = reader.answer(x, question)
    items: list[tuple[torch.nn.Module, Any, Label]] = []
    seen: set[str] = set()
    for adapter, target, label in [*own, *forced]:
        if label not in seen:
            seen.add(label)
            items.append((adapter, target, (label, None, label != best)))
    maps = _run_in_chunks(items, x, chosen, image, reader.layer)
    return AnswerExplanation(asked, best, probabilities, tuple(maps))


def save_text_explanation(
    explanation: CaptionExplanation | AnswerExplanation,
    image: Image.Image,
    out_dir: str | Path,
    *,
    source: str = "",
) -> dict[str, Any]:
    """Write a picture per map, a ``figure.png`` per method (the photo, then every map with
    its word or answer as title, like Figs. 11 and 12) and ``summary.json``.

    Returns:
        The summary written to ``summary.json``.
    """
    from gradcam.viz import gradient_image, overlay, side_by_side

    out = output_folder(out_dir)
    entries = []
    panels: dict[str, list[tuple[str, Image.Image]]] = {}
    for index, item in enumerate(explanation.maps):
        picture = (
            gradient_image(item.map, image.size)
            if method_spec(item.method).kind == "pixel"
            else overlay(image, item.map)
        )
        name = f"{item.method}_{index:02d}_{slug(item.label, fallback='caption')}.png"
        picture.save(out / name)
        title = item.label + (" (forced)" if item.forced else "")
        panels.setdefault(item.method, [("image", image)]).append((title, picture))
        entries.append(
            {
                "method": item.method,
                "label": item.label,
                "position": item.position,
                "score": round(item.score, 5),
                "forced": item.forced,
                "peak": None if item.peak is None else list(item.peak),
                "picture": name,
            }
        )
    figures = []
    for method, row in panels.items():
        name = f"figure_{method}.png"
        side_by_side(row, height=max(image.height, 160)).save(out / name)
        figures.append(name)
    summary: dict[str, Any] = {"source": source}
    if isinstance(explanation, CaptionExplanation):
        summary |= {
            "caption": explanation.caption,
            "generated": explanation.generated,
            "log_prob": round(explanation.log_prob, 5),
        }
    else:
        summary |= {
            "question": explanation.question,
            "answer": explanation.answer,
            "probabilities": explanation.probabilities,
        }
    summary |= {"maps": entries, "figures": figures}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
