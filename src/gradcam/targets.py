"""What to explain: the scalar scores ``y^c`` whose gradients Grad-CAM follows.

A target is anything that turns the model output into one differentiable score per image:

* a class id or a list of class ids: **the same classes for every image of the batch**
  (``y^c`` = logit ``c``): ``cam(x, [3, 5])`` gives two maps per image, for classes 3 and 5.
  For one class per image (what torchcam's and Captum's lists mean), pass a ``(B, 1)`` tensor:
  ``cam(x, torch.tensor([[3], [5]]))``; a list as long as a batch of B > 1 images warns.
  A class id is any integer (``int``, numpy and torch integer scalars, 0-d integer tensors, as
  ``np.argmax`` gives) or a class name (``"espresso"``: exact, then a unique partial match) when
  the model has class names (loaded by :func:`~gradcam.load_model`, or a Hugging Face model
  with ``config.id2label``);
* a ``(B, K)`` integer tensor: ``K`` class ids per image;
* :class:`TopK`: the ``k`` best-scoring classes of each image;
* a callable ``f(output) -> (B,)`` tensor, or a list of them: any differentiable score of any
  output (a caption word, a VQA answer, a detection (:class:`gradcam.tasks.DetectionScore`),
  a region of a segmentation map (:class:`gradcam.tasks.SegmentationScore`));
* per-image targets (pytorch-grad-cam's convention, :func:`is_per_image`): callables scored on
  ONE image's output. A list of them is one target per image (``cam(x2,
  [ClassifierOutputTarget(3), ClassifierOutputTarget(5)])``: class 3 in the first image, class 5
  in the second); one alone applies to every image. They are :class:`PerImage` objects (every
  target of :mod:`gradcam.compat.pytorch_grad_cam`), pytorch-grad-cam's own target objects, or
  any callable wrapped with :func:`per_image`.

Lists may mix class ids and (batch) callables; per-image targets are not mixed with others.
Class scores are taken before the softmax, as in the paper.

Vision-and-language models (section 8) get ready-made callables: :class:`CaptionLogProb`
(a whole caption, section 8.1), :class:`CaptionWord` (one word at its time step, 8.1.1) and
:class:`Answer` (a VQA answer, given or forced, 8.2). The model Grad-CAM sees takes the image
alone, so the text goes in an adapter: a small module holding the caption (fed with teacher
forcing) or the question. For a Hugging Face captioner, say::

    class Captioner(nn.Module):
        def __init__(self, model, input_ids):
            super().__init__()
            self.model, self.input_ids = model, input_ids  # (1, T): start token + caption

        def forward(self, pixel_values):
            # (B, T, V): logits[:, t] predicts token t + 1 of input_ids
            return self.model(pixel_values=pixel_values, input_ids=self.input_ids).logits

    caption = input_ids[0, 1:].tolist()
    cam = GradCAM(Captioner(model, input_ids), "model.vision_model.encoder.layers.11")
    cam(x, [CaptionLogProb(caption), CaptionWord(caption, 2)])

The targets read the step logits ``(B, T, V)`` from the output (a tensor, the first element of
a tuple, ``output["logits"]`` or ``output.logits``); step ``t`` must predict ``tokens[t]``.
"""

from __future__ import annotations

import difflib
import operator
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, SupportsIndex, TypeAlias

import torch
from torch import Tensor, nn

from gradcam.errors import TargetError

__all__ = [
    "Answer",
    "CaptionLogProb",
    "CaptionWord",
    "ClassScore",
    "PerImage",
    "ResolvedTargets",
    "TargetLike",
    "TopK",
    "as_logits",
    "class_index",
    "class_names",
    "fixed_targets",
    "is_per_image",
    "per_image",
    "register_class_names",
    "resolve_targets",
    "target_list",
]

ScoreFn: TypeAlias = Callable[[Any], Tensor]
ClassLike: TypeAlias = "SupportsIndex | str"
TargetLike: TypeAlias = "ClassLike | Sequence[ClassLike | ScoreFn] | Tensor | TopK | ScoreFn"

