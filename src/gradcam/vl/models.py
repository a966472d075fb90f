"""A CNN + LSTM captioner and a CNN + LSTM VQA model for the two-object scenes.

Both read the image with the same small CNN, :class:`SceneEncoder`: the convolutional layers
of :class:`~gradcam.synthetic.ShapeNet` (their training starts from its shipped weights, as the
paper's models start from an ImageNet CNN) give ``A``, 128 x 12 x 12 feature maps at 96 x 96
input (``features.final_relu``, the Grad-CAM layer, :data:`VL_LAYER` inside the adapters),
then a 3 x 3 average pool and a linear layer make one 256-vector of the whole image. It is
*not* global pooling: the linear layer sees where things are, as the fully connected layers of
VGG-16 do in the paper's models, so "left of" and "above" can be learned.

* :class:`Captioner` (Show and Tell, Vinyals et al.; neuraltalk2): the image vector is the
  LSTM's input at step 0, then the caption's words (teacher forcing); step ``t`` scores the
  vocabulary for word ``t``.
* :class:`VQAModel` (the "deeper LSTM Q + norm I" model of section 8.2): ``tanh`` of the image
  vector times ``tanh`` of the LSTM's last state over the question, pointwise, then a two-layer
  classifier over :data:`~gradcam.vl.text.ANSWERS`.

Grad-CAM explains a model whose input is the image alone, so the text goes in an adapter:
``captioner.explainable(tokens)`` and ``vqa.explainable(question)`` return such modules.
The shipped weights (``gradcam/data/vl_captioner.pt``, ``vl_vqa.pt``, float16) were made by
``scripts/train_vl.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from gradcam.errors import ModelLoadError
from gradcam.hooks import eval_mode
from gradcam.synthetic.model import ShapeNet
from gradcam.vl.text import ANSWERS, END, VOCAB, TextError, decode, encode

__all__ = [
    "CAPTIONER_WEIGHTS",
    "VL_LAYER",
    "VQA_WEIGHTS",
    "Captioner",
    "SceneEncoder",
    "TeacherForced",
    "VQAModel",
    "WithQuestion",
    "load_captioner",
    "load_vqa",
]

_DATA = Path(__file__).resolve().parent.parent / "data"
CAPTIONER_WEIGHTS: Path = _DATA / "vl_captioner.pt"
"""The shipped :class:`Captioner` state dict (float16)."""
VQA_WEIGHTS: Path = _DATA / "vl_vqa.pt"
"""The shipped :class:`VQAModel` state dict (float16)."""

VL_LAYER = "model.encoder.features.final_relu"
"""The Grad-CAM layer ``A`` (128 x 12 x 12) in the adapters that ``explainable`` returns."""

_FEATURES = 128
_VECTOR = 256
_EMBED = 128
_HIDDEN = 256
_END = VOCAB.index(END)


class SceneEncoder(nn.Module):
    """The image half of both models: (B, 3, 96, 96) -> A (B, 128, 12, 12) -> (B, 256).

    Examples:
        >>> SceneEncoder()(torch.zeros(2, 3, 96, 96)).shape
        torch.Size([2, 256])
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = ShapeNet().features
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.project = nn.Linear(_FEATURES * 16, _VECTOR)

    def forward(self, x: Tensor) -> Tensor:
        """The image vector (B, 256) of a normalized (B, 3, H, W) batch."""
        return self.project(self.pool(self.features(x)).flatten(1))  # type: ignore[no-any-return]


def _tokens(tokens: Sequence[int] | Tensor | str, what: str) -> Tensor:
    ids = encode(tokens, what=what) if isinstance(tokens, str) else tokens
    tensor = torch.as_tensor(ids, dtype=torch.long)
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise TextError(f"the {what} must be a non-empty 1-D sequence of token ids")
    if int(tensor.min()) < 0 or int(tensor.max()) >= len(VOCAB):
        raise TextError(f"the {what} has a token id outside the vocabulary of {len(VOCAB)}")
    return tensor


