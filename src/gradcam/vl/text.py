"""Words for the vision-and-language scenes: the vocabulary, captions and questions.

A two-object scene (:mod:`gradcam.vl.scenes`) is described by one caption, with its objects
in reading order (left to right, or top to bottom)::

    a red circle left of a blue square
    a green star above a white ring

and four questions, each about one object, with its answer::

    what color is the square ?        -> blue
    what shape is the red object ?    -> circle

Every color and shape word of a caption, and every question, is *grounded*: it names one
object, whose exact mask is the region the word or answer talks about (the human attention of
sections 8.1.1 and 8.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gradcam.errors import GradCAMError
from gradcam.synthetic.scenes import Scene

__all__ = [
    "ANSWERS",
    "END",
    "MAX_WORDS",
    "PAD",
    "VL_COLORS",
    "VL_SHAPES",
    "VOCAB",
    "Caption",
    "Question",
    "TextError",
    "caption",
    "decode",
    "encode",
    "questions",
]

VL_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
"""The shapes of the scenes: :data:`~gradcam.synthetic.SHAPES` less the diamond (a turned
square) and the crescent, which small objects make hard to tell from a circle."""

VL_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
"""The colors of the scenes (names of :data:`~gradcam.synthetic.COLORS`)."""

PAD = "<pad>"
END = "<end>"
_FUNCTION_WORDS = ("a", "left", "of", "above", "what", "color", "is", "the", "shape", "object", "?")

VOCAB: tuple[str, ...] = (PAD, END, *_FUNCTION_WORDS, *VL_COLORS, *VL_SHAPES)
"""Every word the models know, in token-id order (``<pad>`` is 0, ``<end>`` is 1)."""

ANSWERS: tuple[str, ...] = (*VL_COLORS, *VL_SHAPES)
"""The answers of the VQA model, in answer-index order."""

_IDS = {word: index for index, word in enumerate(VOCAB)}

#: The most words a caption or question may have. The scenes' captions have 7 or 8 words and
#: their questions 6 or 7; every word of a caption is a map, so a long text costs memory and
#: time in proportion (a 60,000-word caption once took a server down).
MAX_WORDS = 32


class TextError(GradCAMError):
    """A caption, question or word the models cannot read (empty, or a word not in VOCAB)."""


def encode(text: str | Sequence[str], *, what: str = "text") -> list[int]:
    """Token ids of a caption or question; ``?`` may touch the word before it.

    Raises:
        TextError: for empty text, more than :data:`MAX_WORDS` words, or a word outside
            :data:`VOCAB`, naming the word.

    Examples:
        >>> encode("what color is the square?")
        [6, 7, 8, 9, 20, 12]
    """
    words = text.replace("?", " ? ").lower().split() if isinstance(text, str) else list(text)
    if not words:
        raise TextError(f"the {what} is empty")
    if len(words) > MAX_WORDS:
        raise TextError(f"the {what} has {len(words)} words: at most {MAX_WORDS} are allowed")
    unknown = [w for w in words if w not in _IDS or w in (PAD, END)]
    if unknown:
        known = ", ".join(w for w in VOCAB if w not in (PAD, END))
        word = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "..."  # quoted back
        raise TextError(f"unknown word {word!r} in the {what}; the words known are: {known}")
    return [_IDS[w] for w in words]


def decode(ids: Sequence[int]) -> str:
    """The words of token ids, up to the first ``<end>``, without padding.

    Examples:
        >>> decode(encode("a red circle") + [1, 0])
        'a red circle'
    """
    words = []
    for index in ids:
        word = VOCAB[int(index)]
        if word == END:
            break
        if word != PAD:
            words.append(word)
    return " ".join(words)


@dataclass(frozen=True)
class Caption:
    """A caption of a scene, word by word.

    Attributes:
        words: the words, without ``<end>``.
        objects: per word, the index (in ``scene.objects``) of the object it names, or
            ``None`` for words that name no object ("a", "left", "of", "above").
    """

    words: tuple[str, ...]
    objects: tuple[int | None, ...]

    @property
    def text(self) -> str:
        """The caption as one string."""
        return " ".join(self.words)

    @property
    def tokens(self) -> list[int]:
        """Token ids of the words followed by ``<end>``: step ``t`` of a captioner predicts
        ``tokens[t]``."""
        return [*encode(self.words), _IDS[END]]


@dataclass(frozen=True)
class Question:
    """A question about one object of a scene.

    Attributes:
        words: the words of the question.
        answer: the right answer, one of :data:`ANSWERS`.
        object: the index (in ``scene.objects``) of the object asked about.
    """

    words: tuple[str, ...]
    answer: str
    object: int

    @property
    def text(self) -> str:
        """The question as one string."""
        return " ".join(self.words)

    @property
    def tokens(self) -> list[int]:
        """Token ids of the words."""
        return encode(self.words)

    @property
    def answer_index(self) -> int:
        """Index of :attr:`answer` in :data:`ANSWERS`."""
        return ANSWERS.index(self.answer)


def caption(scene: Scene, *, flip_x: bool = False, flip_y: bool = False) -> Caption:
    """The caption of a two-object scene (or of its mirror image, for augmentation).

    The relation is the axis along which the centers are further apart: "left of" when the
    horizontal distance is at least the vertical one, else "above"; the object named first is
    the left (or upper) one.

    Raises:
        ValueError: unless the scene has exactly two objects.

    Examples:
        >>> from gradcam.vl.scenes import make_vl_scene
        >>> caption(make_vl_scene(0)).text
        'a green star left of a white cross'
    """
    if len(scene.objects) != 2:
        raise ValueError(f"captions describe two-object scenes, got {len(scene.objects)} objects")
    size = scene.image.width
    xs = [size - 1 - o.center[0] if flip_x else o.center[0] for o in scene.objects]
    ys = [size - 1 - o.center[1] if flip_y else o.center[1] for o in scene.objects]
    horizontal = abs(xs[1] - xs[0]) >= abs(ys[1] - ys[0])
    axis = xs if horizontal else ys
    first, second = (0, 1) if axis[0] <= axis[1] else (1, 0)
    a, b = scene.objects[first], scene.objects[second]
    relation: tuple[str, ...] = ("left", "of") if horizontal else ("above",)
    words = ("a", a.color, a.shape, *relation, "a", b.color, b.shape)
    objects = (None, first, first, *([None] * len(relation)), None, second, second)
    return Caption(words, objects)


def questions(scene: Scene) -> list[Question]:
    """The questions about a scene: the color of each shape, then the shape of each color.

    Examples:
        >>> from gradcam.vl.scenes import make_vl_scene
        >>> [(q.text, q.answer) for q in questions(make_vl_scene(0))][:1]
        [('what color is the cross ?', 'white')]
    """
    asked = [
        Question(("what", "color", "is", "the", o.shape, "?"), o.color, i)
        for i, o in enumerate(scene.objects)
    ]
    asked += [
        Question(("what", "shape", "is", "the", o.color, "object", "?"), o.shape, i)
        for i, o in enumerate(scene.objects)
    ]
    return asked