_FORMS = (
    "targets may be a class id (an int, a numpy or torch integer, a 0-d integer tensor), a "
    "class name, a list of them (the same classes for every image), a (B, K) integer tensor "
    "(K classes per image), TopK(k), callables f(output) -> (B,) scores, or per-image targets "
    "(one per image, scored on that image's output: gradcam.targets.per_image(f))"
)


@dataclass(frozen=True)
class TopK:
    """The ``k`` classes with the highest scores, per image, best first.

    Examples:
        >>> resolve_targets(TopK(2), torch.tensor([[1.0, 3.0, 2.0]]), 1).classes
        tensor([[1, 2]])
    """

    k: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise TargetError(f"TopK needs a positive integer k, got {self.k!r}")


@dataclass(frozen=True)
class ResolvedTargets:
    """Targets evaluated on one model output.

    Attributes:
        scores: (B, K) differentiable scores ``y^c``.
        classes: (B, K) class ids; -1 where the target was a callable.
    """

    scores: Tensor
    classes: Tensor


#: The attribute under which a module keeps the class names given by register_class_names.
_NAMES_ATTRIBUTE = "_gradcam_class_names"


def register_class_names(module: nn.Module, names: Sequence[str]) -> None:
    """Give ``module`` class names, so targets may name classes (``cam(x, "espresso")``).

    The names live on the module, in its ``_gradcam_class_names`` attribute (a plain
    attribute: not a parameter or buffer, so ``state_dict`` is unchanged; copies of the module
    keep them). Every model :func:`~gradcam.load_model` returns has them
    (:class:`~gradcam.LoadedModel` gives its module its ``class_names``).

    Examples:
        >>> net = torch.nn.Linear(2, 2)
        >>> register_class_names(net, ["cat", "dog"])
        >>> class_names(net)
        ('cat', 'dog')
    """
    module.__dict__[_NAMES_ATTRIBUTE] = tuple(str(n) for n in names)


def class_names(model: nn.Module) -> tuple[str, ...] | None:
    """The class names of ``model``, or ``None`` when it has none.

    Names given by :func:`register_class_names` (every model :func:`~gradcam.load_model`
    loads), else a Hugging Face model's ``config.id2label``.

    Examples:
        >>> class_names(nn.Linear(2, 3)) is None
        True
    """
    registered = model.__dict__.get(_NAMES_ATTRIBUTE)
    if registered is not None:
        return tuple(registered)
    labels = getattr(getattr(model, "config", None), "id2label", None)
    if isinstance(labels, Mapping) and labels:
        return tuple(
            str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(len(labels))
        )
    return None


def class_index(names: Sequence[str], query: str | int) -> int:
    """Resolve a class given as an index or a name: exact name (any case), then a unique
    partial match.

    Raises:
        TargetError: when the index is out of range, or no class or several classes match
            (close names are suggested).

    Examples:
        >>> class_index(["tabby cat", "dog"], "cat")
        0
        >>> class_index(["tabby cat", "dog"], "1")
        1
    """
    count = len(names)
    text = str(query).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < count:
            raise TargetError(f"class {index} is out of range: the model has {count}")
        return index
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    partial = [i for i, n in enumerate(lowered) if text.lower() in n]
    if len(partial) == 1:
        return partial[0]
    if partial:
        found = ", ".join(repr(names[i]) for i in partial[:8])
        raise TargetError(f"class {text!r} is ambiguous: it matches {found}")
    close = difflib.get_close_matches(text.lower(), lowered, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(names[lowered.index(c)]) for c in close)}?"
    raise TargetError(f"no class named {text!r}{hint if close else ''}")