class Captioner(nn.Module):
    """Show-and-Tell captioner: the image vector at step 0, then the words.

    ``forward(x, tokens)`` teacher-forces ``tokens`` (B, T) (a caption and ``<end>``) and
    returns (B, T, vocabulary) scores, where step ``t`` predicts ``tokens[:, t]``: the input
    at step 0 is the image, at step ``t > 0`` the word ``tokens[:, t - 1]``.

    Examples:
        >>> model = load_captioner()
        >>> from gradcam.vl import VL_PREPROCESS, vl_scene
        >>> model.generate(VL_PREPROCESS(vl_scene(0).image))  # the truth: "... a purple cross"
        ['a red circle above a white cross']
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SceneEncoder()
        self.image_in = nn.Linear(_VECTOR, _EMBED)
        self.embed = nn.Embedding(len(VOCAB), _EMBED, padding_idx=0)
        self.lstm = nn.LSTM(_EMBED, _HIDDEN, batch_first=True)
        self.out = nn.Linear(_HIDDEN, len(VOCAB))

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        """(B, T, vocabulary) step scores of the teacher-forced ``tokens`` (B, T)."""
        image = self.image_in(torch.relu(self.encoder(x))).unsqueeze(1)
        inputs = torch.cat([image, self.embed(tokens[:, :-1])], dim=1)
        hidden, _ = self.lstm(inputs)
        return self.out(hidden)  # type: ignore[no-any-return]

    @torch.no_grad()
    def generate(self, x: Tensor, max_words: int = 12) -> list[str]:
        """Greedy captions of a (B, 3, H, W) batch, one string per image (eval mode)."""
        with eval_mode(self):  # restores every flag, and takes turns with other threads
            step = self.image_in(torch.relu(self.encoder(x))).unsqueeze(1)
            state: tuple[Tensor, Tensor] | None = None
            words: list[Tensor] = []
            for _ in range(max_words + 1):
                hidden, state = self.lstm(step, state)
                word = self.out(hidden[:, -1]).argmax(dim=-1)
                words.append(word)
                if bool((torch.stack(words, 1) == _END).any(dim=1).all()):
                    break
                step = self.embed(word).unsqueeze(1)
        return [decode(row) for row in torch.stack(words, dim=1).tolist()]

    def explainable(self, tokens: Sequence[int] | Tensor | str) -> TeacherForced:
        """An adapter that takes the image alone: this model teacher-forced with ``tokens``
        (a caption as text, which gets ``<end>`` appended, or token ids as they are).

        Examples:
            >>> from gradcam import GradCAM
            >>> from gradcam.targets import CaptionWord
            >>> from gradcam.vl import VL_PREPROCESS, vl_scene
            >>> adapter = load_captioner().explainable("a red circle above a purple cross")
            >>> adapter.tokens.tolist()  # the words' ids, then <end>
            [2, 13, 19, 5, 2, 17, 23, 1]
            >>> x = VL_PREPROCESS(vl_scene(0).image)
            >>> GradCAM(adapter, VL_LAYER)(x, CaptionWord(adapter.tokens.tolist(), 2)).maps.shape
            torch.Size([1, 1, 96, 96])
        """
        ids = _tokens(tokens, "caption")
        if isinstance(tokens, str):
            ids = torch.cat([ids, torch.tensor([_END])])
        return TeacherForced(self, ids)


class TeacherForced(nn.Module):
    """A :class:`Captioner` with a fixed caption: ``forward(x)`` gives (B, T, vocabulary)
    step scores for the targets :class:`~gradcam.targets.CaptionWord` and
    :class:`~gradcam.targets.CaptionLogProb`."""

    tokens: Tensor

    def __init__(self, model: Captioner, tokens: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("tokens", tokens, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Step scores of the held caption for every image of ``x``."""
        return self.model(x, self.tokens.expand(x.shape[0], -1))  # type: ignore[no-any-return]


class VQAModel(nn.Module):
    """CNN + LSTM VQA model: ``classifier(tanh(image) * tanh(question))`` over ANSWERS.

    ``forward(x, question)`` takes (B, T) question token ids (padded with 0 at the end) and
    returns (B, answers) scores.

    Examples:
        >>> model = load_vqa()
        >>> from gradcam.vl import ANSWERS, VL_PREPROCESS, vl_scene
        >>> x = VL_PREPROCESS(vl_scene(0).image)
        >>> ANSWERS[int(model(x, model.question("what color is the cross?")).argmax())]
        'purple'
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SceneEncoder()
        self.embed = nn.Embedding(len(VOCAB), _EMBED, padding_idx=0)
        self.lstm = nn.LSTM(_EMBED, _HIDDEN, batch_first=True)
        self.question_out = nn.Linear(_HIDDEN, _VECTOR)
        self.classifier = nn.Sequential(
            nn.Linear(_VECTOR, _VECTOR), nn.ReLU(), nn.Linear(_VECTOR, len(ANSWERS))
        )

    @staticmethod
    def question(text: str | Sequence[int]) -> Tensor:
        """A question as (1, T) token ids."""
        return _tokens(text, "question").unsqueeze(0)

    def forward(self, x: Tensor, question: Tensor) -> Tensor:
        """(B, answers) scores of the (B, T) ``question`` ids about the images ``x``."""
        hidden, _ = self.lstm(self.embed(question))
        last = (question != 0).sum(dim=1).clamp(min=1) - 1
        state = hidden[torch.arange(len(question)), last]
        fused = torch.tanh(self.encoder(x)) * torch.tanh(self.question_out(state))
        return self.classifier(fused)  # type: ignore[no-any-return]

    def explainable(self, question: Sequence[int] | Tensor | str) -> WithQuestion:
        """An adapter that takes the image alone: this model asked ``question``; its output
        (B, answers) fits :class:`~gradcam.targets.Answer` and plain class ids."""
        return WithQuestion(self, _tokens(question, "question"))


class WithQuestion(nn.Module):
    """A :class:`VQAModel` with a fixed question: ``forward(x)`` gives (B, answers)."""

    question: Tensor

    def __init__(self, model: VQAModel, question: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("question", question, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Answer scores for every image of ``x``."""
        return self.model(x, self.question.expand(x.shape[0], -1))  # type: ignore[no-any-return]


_M = TypeVar("_M", Captioner, VQAModel)


def _load(model: _M, weights: str | Path) -> _M:
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadError(
            f"weights file {path}: no such file (train it with scripts/train_vl.py)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def load_captioner(weights: str | Path = CAPTIONER_WEIGHTS) -> Captioner:
    """The shipped :class:`Captioner` (or one with the weights of ``weights``), in eval mode."""
    return _load(Captioner(), weights)


def load_vqa(weights: str | Path = VQA_WEIGHTS) -> VQAModel:
    """The shipped :class:`VQAModel` (or one with the weights of ``weights``), in eval mode."""
    return _load(VQAModel(), weights)
