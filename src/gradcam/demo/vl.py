"""The captioning and VQA tabs' callbacks as plain, typed functions: no Gradio in here.

A :class:`VLSession` serves the shipped scene captioner and VQA model of :mod:`gradcam.vl`
(section 8) to every visitor of the page:

- **Captioning** (section 8.1, Fig. 11): the model's caption of an uploaded scene (or one the
  visitor types), explained word by word with :func:`gradcam.vl.explain.explain_caption`: the
  Grad-CAM of word ``t`` is that of its score ``y^c_t`` at step ``t`` of the teacher-forced
  caption (8.1.1), and the whole caption's map that of ``log p(caption | image)``.
- **VQA** (section 8.2, Fig. 12): the model's answer to a question with its most probable
  answers, and the map of any *forced* answer, with
  :func:`gradcam.vl.explain.explain_answer`: forcing another color moves the map to the object
  of that color.

Every word of a caption, and every answer of a question, is explained in one call (per method
one forward pass and a backward pass batched over the targets, for every
:data:`~gradcam.vl.explain.TARGET_CHUNK` of them), and the result is cached per (upload,
caption) and (upload, question): clicking another word or forcing another answer runs no model
pass. Captions and questions longer than :data:`~gradcam.vl.text.MAX_WORDS` words are refused
before any model pass.
Model calls are serialized by one lock (an explanation hooks the shared model for the duration
of a call); decoding, hashing and rendering run outside it, as in
:class:`gradcam.demo.session.DemoSession`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from gradcam.demo.session import Photo, decode_upload, upload_key
from gradcam.errors import ModelLoadError
from gradcam.methods import method_spec
from gradcam.methods.registry import GRAD_CAM
from gradcam.util import LRU
from gradcam.vl.explain import (
    AnswerExplanation,
    CaptionExplanation,
    TextMap,
    explain_answer,
    explain_caption,
)
from gradcam.vl.hf import HFAnswerer, HFCaptioner
from gradcam.vl.models import Captioner, VQAModel, load_captioner, load_vqa
from gradcam.vl.scenes import vl_scene
from gradcam.vl.text import ANSWERS, TextError, caption, encode, questions

__all__ = ["MAX_CHOICES", "VL_PICTURES", "AnswerViews", "CaptionViews", "VLSession", "vl_session"]

#: What the tabs show per word or answer: method name -> panel title.
VL_PICTURES: dict[str, str] = {m: method_spec(m).title for m in (GRAD_CAM, "guided-gradcam")}

#: The most answers a Hugging Face VQA classifier may have for all of them to be explained
#: with every question (each is a map; VQA v2's ViLT has 3,129).
MAX_CHOICES = 32

#: The whole caption's entry among a caption's maps (``TextMap.label``).
WHOLE_CAPTION = "<caption>"


@dataclass(frozen=True)
class CaptionViews:
    """A caption of one upload, with the maps of the whole caption and of every word.

    Attributes:
        photo: the upload.
        explanation: :func:`~gradcam.vl.explain.explain_caption`'s result for every word, with
            the methods of :data:`VL_PICTURES`.
        seconds: time spent computing it (0 when it came from the cache).
        cached: whether it came from the cache.
    """

    photo: Photo
    explanation: CaptionExplanation
    seconds: float
    cached: bool = False

    @property
    def words(self) -> tuple[str, ...]:
        """The caption's words, in order (``words[t]`` is the word at position ``t``; a
        Hugging Face captioner's tokens)."""
        maps = self.explanation.maps
        return tuple(m.label for m in maps if m.method == maps[0].method and m.position is not None)

    def position(self, word: str | int | None) -> int | None:
        """The position of ``word`` in the caption: ``None`` (the whole caption) for ``None``,
        ``""`` or ``"<caption>"``; digits are a position; a word is its first occurrence.

        Raises:
            TextError: a position past the caption's end, or a word that is not in it.
        """
        if word is None or (isinstance(word, str) and word.strip() in ("", WHOLE_CAPTION)):
            return None
        words = self.words
        text = str(word).strip().lower()
        if text.isdigit():
            if int(text) >= len(words):
                raise TextError(
                    f"word position {int(text)} is past the caption's end ({len(words)} words)"
                )
            return int(text)
        if text not in words:
            raise TextError(f"the word {text!r} is not in the caption {self.explanation.caption!r}")
        return words.index(text)

    def map(self, method: str, position: int | None) -> TextMap:
        """The map of ``method`` for the word at ``position`` (``None``: the whole caption)."""
        return next(
            m for m in self.explanation.maps if m.method == method and m.position == position
        )


