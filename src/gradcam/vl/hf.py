"""Section 8 on Hugging Face models: captioners, VQA models and CLIP-like image-text models.

``gradcam caption --model hf:DIR`` and ``gradcam vqa --model hf:DIR`` explain transformers
models through the same code as the shipped scene models (:mod:`gradcam.vl.explain`): a
model here only says how to read a photo, how to write its greedy caption or answer, and which
module of the image alone gives each target's step scores.

* :class:`HFCaptioner`: BLIP (``BlipForConditionalGeneration``), GIT (``GitForCausalLM``) and
  ``VisionEncoderDecoderModel`` (ViT + GPT-2, BERT, ...). The decoder reads a start token
  (BLIP's ``bos_token_id``, GIT's ``bos_token_id``, the encoder-decoder's
  ``decoder_start_token_id``) and the caption's tokens; step ``t`` scores token ``t`` of the
  caption followed by the end token (BLIP's ``sep_token_id``, ``eos_token_id`` otherwise). The
  caption is written greedily from these same step scores. Targets are *tokens*: a word that
  the tokenizer splits gets one map per piece.
* :class:`HFAnswerer`: ViLT (``ViltForQuestionAnswering``, a classifier over
  ``config.id2label``: the answer score before the sigmoid, as :class:`~gradcam.targets.Answer`)
  and BLIP-VQA (``BlipForQuestionAnswering``, which *writes* its answer: the question encoded
  against the image, then a decoder; an answer's score is its log-probability given the
  question, :class:`~gradcam.targets.CaptionLogProb`, so any text can be forced).
* :func:`load_image_text`: CLIP-like models (``CLIPModel``, ...) with text prompts as their
  classes: class ``i`` is ``logits_per_image[:, i]``, the scaled cosine similarity of the image
  and prompt ``i`` before the softmax over the prompts (the score pytorch-grad-cam's CLIP
  tutorial picks its class from), so a prompt's map does not depend on the other prompts.

The layer is the default (:mod:`gradcam.layers`, :mod:`gradcam.image_flow`): the last map of
the image alone, before any text is mixed in; for these ViT towers the last vision block
(BLIP) or its first norm (CLIP), the layer of pytorch-grad-cam's tutorials. Photos are resized
to the model's square input, whole (not cropped).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gradcam.errors import ModelLoadError
from gradcam.hooks import eval_mode
from gradcam.images import Preprocess
from gradcam.targets import Answer, CaptionLogProb
from gradcam.vl.text import MAX_WORDS, TextError

__all__ = [
    "HFAnswerer",
    "HFCaptioner",
    "HFText",
    "PromptScores",
    "hf_vl_task",
    "is_image_text",
    "load_hf_answerer",
    "load_hf_captioner",
    "load_image_text",
]

#: The most prompts ``explain --class`` takes for an image-text model (one map each).
MAX_PROMPTS = 64

Step = Callable[[nn.Module, Tensor, Tensor], Tensor]


class HFText(nn.Module):
    """A transformers model with its text held: ``forward(x)`` takes the image alone.

    ``score(model, x)`` is a plain function of the model and the pixels (the held text is bound
    into it); ``model`` is a submodule, so layer names read ``model.vision_model...``.
    """

    def __init__(self, model: nn.Module, score: Callable[[nn.Module, Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.score = score

    def forward(self, x: Tensor) -> Tensor:
        """The scores of the held text for every image of ``x``."""
        return self.score(self.model, x)


# Decoder step scores: ``step(model, x, ids)`` is (B, L, V) for (1, L) ids, where position j
# scores token j + 1.


def _blip_caption(model: nn.Module, x: Tensor, ids: Tensor) -> Tensor:
    out = model(pixel_values=x, input_ids=ids.to(x.device).expand(x.shape[0], -1))
    return out.logits  # type: ignore[no-any-return]


def _git(model: nn.Module, x: Tensor, ids: Tensor) -> Tensor:
    out = model(pixel_values=x, input_ids=ids.to(x.device).expand(x.shape[0], -1))
    return out.logits[:, -ids.shape[1] :]  # type: ignore[no-any-return]  # image tokens first


def _encoder_decoder(model: nn.Module, x: Tensor, ids: Tensor) -> Tensor:
    out = model(pixel_values=x, decoder_input_ids=ids.to(x.device).expand(x.shape[0], -1))
    return out.logits  # type: ignore[no-any-return]


def _blip_answer(question: Tensor, model: Any, x: Tensor, ids: Tensor) -> Tensor:
    """BLIP-VQA as its ``generate`` computes it: the question encoded against the image, the
    answer decoded against the question (its ``forward`` returns a loss only)."""
    image = model.vision_model(pixel_values=x).last_hidden_state
    asked = model.text_encoder(
        input_ids=question.to(x.device).expand(x.shape[0], -1), encoder_hidden_states=image
    ).last_hidden_state
    out = model.text_decoder(
        input_ids=ids.to(x.device).expand(x.shape[0], -1), encoder_hidden_states=asked
    )
    return out.logits  # type: ignore[no-any-return]


def _forced(
    step: Step, ids: Tensor, start: int, length: int, model: nn.Module, x: Tensor
) -> Tensor:
    return step(model, x, ids)[:, start : start + length]


def _vilt(question: Tensor, model: nn.Module, x: Tensor) -> Tensor:
    ids = question.to(x.device).expand(x.shape[0], -1)
    return model(input_ids=ids, pixel_values=x).logits  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Decoder:
    """A decoder's step function with its start tokens and end token."""

    step: Step
    prefix: tuple[int, ...]
    end: int

    def forced(self, model: nn.Module, tokens: Sequence[int]) -> HFText:
        """``model`` teacher-forced with ``tokens`` (ending with :attr:`end`): (B, T, V), step
        ``t`` scoring ``tokens[t]``."""
        ids = torch.tensor([[*self.prefix, *tokens[:-1]]])
        score = functools.partial(_forced, self.step, ids, len(self.prefix) - 1, len(tokens))
        return HFText(model, score)

    @torch.no_grad()
    def greedy(self, model: nn.Module, x: Tensor, limit: int = MAX_WORDS) -> list[int]:
        """The most probable token at every step, until :attr:`end` (not included) or
        ``limit`` tokens."""
        ids = list(self.prefix)
        with eval_mode(model):
            for _ in range(limit):
                token = int(self.step(model, x[:1], torch.tensor([ids]))[0, -1].argmax())
                if token == self.end:
                    break
                ids.append(token)
        return ids[len(self.prefix) :]


