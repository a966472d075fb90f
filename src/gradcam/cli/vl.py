"""``gradcam caption IMAGE`` and ``gradcam vqa IMAGE --question Q`` (section 8,
:mod:`gradcam.vl`): the shipped scene captioner and VQA model, or a Hugging Face one
(``--model hf:DIR``, :mod:`gradcam.vl.hf`), explained word by word and answer by answer into
``--out``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gradcam.cli.common import add_max_pixels, add_methods, max_pixels

__all__ = ["add_parser", "caption_or_vqa_command"]


def add_parser(commands: Any) -> None:
    """``gradcam caption`` and ``gradcam vqa`` (section 8, :mod:`gradcam.vl`)."""
    caption = commands.add_parser(
        "caption",
        help="caption a scene and show where each word looks (section 8.1)",
        description="Explain a caption of IMAGE by the shipped scene captioner: one overlay per "
        "word and one for the whole caption, a figure and a summary.json in --out.",
    )
    vqa = commands.add_parser(
        "vqa",
        help="answer a question about a scene and show where the answer looks (section 8.2)",
        description="Answer --question about IMAGE with the shipped scene VQA model and explain "
        "its answer and any forced --answer: overlays, a figure and a summary.json in --out.",
    )
    for command in (caption, vqa):
        command.add_argument("image", metavar="IMAGE", help="image file")
    caption.add_argument("--caption", help="caption to explain (default: the model's own)")
    caption.add_argument(
        "--word",
        dest="words",
        action="append",
        metavar="W",
        help="explain only this word (repeatable; default: every word)",
    )
    vqa.add_argument(
        "--question", required=True, metavar="Q", help='e.g. "what color is the square?"'
    )
    vqa.add_argument(
        "--answer",
        dest="answers",
        action="append",
        default=[],
        metavar="A",
        help="also explain this answer, even if the model did not give it (repeatable)",
    )
    for command in (caption, vqa):
        add_methods(command, "method to run (repeatable; default: gradcam)")
        command.add_argument(
            "--model",
            metavar="hf:DIR",
            help="a Hugging Face model (hf:DIR or hf:ORG/NAME): captioning BLIP, GIT or "
            "VisionEncoderDecoder; VQA BLIP or ViLT (default: the shipped scene model)",
        )
        command.add_argument(
            "--weights",
            metavar="FILE",
            help="weights file (default: shipped); with --model only 'random'",
        )
        command.add_argument("--out", default="gradcam_out", metavar="DIR", help="output folder")
        add_max_pixels(command)
        command.set_defaults(handler=caption_or_vqa_command)


def caption_or_vqa_command(args: argparse.Namespace) -> int:
    """``gradcam caption`` / ``gradcam vqa``: :func:`gradcam.vl.explain.explain_caption` or
    :func:`~gradcam.vl.explain.explain_answer`, saved with
    :func:`~gradcam.vl.explain.save_text_explanation`."""
    from gradcam.errors import GradCAMError
    from gradcam.images import load_image
    from gradcam.methods.registry import DEFAULT_METHOD
    from gradcam.models import HF_PREFIX
    from gradcam.outputs import output_folder
    from gradcam.util import warnings_as_messages
    from gradcam.vl import load_captioner, load_vqa
    from gradcam.vl.explain import explain_answer, explain_caption, save_text_explanation
    from gradcam.vl.hf import load_hf_answerer, load_hf_captioner

    if args.model is not None and not args.model.startswith(HF_PREFIX):
        raise GradCAMError(
            f"gradcam {args.command} takes a Hugging Face model (--model hf:DIR or "
            f"hf:ORG/NAME), or none for the shipped scene model; got {args.model!r}"
        )
    output_folder(args.out, create=False)  # before any work: a file, under a file, read-only
    image = load_image(args.image, max_pixels=max_pixels(args))
    methods = args.methods or [DEFAULT_METHOD]
    weights = [args.weights] if args.weights else []
    if args.command == "caption":
        with warnings_as_messages():
            captioner: Any = (
                load_captioner(*weights)
                if args.model is None
                else load_hf_captioner(args.model, *weights)
            )
        explanation: Any = explain_caption(
            captioner, image, args.caption, words=args.words, methods=methods
        )
        print(f"caption: {explanation.caption}")
    else:
        with warnings_as_messages():
            vqa: Any = (
                load_vqa(*weights) if args.model is None else load_hf_answerer(args.model, *weights)
            )
        explanation = explain_answer(
            vqa, image, args.question, answers=args.answers, methods=methods
        )
        print(f"question: {explanation.question}\nanswer: {explanation.answer}")
    summary = save_text_explanation(explanation, image, args.out, source=args.image)
    for item in summary["maps"]:
        if item["method"] == methods[0]:
            forced = " (forced)" if item["forced"] else ""
            print(f"  {item['label']}{forced}: score {item['score']:.3f}, peak {item['peak']}")
    print(f"results in {args.out}", file=sys.stderr)
    return 0