@dataclass(frozen=True)
class AnswerViews:
    """A question about one upload: the model's answer, and the maps of every answer.

    Attributes:
        photo: the upload.
        explanation: :func:`~gradcam.vl.explain.explain_answer`'s result with every answer
            forced, with the methods of :data:`VL_PICTURES`.
        seconds: time spent computing it (0 when it came from the cache).
        cached: whether it came from the cache.
    """

    photo: Photo
    explanation: AnswerExplanation
    seconds: float
    cached: bool = False

    def map(self, method: str, answer: str) -> TextMap:
        """The map of ``method`` for ``answer`` (the model's own or a forced one).

        Raises:
            TextError: an answer that was not explained (:attr:`VLSession.answer_choices`).
        """
        maps = [m for m in self.explanation.maps if m.method == method]
        labels = {m.label.lower(): m for m in maps}
        found = labels.get(answer.strip().lower())
        if found is None:
            known = ", ".join(m.label for m in maps)
            raise TextError(f"unknown answer {answer!r}; the answers are: {known}")
        return found


def _normalized(question: str) -> str:
    return " ".join(question.replace("?", " ? ").split()).lower()


class VLSession:
    """The shipped captioner and VQA model served to every visitor: the tabs' callbacks.

    Args:
        captioner: the captioning model (default: the shipped one,
            :func:`gradcam.vl.load_captioner`; or a Hugging Face one,
            :func:`gradcam.vl.hf.load_hf_captioner`, whose words are its tokens).
        vqa: the VQA model (default: the shipped one, :func:`gradcam.vl.load_vqa`; or a
            Hugging Face one, :func:`gradcam.vl.hf.load_hf_answerer`: see
            :attr:`answer_choices`).
        cache_size: uploads kept in memory, decoded at full size.
        views_size: captions and questions kept, per upload and text: each holds its maps at
            input resolution for every word or answer, 1 to 2 MB for a scene.
        display_side: longer side of the pictures shown, in pixels (the 96-pixel scenes are
            enlarged, photos shrunk; the models always see the upload through their own
            preprocessing).
        max_bytes: largest file accepted, in bytes.
        folder: where the example scenes are written (default: a new temporary folder).
        examples: how many example scenes to write (held-out scenes 0, 1, ... of seed 1).

    Examples:
        >>> session = VLSession(folder="scenes")
        >>> views = session.caption(session.examples[0])         # the model's own caption
        >>> views.explanation.caption, session.true_caption(views.photo)
        ('a red circle above a white cross', 'a red circle above a purple cross')
        >>> session.caption_pictures(views, "circle")["Grad-CAM"].save("circle.png")
        >>> asked = "what color is the circle?"
        >>> answer = session.answer(session.examples[0], asked)
        >>> answer.explanation.answer, session.true_answer(answer.photo, asked)
        ('red', 'red')
        >>> list(session.answer_pictures(answer, "yellow"))  # Fig. 12: a forced answer
        ['Grad-CAM', 'Guided Grad-CAM']
    """

    def __init__(
        self,
        captioner: Captioner | HFCaptioner | None = None,
        vqa: VQAModel | HFAnswerer | None = None,
        *,
        cache_size: int = 8,
        views_size: int = 32,
        display_side: int = 384,
        max_bytes: int = 20 * 1024 * 1024,
        folder: str | os.PathLike[str] | None = None,
        examples: int = 4,
    ) -> None:
        self.captioner = captioner if captioner is not None else load_captioner()
        self.vqa = vqa if vqa is not None else load_vqa()
        #: The answers explained with every question (the forced answers offered): the
        #: shipped model's, a ViLT model's labels when at most :data:`MAX_CHOICES`, else none
        #: (BLIP writes its answers: only its own is explained).
        self.answer_choices: tuple[str, ...] = (
            ANSWERS
            if isinstance(self.vqa, VQAModel)
            else self.vqa.answers
            if len(self.vqa.answers) <= MAX_CHOICES
            else ()
        )
        self.display_side = display_side
        self.max_bytes = max_bytes
        self.folder = Path(folder or tempfile.mkdtemp(prefix="gradcam-vl-demo-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._model_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._photos: LRU[str, Photo] = LRU(cache_size)
        self._captions: LRU[tuple[str, str], CaptionViews] = LRU(views_size)
        self._answers: LRU[tuple[str, str], AnswerViews] = LRU(views_size)
        #: Example scenes (held-out scenes of :func:`gradcam.vl.vl_scene`, seed 1) as PNG files.
        self.examples: list[Path] = []
        #: For each example scene, its questions (the color of each shape, the shape of each
        #: color), as ``(path, question)`` pairs.
        self.example_questions: list[tuple[Path, str]] = []
        # What the example scenes really show, by file hash: the page compares the model with it.
        self._true_captions: dict[str, str] = {}
        self._true_answers: dict[tuple[str, str], str] = {}
        for index in range(examples):
            scene = vl_scene(index)
            path = self.folder / f"scene_{index}.png"
            scene.image.save(path)
            self.examples.append(path)
            asked = questions(scene)
            # The first object asked about by its shape, the second by its color.
            self.example_questions += [(path, asked[0].text), (path, asked[3].text)]
            key = hashlib.sha256(path.read_bytes()).hexdigest()
            self._true_captions[key] = caption(scene).text
            self._true_answers.update({(key, q.text): q.answer for q in asked})

    def close(self) -> None:
        """Delete the example scenes' folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def true_caption(self, photo: Photo) -> str | None:
        """The caption of what an example scene really shows (``None`` for other uploads)."""
        return self._true_captions.get(photo.key)

    def true_answer(self, photo: Photo, question: str) -> str | None:
        """The right answer of an example question about an example scene, else ``None``."""
        return self._true_answers.get((photo.key, _normalized(question)))

    def open(self, path: str | os.PathLike[str] | None) -> Photo:
        """Decode an uploaded file (as :meth:`gradcam.demo.DemoSession.open`), cached by hash.

        Raises:
            ImageLoadError: no file, too large, not an image, corrupt, or a decompression bomb;
                the message names the upload (not the server's temporary path).
        """
        missing = "no image given: upload a scene or pick an example"
        name, key = upload_key(path, self.max_bytes, missing)
        with self._cache_lock:
            known = self._photos.get(key)
        if known is not None:
            return known
        image = decode_upload(name)
        scale = self.display_side / max(image.size)
        # Scenes are 96 px: enlarged smoothly so the overlays are readable on the page.
        display = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS,
        )
        photo = Photo(key, image, display)
        with self._cache_lock:
            self._photos.put(key, photo)
        return photo

    def caption(self, path: str | os.PathLike[str] | None, text: str | None = None) -> CaptionViews:
        """The caption of an upload and the maps of every word (and of the whole caption).

        Args:
            path: the uploaded file.
            text: the caption to explain; ``None`` or blank explains the model's own (greedy).

        Raises:
            GradCAMError: a bad file (:class:`ImageLoadError`), or a caption with a word outside
                the vocabulary (:class:`~gradcam.vl.text.TextError`).
        """
        started = time.perf_counter()
        photo = self.open(path)
        given = " ".join(text.split()).lower() if text and text.strip() else None
        if given is not None:  # before the lock: unknown words fail fast
            if isinstance(self.captioner, Captioner):
                encode(given, what="caption")
            else:
                self.captioner.caption_tokens(given)
        key = (photo.key, given or "")
        with self._cache_lock:
            known = self._captions.get(key)
        if known is not None:
            return replace(known, seconds=0.0, cached=True)
        with self._model_lock:
            explanation = explain_caption(
                self.captioner, photo.image, given, methods=list(VL_PICTURES)
            )
        views = CaptionViews(photo, explanation, time.perf_counter() - started)
        with self._cache_lock:
            self._captions.put(key, views)
        return views

    def answer(self, path: str | os.PathLike[str] | None, question: str | None) -> AnswerViews:
        """The model's answer to ``question`` about an upload, and the maps of every answer.

        Raises:
            GradCAMError: a bad file (:class:`ImageLoadError`), an empty question or one with a
                word outside the vocabulary (:class:`~gradcam.vl.text.TextError`).
        """
        started = time.perf_counter()
        photo = self.open(path)
        if question is None or not question.strip():
            raise TextError("the question is empty: ask about a color or a shape")
        asked = _normalized(question)
        if isinstance(self.vqa, VQAModel):
            encode(asked, what="question")
        else:
            self.vqa.question_text(asked)
        key = (photo.key, asked)
        with self._cache_lock:
            known = self._answers.get(key)
        if known is not None:
            return replace(known, seconds=0.0, cached=True)
        with self._model_lock:
            # Every answer at once: one batched backward pass, then forcing any is free.
            explanation = explain_answer(
                self.vqa,
                photo.image,
                asked,
                answers=self.answer_choices,
                methods=list(VL_PICTURES),
            )
        views = AnswerViews(photo, explanation, time.perf_counter() - started)
        with self._cache_lock:
            self._answers.put(key, views)
        return views

    def _pictures(self, photo: Photo, maps: dict[str, TextMap]) -> dict[str, Image.Image]:
        from gradcam.viz import gradient_image, overlay

        display = photo.display
        return {
            title: (
                overlay(display, maps[method].map)
                if maps[method].map.dim() == 2
                else gradient_image(maps[method].map, display.size)
            )
            for method, title in VL_PICTURES.items()
        }

    def caption_pictures(
        self, views: CaptionViews, word: str | int | None
    ) -> dict[str, Image.Image]:
        """Panel title -> picture of one word (see :meth:`CaptionViews.position`), at display
        size: Grad-CAM over the upload, and Guided Grad-CAM.

        Raises:
            TextError: a word that is not in the caption.
        """
        position = views.position(word)
        return self._pictures(views.photo, {m: views.map(m, position) for m in VL_PICTURES})

    def answer_pictures(self, views: AnswerViews, answer: str) -> dict[str, Image.Image]:
        """Panel title -> picture of one answer (the model's own or a forced one).

        Raises:
            TextError: an answer that was not explained (:attr:`VLSession.answer_choices`).
        """
        return self._pictures(views.photo, {m: views.map(m, answer) for m in VL_PICTURES})


def vl_session(model: str | None = None, weights: str | None = None, **options: Any) -> VLSession:
    """The session of the Captioning and VQA tabs: the shipped scene models, with ``model``
    (an ``hf:`` captioner or VQA model, :mod:`gradcam.vl.hf`) in its tab instead of the
    shipped one; ``options`` go to :class:`VLSession`.

    Raises:
        ModelLoadError: ``model`` is not a Hugging Face captioner or VQA model, or does not
            load.
    """
    from gradcam.vl.hf import hf_vl_task, load_hf_answerer, load_hf_captioner

    if model is None:
        return VLSession(**options)
    task = hf_vl_task(model)
    if task == "captioning":
        return VLSession(load_hf_captioner(model, weights), **options)
    if task == "vqa":
        return VLSession(vqa=load_hf_answerer(model, weights), **options)
    raise ModelLoadError(
        f"{model} is not a Hugging Face captioner or VQA model: the Captioning and VQA tabs "
        "take BLIP, GIT, VisionEncoderDecoder, BLIP-VQA or ViLT"
    )