def _token(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _either(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _decoder(model: nn.Module, spec: str) -> _Decoder:
    config: Any = model.config
    generation = getattr(model, "generation_config", None)
    kind = type(model).__name__
    if kind.startswith("Blip"):
        text = config.text_config
        start, end = _token(text, "bos_token_id"), _token(text, "sep_token_id", "eos_token_id")
        step: Step = _blip_caption
    elif kind.startswith("Git"):
        start = _either(_token(generation, "bos_token_id"), _token(config, "bos_token_id"))
        end = _either(_token(generation, "eos_token_id"), _token(config, "eos_token_id"))
        step = _git
    elif kind == "VisionEncoderDecoderModel":
        start = _either(
            _token(config, "decoder_start_token_id"),
            _token(generation, "decoder_start_token_id"),
        )
        end = _either(
            _token(config, "eos_token_id"),
            _token(generation, "eos_token_id"),
            _token(config.decoder, "eos_token_id"),
        )
        step = _encoder_decoder
    else:
        raise ModelLoadError(
            f"{spec} is a {kind}: gradcam caption takes BLIP, GIT and VisionEncoderDecoder "
            "captioners"
        )
    if start is None or end is None:
        missing = "start" if start is None else "end"
        raise ModelLoadError(f"{spec}: its config gives no {missing} token id for captions")
    return _Decoder(step, (start,), end)


def _tokenizer(folder: Path, spec: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelLoadError(f"{spec}: no usable tokenizer in its folder ({detail})") from None


def _load(spec: str, weights: str | None, task: str) -> tuple[nn.Module, Preprocess, Any, bool]:
    """The model of ``hf:spec`` for ``task``, its square preprocessing, its tokenizer, and
    whether its weights are complete."""
    from gradcam.models import HF_PREFIX, hf_folder, hf_model

    name = spec.removeprefix(HF_PREFIX)
    module, preprocess, complete, _ = hf_model(name, weights, task)
    if not complete:
        why = "weights='random'" if weights is not None else "some are missing from its folder"
        warnings.warn(
            f"model {HF_PREFIX}{name!r} has random weights ({why}): its text and maps are "
            "meaningless",
            UserWarning,
            stacklevel=3,
        )
    tokenizer = _tokenizer(hf_folder(name, weights=False), f"{HF_PREFIX}{name}")
    # ViT towers take one input size: the whole photo, resized (not cropped).
    return module.eval(), dataclasses.replace(preprocess, max_ratio=1.0), tokenizer, complete


def _encode(tokenizer: Any, text: str, what: str, *, special: bool = False) -> list[int]:
    """Token ids of ``text``, refusing empty text, more than :data:`MAX_WORDS` tokens and
    words the vocabulary lacks (an unknown token would be explained as if it were the word)."""
    if not text.strip():
        raise TextError(f"the {what} is empty")
    ids = [int(i) for i in tokenizer(text, add_special_tokens=special)["input_ids"]]
    if len(ids) > MAX_WORDS:
        raise TextError(f"the {what} has {len(ids)} tokens: at most {MAX_WORDS} are allowed")
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is not None and unknown in ids:
        word = next(
            (
                w
                for w in text.split()
                if unknown in tokenizer(w, add_special_tokens=False)["input_ids"]
            ),
            text,
        )
        raise TextError(f"the word {word[:40]!r} of the {what} is not in the model's vocabulary")
    return ids


def _label(tokenizer: Any, token: int) -> str:
    return str(tokenizer.decode([token])).strip() or str(tokenizer.convert_ids_to_tokens(token))


class HFCaptioner:
    """A transformers captioner for :func:`gradcam.vl.explain.explain_caption` (see the module
    docstring): :func:`load_hf_captioner` builds it.

    Attributes:
        name: the ``hf:`` name it was loaded by.
        model: the transformers model, in eval mode.
        preprocess: photo -> (1, 3, S, S) input.
        tokenizer: the folder's tokenizer.
        layer: the default layer of the teacher-forced model (``model.`` + the model's own name).
        max_tokens: the longest caption :meth:`generate` writes (tokens, without the end).
    """

    def __init__(self, name: str, model: nn.Module, preprocess: Preprocess, tokenizer: Any) -> None:
        from gradcam.layers import find_default_layer

        self.name, self.model, self.preprocess, self.tokenizer = name, model, preprocess, tokenizer
        self._decoder = _decoder(model, name)
        #: The longest caption written (tokens, without the end).
        self.max_tokens = MAX_WORDS
        blank = torch.zeros(1, 3, preprocess.size, preprocess.size)
        self.layer: str = find_default_layer(self.explainable([self._decoder.end]), blank)

    def generate(self, x: Tensor) -> tuple[list[int], list[str]]:
        """The greedy caption of the first image of ``x``, as :meth:`caption_tokens` gives
        a caption: the tokens written (not the text re-read, which may tokenize otherwise)."""
        ids = self._decoder.greedy(self.model, x, self.max_tokens)
        return [*ids, self._decoder.end], [_label(self.tokenizer, t) for t in ids]

    def caption_tokens(self, text: str) -> tuple[list[int], list[str]]:
        """The targets of ``text``: its token ids and the end token, and each token's label.

        Raises:
            TextError: empty text, more than :data:`~gradcam.vl.text.MAX_WORDS` tokens, or a
                word the vocabulary lacks.
        """
        ids = _encode(self.tokenizer, text, "caption")
        return [*ids, self._decoder.end], [_label(self.tokenizer, t) for t in ids]

    def caption_text(self, tokens: Sequence[int]) -> str:
        """The caption of target ``tokens`` (without the end token)."""
        return str(self.tokenizer.decode(list(tokens[:-1]), skip_special_tokens=True)).strip()

    def explainable(self, tokens: Sequence[int]) -> HFText:
        """The model teacher-forced with ``tokens`` (ending with the end token), taking the
        image alone: (B, T, V) step scores for :class:`~gradcam.targets.CaptionWord`."""
        return self._decoder.forced(self.model, tokens)


class HFAnswerer:
    """A transformers VQA model for :func:`gradcam.vl.explain.explain_answer` (ViLT or
    BLIP-VQA, see the module docstring): :func:`load_hf_answerer` builds it.

    Attributes:
        name, model, preprocess, tokenizer, layer: as :class:`HFCaptioner`'s.
        answers: ViLT's answers (``config.id2label``); empty for BLIP, which writes them.
        max_tokens: BLIP: the longest answer written.
    """

    def __init__(self, name: str, model: nn.Module, preprocess: Preprocess, tokenizer: Any) -> None:
        from gradcam.layers import find_default_layer

        self.name, self.model, self.preprocess, self.tokenizer = name, model, preprocess, tokenizer
        kind = type(model).__name__
        self._decoder: _Decoder | None = None
        self._asked: tuple[tuple[int, ...], Callable[[Sequence[int]], HFText]] | None = None
        self.answers: tuple[str, ...] = ()
        #: BLIP: the longest answer written (tokens, without the end).
        self.max_tokens = MAX_WORDS
        config: Any = model.config
        if kind == "BlipForQuestionAnswering":
            text = config.text_config
            start, end = _token(text, "bos_token_id"), _token(text, "sep_token_id")
            if start is None or end is None:
                raise ModelLoadError(f"{name}: its config gives no start or end token id")
            # The step gets each question bound (_adapters); this one reads no question.
            empty = torch.zeros(1, 0, dtype=torch.long)
            self._decoder = _Decoder(functools.partial(_blip_answer, empty), (start,), end)
        elif kind == "ViltForQuestionAnswering":
            labels = config.id2label
            self.answers = tuple(str(labels[i]) for i in range(len(labels)))
        else:
            raise ModelLoadError(f"{name} is a {kind}: gradcam vqa takes BLIP-VQA and ViLT models")
        blank = torch.zeros(1, 3, preprocess.size, preprocess.size)
        probe = torch.tensor([tokenizer("", add_special_tokens=True)["input_ids"] or [0]])
        self.layer: str = find_default_layer(self._ask(probe)([]), blank)

    def question_text(self, question: str) -> str:
        """``question`` as explained (checked: see :meth:`question_ids`)."""
        self.question_ids(question)
        return " ".join(question.split())

    def question_ids(self, question: str) -> Tensor:
        """The (1, L) ids of ``question``, with the tokenizer's special tokens."""
        return torch.tensor([_encode(self.tokenizer, question, "question", special=True)])

    def _ask(self, ids: Tensor) -> Callable[[Sequence[int]], HFText]:
        """Adapters of the question ``ids``: ``ask(tokens)`` teacher-forces answer ``tokens``
        (BLIP); ViLT's one adapter (its argument unused) is kept for the last question, so
        that its answers share their passes."""
        key = tuple(ids[0].tolist())
        if self._asked is not None and self._asked[0] == key:
            return self._asked[1]
        ask = self._adapters(ids)
        self._asked = (key, ask)
        return ask

    def _adapters(self, ids: Tensor) -> Callable[[Sequence[int]], HFText]:
        if self._decoder is None:
            adapter = HFText(self.model, functools.partial(_vilt, ids))
            return lambda _: adapter
        decoder = dataclasses.replace(self._decoder, step=functools.partial(_blip_answer, ids))
        return lambda tokens: decoder.forced(self.model, [*tokens, decoder.end])  # type: ignore[misc]

    def answer(
        self, x: Tensor, question: str
    ) -> tuple[str, dict[str, float], list[tuple[nn.Module, Any, str]]]:
        """The model's answer to ``question``, its probabilities (ViLT: the five best answers'
        sigmoids; BLIP: the answer's probability), and its (adapter, target, label)."""
        ids = self.question_ids(question)
        ask = self._ask(ids)
        if self._decoder is None:
            adapter = ask([])
            with torch.no_grad(), eval_mode(self.model):
                probs = adapter(x).sigmoid()[0]  # ViLT is trained with a binary loss per answer
            best = int(probs.argmax())
            top = probs.topk(min(5, len(probs)))
            found = {
                self.answers[int(i)]: round(float(p), 5)
                for p, i in zip(top.values, top.indices, strict=True)
            }
            return self.answers[best], found, [(adapter, Answer(best), self.answers[best])]
        tokens = self._greedy(ids, x)
        label = str(self.tokenizer.decode(tokens, skip_special_tokens=True)).strip()
        adapter = ask(tokens)
        target = CaptionLogProb([*tokens, self._decoder.end])
        with torch.no_grad(), eval_mode(self.model):
            probability = float(target(adapter(x)).exp()[0])
        return label, {label: round(probability, 5)}, [(adapter, target, label)]

    def _greedy(self, ids: Tensor, x: Tensor) -> list[int]:
        assert self._decoder is not None
        decoder = dataclasses.replace(self._decoder, step=functools.partial(_blip_answer, ids))
        return decoder.greedy(self.model, x, self.max_tokens)

    def forced(self, question: str, answers: Sequence[str]) -> list[tuple[nn.Module, Any, str]]:
        """(adapter, target, label) of each answer (one adapter for all of ViLT's).

        Raises:
            TextError: ViLT: an answer not in ``config.id2label``; BLIP: an answer the
                vocabulary cannot write.
        """
        ask = self._ask(self.question_ids(question))
        found: list[tuple[nn.Module, Any, str]] = []
        if self._decoder is None:
            lowered = [a.lower() for a in self.answers]
            for text in answers:
                if text.strip().lower() not in lowered:
                    shown = ", ".join(self.answers[:20]) + (
                        ", ..." if len(self.answers) > 20 else ""
                    )
                    raise TextError(f"unknown answer {text!r}; the model's answers are: {shown}")
                index = lowered.index(text.strip().lower())
                found.append((ask([]), Answer(index), self.answers[index]))
            return found
        for text in answers:
            tokens = _encode(self.tokenizer, text, "answer")
            label = str(self.tokenizer.decode(tokens, skip_special_tokens=True)).strip()
            found.append((ask(tokens), CaptionLogProb([*tokens, self._decoder.end]), label))
        return found


def load_hf_captioner(spec: str, weights: str | None = None) -> HFCaptioner:
    """The captioner ``hf:DIR`` or ``hf:ORG/NAME`` (its folder's weights, or ``"random"``).

    Raises:
        ModelLoadError: the folder's checks (:func:`gradcam.models.hf_model`), a model of
            another task, an architecture not listed above, or no tokenizer.
    """
    module, preprocess, tokenizer, _ = _load(spec, weights, "captioning")
    return HFCaptioner(spec, module, preprocess, tokenizer)


def load_hf_answerer(spec: str, weights: str | None = None) -> HFAnswerer:
    """The VQA model ``hf:DIR`` or ``hf:ORG/NAME`` (see :func:`load_hf_captioner`)."""
    module, preprocess, tokenizer, _ = _load(spec, weights, "vqa")
    return HFAnswerer(spec, module, preprocess, tokenizer)


class PromptScores(nn.Module):
    """A CLIP-like model with its prompts held: ``forward(x)`` is ``logits_per_image``
    (B, prompts)."""

    input_ids: Tensor
    attention_mask: Tensor

    def __init__(self, model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("input_ids", input_ids, persistent=False)
        self.register_buffer("attention_mask", attention_mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Image-prompt scores, before the softmax over the prompts."""
        out = self.model(
            pixel_values=x, input_ids=self.input_ids, attention_mask=self.attention_mask
        )
        return out.logits_per_image  # type: ignore[no-any-return]


def hf_vl_task(model: str | None) -> str | None:
    """The task of an ``hf:`` model that :mod:`gradcam.vl` explains, from its config:
    ``"captioning"``, ``"vqa"`` or ``"image-text"``; ``None`` for any other model.

    Examples:
        >>> hf_vl_task("resnet50"), hf_vl_task(None)
        (None, None)
    """
    from gradcam.hf_tasks import VL_TASK_LOADERS, hf_task, read_config
    from gradcam.models import HF_PREFIX, hf_folder

    if model is None or not model.startswith(HF_PREFIX):
        return None
    task = hf_task(read_config(hf_folder(model.removeprefix(HF_PREFIX), weights=False)))[0]
    return task if task in VL_TASK_LOADERS else None


def is_image_text(model: str | None) -> bool:
    """Whether ``model`` is an ``hf:`` model whose config says it scores images against text
    (CLIP, SigLIP, ...): ``explain --class`` then takes prompts.

    Examples:
        >>> is_image_text("resnet50"), is_image_text(None)
        (False, False)
    """
    return hf_vl_task(model) == "image-text"


def load_image_text(
    spec: str, prompts: Sequence[str], weights: str | None = None, *, layer: str | None = None
) -> Any:
    """A CLIP-like ``hf:`` model as a :class:`~gradcam.models.LoadedModel` whose classes are
    ``prompts``: class ``i`` is ``logits_per_image[:, i]``, so :func:`gradcam.explain_image`
    and ``gradcam explain --class PROMPT`` explain it like a classifier.

    Raises:
        TextError: no prompt, more than :data:`MAX_PROMPTS`, an empty one, or one of more
            than :data:`~gradcam.vl.text.MAX_WORDS` tokens or with unknown words.
        ModelLoadError: as :func:`load_hf_captioner`; a model without ``logits_per_image``.
    """
    from gradcam.layers import find_default_layer, resolve_layer
    from gradcam.models import LoadedModel

    chosen = list(dict.fromkeys(p.strip() for p in prompts))
    if not chosen:
        raise TextError('give the text prompts to explain with --class "a photo of a cat"')
    if len(chosen) > MAX_PROMPTS:
        raise TextError(f"{len(chosen)} prompts: at most {MAX_PROMPTS} are allowed")
    module, preprocess, tokenizer, complete = _load(spec, weights, "image-text")
    rows = [_encode(tokenizer, p, "prompt", special=True) for p in chosen]
    width = max(len(r) for r in rows)
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    adapter = PromptScores(module, ids, mask).eval()
    blank = torch.zeros(1, 3, preprocess.size, preprocess.size)
    try:
        with torch.no_grad():
            scores = adapter(blank)
    except AttributeError:
        raise ModelLoadError(
            f"{spec} gives no logits_per_image: explain --class PROMPT takes CLIP-like models"
        ) from None
    assert scores.shape == (1, len(chosen))
    name = resolve_layer(adapter, layer).name if layer else find_default_layer(adapter, blank)
    return LoadedModel(spec, adapter, preprocess, tuple(chosen), name, complete)