def _find_tensor(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        tensors = [v for v in output.values() if isinstance(v, Tensor)]
        return output.get("logits", tensors[0] if len(tensors) == 1 else None)
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return getattr(output, "logits", None)


def as_logits(output: Any) -> Tensor:
    """Find the (B, N) class-score tensor in a model output.

    Understands a tensor, a tuple or list (first element, as torchvision's auxiliary outputs),
    a mapping with ``"logits"`` (or a single tensor value), and objects with ``.logits``
    (Hugging Face outputs).

    Raises:
        TargetError: naming the output type when no class scores are found.

    Examples:
        >>> as_logits({"logits": torch.zeros(1, 3)}).shape
        torch.Size([1, 3])
    """
    found = _find_tensor(output)
    if not isinstance(found, Tensor):
        raise TargetError(
            f"cannot find class scores in a model output of type {type(output).__name__}; "
            "return a tensor, a tuple, a dict with 'logits' or an object with .logits, "
            "or pass callable targets f(output) -> (B,) scores"
        )
    if found.dim() != 2:
        raise TargetError(
            f"class targets need (B, num_classes) scores, but the model output has shape "
            f"{tuple(found.shape)}; pass callable targets f(output) -> (B,) scores instead"
        )
    return found


def _class_ids(ids: Tensor, batch: int, num_classes: int) -> Tensor:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise TargetError(f"class id {bad} is out of range: the model has {num_classes} classes")
    return ids.expand(batch, -1)


def _call_score(fn: ScoreFn, output: Any, batch: int) -> Tensor:
    score = fn(output)
    if not isinstance(score, Tensor):
        raise TargetError(
            f"target {getattr(fn, '__name__', fn)!r} returned {type(score).__name__}, "
            f"expected a ({batch},) tensor"
        )
    if score.shape == (batch, 1):
        score = score[:, 0]
    if score.dim() == 0 and batch > 1:
        raise TargetError(
            f"target {getattr(fn, '__name__', fn)!r} returned one number for a batch of {batch} "
            "images; a target scored on one image's output (pytorch-grad-cam style) must be "
            "marked per image: gradcam.targets.per_image(target)"
        )
    if score.shape != (batch,):
        raise TargetError(
            f"target {getattr(fn, '__name__', fn)!r} returned shape {tuple(score.shape)}, "
            f"expected ({batch},): one score per image"
        )
    return score


def _is_score_fn(item: Any) -> bool:
    return callable(item) and not isinstance(item, (Tensor, TopK)) and not is_per_image(item)


class PerImage:
    """Base of the targets scored on ONE image's output (pytorch-grad-cam's convention).

    A subclass implements ``__call__(output) -> score`` where ``output`` is one image's part of
    the model output (a (N,) row of class scores, a (C, H, W) segmentation map, one image's
    detections) and the score is one number (a 0-d or one-element tensor). In a list, per-image
    targets are one per image; alone, one applies to every image. ``class_id`` (or, as
    pytorch-grad-cam names it, ``category``) is reported in results' ``classes``.

    Examples:
        >>> class Second(PerImage):
        ...     def __call__(self, output):
        ...         return output[1]
        >>> resolve_targets([Second(), Second()], torch.tensor([[0.0, 2.0], [0.0, 5.0]]), 2).scores
        tensor([[2.],
                [5.]])
    """

    def __call__(self, output: Any) -> Tensor:
        """The score of one image's output."""
        raise NotImplementedError


@dataclass(frozen=True)
class _PerImageFn(PerImage):
    fn: Callable[[Any], Any]

    def __call__(self, output: Any) -> Tensor:
        return self.fn(output)  # type: ignore[no-any-return]

    @property
    def class_id(self) -> int:
        return _target_class(self.fn)


def per_image(fn: Callable[[Any], Any]) -> PerImage:
    """Mark ``fn`` as a per-image target: called on one image's output, returning one score.

    Examples:
        >>> logits = torch.tensor([[0.0, 2.0], [7.0, 5.0]])
        >>> resolve_targets(per_image(lambda row: row.max()), logits, 2).scores[:, 0]
        tensor([2., 7.])
    """
    if not callable(fn):
        raise TargetError(f"per_image needs a callable, got {type(fn).__name__}")
    return fn if isinstance(fn, PerImage) else _PerImageFn(fn)


# pytorch-grad-cam's own target objects are per-image by its documented convention.
_PER_IMAGE_PACKAGES = ("pytorch_grad_cam",)


def is_per_image(item: Any) -> bool:
    """Whether ``item`` is a per-image target: a :class:`PerImage` (:func:`per_image`, every
    target of :mod:`gradcam.compat.pytorch_grad_cam`) or an object of a class defined in
    pytorch-grad-cam (``ClassifierOutputTarget`` and the others of its ``model_targets``).

    Examples:
        >>> is_per_image(per_image(len)), is_per_image(len)
        (True, False)
    """
    if isinstance(item, PerImage):
        return True
    package = type(item).__module__.partition(".")[0]
    return callable(item) and package in _PER_IMAGE_PACKAGES


def _target_class(item: Any) -> int:
    """The class a target stands for (``class_id``, or pytorch-grad-cam's ``category``), -1
    when it names none."""
    for attribute in ("class_id", "category"):
        value = getattr(item, attribute, None)
        if value is not None and not isinstance(value, bool):
            try:
                return operator.index(value)
            except TypeError:
                continue
    return -1


def _image_output(output: Any, image: int, batch: int) -> Any:
    """Image ``image``'s part of a batch's model ``output``."""
    if isinstance(output, Tensor):
        return output[image]
    if isinstance(output, Mapping):
        return {k: v[image] if isinstance(v, Tensor) else v for k, v in output.items()}
    if isinstance(output, (tuple, list)):
        if all(isinstance(v, Tensor) and v.dim() and v.shape[0] == batch for v in output):
            return type(output)(v[image] for v in output)
        if len(output) == batch:
            return output[image]  # one entry per image, as detectors return
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits[image]
    raise TargetError(
        f"cannot split a model output of type {type(output).__name__} into images for "
        "per-image targets; return a tensor, a dict of tensors or a list with one entry per image"
    )


def _batch_of(output: Any) -> int:
    """The number of images in a model output."""
    found = _find_tensor(output)
    if isinstance(output, (tuple, list)) and not isinstance(found, Tensor):
        return len(output)
    if not isinstance(found, Tensor) or not found.dim():
        raise TargetError(
            f"cannot count the images in a model output of type {type(output).__name__}"
        )
    return int(found.shape[0])


def _per_image_score(target: Any, image_output: Any) -> Tensor:
    score = target(image_output)
    if not isinstance(score, Tensor) or score.numel() != 1:
        shape = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
        raise TargetError(
            f"per-image target {target!r} returned {shape}, expected one number: it is "
            "called on one image's output"
        )
    return score.reshape(())


def _resolve_per_image(targets: Any, items: list[Any], output: Any, batch: int) -> ResolvedTargets:
    """One per-image target per image (or one alone for every image), as a (B, 1) column."""
    if not all(is_per_image(item) for item in items):
        raise TargetError(
            "per-image targets (pytorch-grad-cam style, one per image) cannot be mixed with "
            "class ids or batch callables in one list: give one kind"
        )
    if is_per_image(targets):
        items = items * batch
    if len(items) != batch:
        raise TargetError(
            f"{len(items)} per-image targets for a batch of {batch} images: a list of "
            "pytorch-grad-cam-style targets has one target per image (one target alone applies "
            "to every image)"
        )
    scores = torch.stack(
        [_per_image_score(t, _image_output(output, b, batch)) for b, t in enumerate(items)]
    )[:, None]
    classes = torch.tensor([[_target_class(t)] for t in items], device=scores.device)
    return ResolvedTargets(scores, classes)


@dataclass(frozen=True)
class _OnEachCopy:
    """A per-image target applied to each of a batch of altered copies of its image."""

    target: Any

    @property
    def class_id(self) -> int:
        return _target_class(self.target)

    def __call__(self, output: Any) -> Tensor:
        count = _batch_of(output)
        return torch.stack(
            [_per_image_score(self.target, _image_output(output, i, count)) for i in range(count)]
        )


def _is_one_class(item: Any) -> bool:
    """Whether ``item`` is one class id or name, not a list of them."""
    if isinstance(item, (str, bool)):
        return isinstance(item, str)
    if isinstance(item, Tensor):
        return item.dim() == 0
    try:
        operator.index(item)
    except TypeError:
        return False
    return True


def target_list(targets: Any) -> list[Any]:
    """The targets as a list of single targets (class ids, names, callables), without the
    model output: one class id, name or callable becomes a list of one.

    Raises:
        TargetError: for a form that is neither a single target nor a sequence of them.

    Examples:
        >>> target_list(torch.tensor(3))
        [tensor(3)]
    """
    if _is_one_class(targets) or _is_score_fn(targets) or is_per_image(targets):
        return [targets]
    if isinstance(targets, Iterable) and not isinstance(targets, (Mapping, bytes)):
        return list(targets)
    raise TargetError(f"unsupported targets {targets!r} of type {type(targets).__name__}: {_FORMS}")


def _class_id(item: Any, names: Sequence[str] | None) -> int:
    """One class id from an integer of any integral type or a class name."""
    if isinstance(item, str):
        if names is None:
            raise TargetError(
                f"class name {item!r} needs a model with class names (one from "
                "gradcam.load_model, or a Hugging Face model with config.id2label); give "
                "class ids instead"
            )
        return class_index(names, item)
    integer_dtype = isinstance(item, Tensor) and not (
        item.dtype.is_floating_point or item.dtype.is_complex or item.dtype == torch.bool
    )
    if integer_dtype and item.dim() == 0:
        return int(item)
    if not isinstance(item, (bool, Tensor)):
        try:
            return operator.index(item)
        except TypeError:
            pass
    raise TargetError(f"unsupported target {item!r} of type {type(item).__name__}: {_FORMS}")


def resolve_targets(
    targets: TargetLike | None,
    output: Any,
    batch: int,
    *,
    names: Sequence[str] | None = None,
) -> ResolvedTargets:
    """Evaluate ``targets`` on a model ``output`` for a batch of ``batch`` images.

    ``None`` means the top-1 class. A list of class ids means the same classes for every
    image; a list of ``batch`` > 1 class ids warns, naming the ``(B, 1)`` tensor form for one
    class per image. See the module docstring for the accepted forms.

    Args:
        targets: what to explain.
        output: the model output.
        batch: the number of images.
        names: the model's class names (:func:`class_names`), for targets given by name.

    Raises:
        TargetError: for an unknown form, a class id out of range, an unknown class name, or a
            callable that does not return one score per image.

    Examples:
        >>> logits = torch.tensor([[1.0, 3.0, 2.0]])
        >>> resolve_targets(TopK(2), logits, 1).classes
        tensor([[1, 2]])
        >>> resolve_targets("dog", logits, 1, names=["cat", "dog", "fox"]).scores
        tensor([[3.]])
    """
    if targets is None:
        targets = TopK(1)
    if isinstance(targets, TopK):
        logits = as_logits(output)
        k = min(targets.k, logits.shape[1])
        classes = logits.detach().topk(k, dim=1).indices
        return ResolvedTargets(logits.gather(1, classes), classes)
    if isinstance(targets, Tensor) and targets.dim() != 0:
        if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.dim() != 2:
            raise TargetError(
                f"a tensor of targets must hold integer class ids of shape (B, K); got "
                f"{targets.dtype} of shape {tuple(targets.shape)} (use a list for the same "
                "classes for every image, or ids.unsqueeze(1) for one class per image)"
            )
        logits = as_logits(output)
        if targets.shape[0] not in (1, batch) or targets.shape[1] == 0:
            raise TargetError(
                f"targets of shape {tuple(targets.shape)} do not fit a batch of {batch} images"
            )
        classes = _class_ids(targets.to(logits.device, torch.long), batch, logits.shape[1])
        return ResolvedTargets(logits.gather(1, classes), classes)
    items = target_list(targets)
    if not items:
        raise TargetError("targets is empty: give at least one class id or score function")
    if any(is_per_image(item) for item in items):
        return _resolve_per_image(targets, items, output, batch)
    ids = [None if _is_score_fn(item) else _class_id(item, names) for item in items]
    if batch > 1 and len(ids) == batch and None not in ids:
        warnings.warn(
            f"{batch} class ids for a batch of {batch} images: a list means the same {batch} "
            f"classes for every image ({batch} maps each); for one class per image pass a "
            f"({batch}, 1) tensor, torch.tensor(ids).unsqueeze(1)",
            UserWarning,
            stacklevel=3,
        )
    columns: list[Tensor] = []
    classes_list: list[int] = []
    logits_cache: Tensor | None = None
    for item, class_id in zip(items, ids, strict=True):
        if class_id is not None:
            if logits_cache is None:
                logits_cache = as_logits(output)
            _class_ids(torch.tensor([[class_id]]), batch, logits_cache.shape[1])
            columns.append(logits_cache[:, class_id])
            classes_list.append(class_id)
        else:
            columns.append(_call_score(item, output, batch))
            # Targets that stand for one output unit (a class, an answer, a word) report it.
            classes_list.append(_target_class(item))
    scores = torch.stack(columns, dim=1)
    classes = torch.tensor(classes_list, device=scores.device).expand(batch, -1)
    return ResolvedTargets(scores, classes)


@dataclass(frozen=True)
class ClassScore:
    """The score of class ``class_id`` (before the softmax), as a callable target.

    Examples:
        >>> ClassScore(1)(torch.tensor([[1.0, 3.0]]))
        tensor([3.])
    """

    class_id: int

    def __call__(self, output: Any) -> Tensor:
        """``(B,)`` scores of the class."""
        logits = as_logits(output)
        _class_ids(torch.tensor([[self.class_id]]), 1, logits.shape[1])
        return logits[:, self.class_id]


def fixed_targets(
    targets: TargetLike | None, classes: Tensor, image: int = 0
) -> list[int | ScoreFn]:
    """The targets of image ``image`` as a list that no longer depends on the model output.

    Class ids (``TopK``, ``None``, tensors, names, integers) become :class:`ClassScore`
    callables for the ids they resolved to (``classes``, the row of
    :attr:`ResolvedTargets.classes` for that image); callables stay as they are; the image's
    per-image target becomes a callable that scores each of a batch of copies of the image.
    Methods that re-run the model on altered copies of an image (occlusion) explain these.

    Examples:
        >>> fixed_targets(TopK(2), torch.tensor([3, 1]))
        [ClassScore(class_id=3), ClassScore(class_id=1)]
    """
    ids = [int(c) for c in classes.tolist()]
    if (
        targets is None
        or isinstance(targets, TopK)
        or (isinstance(targets, Tensor) and targets.dim() != 0)
    ):
        return [ClassScore(c) for c in ids]
    items = target_list(targets)
    if any(is_per_image(item) for item in items):
        return [_OnEachCopy(items[0] if is_per_image(targets) else items[image])]
    return [
        item if _is_score_fn(item) else ClassScore(c) for item, c in zip(items, ids, strict=True)
    ]


def _step_logits(output: Any) -> Tensor:
    """The (B, T, V) per-step vocabulary scores of a captioning model's output."""
    found = _find_tensor(output)
    if not isinstance(found, Tensor) or found.dim() != 3:
        shape = tuple(found.shape) if isinstance(found, Tensor) else type(output).__name__
        raise TargetError(
            f"caption targets need (B, T, vocabulary) step scores from the model, got {shape}: "
            "return logits[:, t] predicting token t (see the adapter in gradcam.targets)"
        )
    return found


def _token_ids(tokens: tuple[int, ...], logits: Tensor) -> Tensor:
    steps, vocabulary = logits.shape[1], logits.shape[2]
    if len(tokens) > steps:
        raise TargetError(
            f"the caption has {len(tokens)} tokens but the model gave scores for {steps} steps"
        )
    if any(t < 0 or t >= vocabulary for t in tokens):
        bad = next(t for t in tokens if t < 0 or t >= vocabulary)
        raise TargetError(f"token id {bad} is out of range: the vocabulary has {vocabulary} words")
    return torch.tensor(tokens, device=logits.device).expand(logits.shape[0], -1)


def _as_tokens(tokens: Sequence[int] | Tensor) -> tuple[int, ...]:
    values = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
    if not values or not all(isinstance(t, int) and not isinstance(t, bool) for t in values):
        raise TargetError(f"tokens must be a non-empty sequence of integer ids, got {tokens!r}")
    return tuple(values)


@dataclass(frozen=True, init=False)
class CaptionLogProb:
    """The log-probability of a whole caption (section 8.1), a score per image:

    .. math:: y = \\log p(w_1..w_T \\mid I) = \\sum_t \\log \\mathrm{softmax}(z_t)_{w_t}

    where ``z_t`` are the model's step-``t`` vocabulary scores (teacher forcing).

    Examples:
        >>> CaptionLogProb([0, 1])(torch.zeros(1, 2, 4))  # two steps, 4 equally likely words
        tensor([-2.7726])
    """

    tokens: tuple[int, ...]

    def __init__(self, tokens: Sequence[int] | Tensor) -> None:
        object.__setattr__(self, "tokens", _as_tokens(tokens))

    def __call__(self, output: Any) -> Tensor:
        """``(B,)`` log-probabilities of the caption."""
        logits = _step_logits(output)
        ids = _token_ids(self.tokens, logits)
        steps = logits[:, : len(self.tokens)].float().log_softmax(dim=-1)
        return steps.gather(-1, ids.unsqueeze(-1)).squeeze(-1).sum(dim=1)


@dataclass(frozen=True, init=False)
class CaptionWord:
    """One word of a caption at its time step (section 8.1.1): the score ``z_t[w_t]`` of
    token ``tokens[position]`` at step ``position``, before the softmax like class scores
    (the word one-hot at its step).

    Examples:
        >>> CaptionWord([2, 3], 1)(torch.arange(8.0).view(1, 2, 4))  # word 3 at step 1
        tensor([7.])
    """

    tokens: tuple[int, ...]
    position: int

    def __init__(self, tokens: Sequence[int] | Tensor, position: int) -> None:
        words = _as_tokens(tokens)
        if not -len(words) <= position < len(words):
            raise TargetError(f"position {position} is outside a caption of {len(words)} tokens")
        object.__setattr__(self, "tokens", words)
        object.__setattr__(self, "position", position % len(words))

    @property
    def class_id(self) -> int:
        """The token id this target scores (reported in results' ``classes``)."""
        return self.tokens[self.position]

    def __call__(self, output: Any) -> Tensor:
        """``(B,)`` scores of the word at its step."""
        logits = _step_logits(output)
        ids = _token_ids(self.tokens, logits)
        return logits[:, self.position].gather(-1, ids[:, self.position : self.position + 1])[:, 0]


@dataclass(frozen=True)
class Answer:
    """The score of answer ``index`` of a VQA model (section 8.2), before the softmax; any
    answer, including one the model did not give (a "forced" answer, Fig. 12).

    Examples:
        >>> Answer(2)(torch.tensor([[0.5, 1.0, 3.0]]))
        tensor([3.])
    """

    index: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise TargetError(f"Answer needs a non-negative integer index, got {self.index!r}")

    @property
    def class_id(self) -> int:
        """The answer index (reported in results' ``classes``)."""
        return self.index

    def __call__(self, output: Any) -> Tensor:
        """``(B,)`` scores of the answer."""
        logits = as_logits(output)
        if self.index >= logits.shape[1]:
            raise TargetError(
                f"answer {self.index} is out of range: the model has {logits.shape[1]} answers"
            )
        return logits[:, self.index]
