"""``gradcam`` command line: thin commands over plain functions.

``gradcam explain IMAGE...`` writes, for every image, one picture per method and explained
class and a ``summary.json`` (and ``maps.npz`` with ``--save-maps``) under ``--out``.
``gradcam evaluate PROTOCOL --data PATH`` runs one of the paper's evaluations and prints its
table. ``gradcam serve`` starts the web demo (:mod:`gradcam.demo`). A bad file is reported by
name and skipped; the exit code is then 1. User errors never print a traceback.

``gradcam caption IMAGE`` and ``gradcam vqa IMAGE --question Q`` explain the shipped scene
captioner and VQA model word by word and answer by answer (section 8) into ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gradcam.errors import GradCAMError, ImageLoadError
from gradcam.util import warnings_as_messages

__all__ = ["main"]


PROTOCOLS = ("localization", "pointing", "faithfulness", "sanity", "ablations")

# Commands that live beside their feature: each module has `add_parser(commands)`, which adds
# its subparsers and sets `handler=<function(args) -> int>` on them. Imported when the parser is
# built, so they import their heavy dependencies inside the handler.
COMMAND_MODULES: tuple[str, ...] = (
    "gradcam.diagnose.cli",
    "gradcam.dissect.cli",
    "gradcam.study.cli",
)


def _method_names() -> list[str]:
    from gradcam.methods import methods

    return methods()


_OPTION_HELP = (
    "a method option NAME=VALUE, typed by the method (repeatable; applies to every chosen "
    "method that takes it): see `gradcam methods`"
)


def _build_parser() -> argparse.ArgumentParser:
    from gradcam.explain import MAX_CLASSES

    parser = argparse.ArgumentParser(
        prog="gradcam", description="Visual explanations for PyTorch vision models (Grad-CAM)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    explain = commands.add_parser(
        "explain",
        help="explain the predictions of a model on photos",
        description="Write Grad-CAM overlays, a summary.json and optionally maps.npz per image.",
    )
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files to explain")
    explain.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="model name, timm:NAME or hf:DIR (default: %(default)s)",
    )
    explain.add_argument("--weights", metavar="FILE", help="local state-dict file for the model")
    explain.add_argument("--layer", help="dotted layer name (default: last conv feature maps)")
    explain.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="C",
        help="class index or name to explain (repeatable; default: the top-1 class)",
    )
    explain.add_argument(
        "--top-k",
        type=int,
        default=1,
        metavar="K",
        help="explain the K best classes (default: 1; at most the model's classes and "
        f"{MAX_CLASSES}; --class overrides)",
    )
    explain.add_argument(
        "--method",
        dest="methods",
        action="append",
        metavar="NAME",
        help="method to run (repeatable; default: gradcam): " + ", ".join(_method_names()),
    )
    explain.add_argument(
        "--counterfactual", action="store_true", help="also write counterfactual maps (sec. 3.3)"
    )
    explain.add_argument(
        "--figure",
        action="store_true",
        help="also write a figure per class: photo, Guided Backprop, Grad-CAM, Guided Grad-CAM",
    )
    explain.add_argument(
        "--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
        help=_OPTION_HELP,
    )  # fmt: skip
    explain.add_argument(
        "--window", type=int, help="occlusion window size in input pixels (as --option window=N)"
    )
    explain.add_argument(
        "--stride", type=int, help="occlusion stride in input pixels (as --option stride=N)"
    )
    explain.add_argument("--out", default="gradcam_out", metavar="DIR", help="output folder")
    explain.add_argument("--save-maps", action="store_true", help="also write maps.npz per image")
    importlib.import_module("gradcam.dissect.cli").add_explain_arguments(explain)
    # Detection and segmentation: gradcam/task_explain.py (its own options below).
    explain.add_argument(
        "--task",
        choices=("classification", "detection", "segmentation"),
        default="classification",
        help="what the model does: detection and segmentation take a torchvision detector or "
        "segmenter (--model fasterrcnn_resnet50_fpn, deeplabv3_resnet50, ...) and write a map "
        "per detection (with its box) or per class region (default: %(default)s)",
    )
    explain.add_argument(
        "--min-score",
        type=float,
        default=0.5,
        metavar="S",
        help="--task detection: explain detections scoring at least S (default: %(default)s)",
    )
    _add_max_pixels(explain)
    evaluate = commands.add_parser(
        "evaluate",
        help="run one of the paper's evaluation protocols on a dataset",
        description="Run an evaluation protocol and print its table. With --out, rows stream to "
        "Parquet and maps to .npz shards as images are scored (a folder per protocol and "
        "method), and --resume continues an interrupted run.",
    )
    evaluate.add_argument("protocol", choices=PROTOCOLS, help="the protocol")
    evaluate.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="'synthetic' (generated shapes with exact boxes and masks, for the shipped 'shapes' "
        "model), 'photos' (the real photos shipped with scikit-image and matplotlib), an image "
        "folder, a VOC root, an ImageNet-style folder (with --labels) or COCO images (with "
        "--annotations)",
    )
    evaluate.add_argument(
        "--format", choices=("auto", "folder", "imagenet", "voc", "coco"), default="auto"
    )
    evaluate.add_argument("--labels", metavar="FILE", help="ImageNet-style labels file")
    evaluate.add_argument("--boxes", metavar="DIR", help="ImageNet-style folder of VOC XML boxes")
    evaluate.add_argument("--annotations", metavar="FILE", help="COCO annotation JSON")
    evaluate.add_argument("--split", default="val", help="VOC split (default: val)")
    evaluate.add_argument(
        "--synthetic-images",
        type=int,
        default=500,
        metavar="N",
        help="--data synthetic: images to generate (default: %(default)s)",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="--data synthetic: generator seed")
    evaluate.add_argument(
        "--model",
        help="model name, timm:NAME or hf:DIR (default: 'shapes' for --data synthetic, "
        "else efficientnet_lite0)",
    )
    evaluate.add_argument("--weights", metavar="FILE", help="local state-dict file")
    evaluate.add_argument(
        "--layer", help="localization, pointing, ablations: the layer (default: the model's)"
    )
    evaluate.add_argument(
        "--method",
        dest="methods",
        action="append",
        metavar="NAME",
        help="method (repeatable): " + ", ".join(_method_names()),
    )
    evaluate.add_argument(
        "--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
        help=_OPTION_HELP,
    )  # fmt: skip
    evaluate.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images")
    evaluate.add_argument("--out", metavar="DIR", help="stream rows and maps to this folder")
    evaluate.add_argument(
        "--resume", action="store_true", help="continue the run in --out, skipping done images"
    )
    evaluate.add_argument(
        "--batch-size", type=int, default=8, metavar="B", help="images per batch (default: 8)"
    )
    evaluate.add_argument(
        "--workers", type=int, default=1, metavar="N", help="local processes (or Ray actors)"
    )
    evaluate.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="run on Ray Data: a local Ray, or the cluster at ADDRESS (pip install 'gradcam[ray]')",
    )
    evaluate.add_argument(
        "--ray-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="--ray ADDRESS: give up when the cluster does not answer in time (default: 30)",
    )
    evaluate.add_argument(
        "--threshold",
        type=float,
        default=0.15,
        help="localization, ablations: binarize maps at this fraction of their max (0.15)",
    )
    evaluate.add_argument("--tolerance", type=float, default=15.0, help="pointing tolerance (px)")
    evaluate.add_argument(
        "--recall-threshold", type=float, help="pointing: the recall variant with this threshold"
    )
    evaluate.add_argument("--window", type=int, default=35, help="faithfulness occlusion window")
    evaluate.add_argument("--stride", type=int, default=8, help="faithfulness occlusion stride")
    evaluate.add_argument("--points", type=int, default=5, help="sanity: randomization steps")
    serve = commands.add_parser(
        "serve",
        help="start the web demo: upload a photo, see why the model said what it said",
        description="Serve the Grad-CAM web demo (Gradio) on this machine; works offline. "
        "Needs the demo extra: pip install 'gradcam[demo]'.",
    )
    serve.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="model name, timm:NAME or hf:DIR (default: %(default)s)",
    )
    serve.add_argument("--weights", metavar="FILE", help="local state-dict file for the model")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only; 0.0.0.0 for all)",
    )
    serve.add_argument("--port", type=int, default=7860, help="TCP port (default: %(default)s)")
    serve.add_argument(
        "--max-file-size",
        type=float,
        default=20.0,
        metavar="MB",
        help="largest upload accepted, in MiB (default: %(default)s)",
    )
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(commands)
    commands.add_parser(
        "methods",
        help="list the explanation methods and their options",
        description="Every method --method takes: its kind, what it costs, and its options.",
    )
    _add_vl_parsers(commands)
    return parser


def _methods() -> int:
    from gradcam.methods import method_specs

    for spec in method_specs():
        needs = spec.needs
        cost = [f"forward passes: {needs.forwards}" if needs.forwards else "one forward pass"]
        if needs.layer_gradients:
            cost.append("a backward pass to the layer")
        cost += [f"a {rule} backward pass to the input" for rule in needs.input_rules]
        print(f"{spec.name}: {spec.title} ({spec.kind}; {spec.citation})")
        print(f"  cost: {', '.join(cost)}")
        for opt in spec.options:
            print(f"  --option {opt.name}=... (default {opt.default!r}) {opt.help}".rstrip())
    return 0


def _add_max_pixels(command: argparse.ArgumentParser) -> None:
    from gradcam.images import MAX_PIXELS

    command.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help="decode larger images at reduced size (default: %(default)s; 0: every pixel)",
    )


def _max_pixels(args: argparse.Namespace) -> int | None:
    if args.max_pixels < 0:
        raise GradCAMError(f"--max-pixels must be 0 (no limit) or more, got {args.max_pixels}")
    return args.max_pixels or None


def _add_vl_parsers(commands: Any) -> None:
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
        command.add_argument(
            "--method",
            dest="methods",
            action="append",
            metavar="NAME",
            help="method to run (repeatable; default: gradcam): " + ", ".join(_method_names()),
        )
        command.add_argument("--weights", metavar="FILE", help="weights file (default: shipped)")
        command.add_argument("--out", default="gradcam_out", metavar="DIR", help="output folder")
        _add_max_pixels(command)


def _output_dirs(images: Sequence[str], out: Path) -> list[Path]:
    """One folder per image, named by the slug of its file's stem (inside ``out`` whatever the
    name: ``...jpg`` has the stem ``..``); repeated names get a numeric suffix."""
    from gradcam.paths import unique_slugs

    return [out / n for n in unique_slugs((Path(i).stem for i in images), fallback="image")]


def _explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gradcam.explain import FIGURE_METHODS, check_classes, explain_image, save_explanation
    from gradcam.images import load_image
    from gradcam.layers import resolve_layer
    from gradcam.methods.registry import parse_options
    from gradcam.models import load_model

    if args.task != "classification":
        from gradcam.task_explain import explain_task

        return explain_task(args, _output_dirs(args.images, Path(args.out)))
    if args.top_k < 1:
        raise GradCAMError(f"--top-k must be at least 1, got {args.top_k}")
    max_pixels = _max_pixels(args)
    names = list(args.methods or ["gradcam"])
    if args.counterfactual:
        names.append("counterfactual")
    if args.figure:
        names += ["gradcam", *FIGURE_METHODS]  # Grad-CAM first, as without --figure
    names = list(dict.fromkeys(names))
    pairs = list(args.options)
    if "occlusion" in names:
        pairs += [f"{k}={v}" for k, v in (("window", args.window), ("stride", args.stride)) if v]
    options = parse_options(names, pairs)
    from gradcam.dissect import cli as text_cli

    neuron_names = text_cli.read_names(args, names)
    with warnings_as_messages():
        loaded = load_model(args.model, args.weights)
    classes = [loaded.class_index(c) for c in args.classes] if args.classes else None
    check_classes(loaded, classes, args.top_k)  # before any image: a wrong count fails fast
    if args.layer is not None:
        resolve_layer(loaded.module, args.layer)
    if neuron_names is not None:
        text_cli.check_names(neuron_names, loaded, args)
    out = Path(args.out)
    failures = 0
    pairs = list(zip(args.images, _output_dirs(args.images, out), strict=True))
    progress = tqdm(pairs, desc="explaining", unit="image", disable=len(pairs) < 2, file=sys.stderr)
    for path, folder in progress:
        try:
            image = load_image(path, max_pixels=max_pixels)
            explanation = explain_image(
                loaded,
                image,
                classes=classes,
                top_k=args.top_k,
                methods=names,
                layer=args.layer,
                options=options,
            )
            summary = save_explanation(
                explanation,
                image,
                folder,
                source=path,
                model=args.model,
                save_maps=args.save_maps,
                figure=args.figure,
            )
        except ImageLoadError as exc:
            failures += 1
            tqdm.write(f"gradcam: error: {exc}", file=sys.stderr)
            continue
        if neuron_names is not None:
            text_cli.write_text(explanation, loaded, image, neuron_names, folder)
        explained = dict.fromkeys(m["name"] or str(m["class"]) for m in summary["maps"])
        tqdm.write(f"{path}: {', '.join(explained)} -> {folder}", file=sys.stdout)
    done = len(pairs) - failures
    print(f"explained {done} of {len(pairs)} images; results in {out}", file=sys.stderr)
    return 1 if failures else 0


def _dataset(args: argparse.Namespace) -> Any:
    from gradcam.evaluate.datasets import open_dataset

    return open_dataset(
        args.data,
        args.format,
        labels=args.labels,
        boxes=args.boxes,
        annotations=args.annotations,
        split=args.split,
        count=args.synthetic_images,
        seed=args.seed,
        workdir=args.out,
        # Localization and pointing need classes and boxes: the photos that have them.
        annotated=args.protocol not in ("faithfulness", "sanity"),
    )


def _protocols(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """``(run folder name, protocol)`` for each run the arguments ask for."""
    from gradcam.evaluate import protocols as p
    from gradcam.methods.registry import parse_options

    names = args.methods or None
    kind = args.protocol
    if kind == "ablations" and args.options:
        raise GradCAMError("ablations runs Grad-CAM's variants: --option does not apply")
    # Without --method, each protocol runs its own default methods.
    defaults = {
        "localization": [p.Localization.method],
        "pointing": [p.Pointing.method],
        "faithfulness": list(p.Faithfulness.methods),
        "sanity": list(p.Sanity.methods),
    }
    names = names or defaults.get(kind)
    options = parse_options(names or [], args.options)
    if args.layer is not None and kind in ("faithfulness", "sanity"):
        raise GradCAMError("--layer applies to localization, pointing and ablations")
    if kind == "localization":
        return [
            (
                f"{kind}-{m}",
                p.Localization(m, args.threshold, layer=args.layer, options=options[m]),
            )
            for m in names or []
        ]
    if kind == "pointing":
        return [
            (
                f"{kind}-{m}",
                p.Pointing(
                    m, args.tolerance, args.recall_threshold, args.layer, options=options[m]
                ),
            )
            for m in names or []
        ]
    if kind == "ablations":
        if args.methods:
            raise GradCAMError("ablations runs Grad-CAM's variants: --method does not apply")
        return [(kind, p.Ablations(threshold=args.threshold, layer=args.layer))]
    chosen: p.Faithfulness | p.Sanity
    if kind == "faithfulness":
        chosen = p.Faithfulness(window=args.window, stride=args.stride, options=options)
    else:
        chosen = p.Sanity(points=args.points, options=options)
    return [(kind, replace(chosen, methods=tuple(names or ())) if args.methods else chosen)]


def _markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    from gradcam.evaluate.protocols import check_classes
    from gradcam.evaluate.runner import ModelSpec, run
    from gradcam.evaluate.store import make_folder
    from gradcam.models import load_model

    if args.model is None:
        args.model = "shapes" if args.data == "synthetic" else "efficientnet_lite0"
    runs = _protocols(args)
    if args.resume and args.out is None:
        raise GradCAMError("--resume needs --out DIR")
    if args.out is not None:
        make_folder(args.out)  # before a synthetic dataset is written there
    dataset = _dataset(args)
    for problem in dataset.problems:
        print(f"gradcam: warning: {problem}", file=sys.stderr)
    if not dataset.samples:
        raise GradCAMError(f"no images to evaluate in {args.data}")
    with warnings_as_messages():
        loaded = load_model(args.model, args.weights)
    if args.protocol in ("localization", "pointing", "ablations"):
        check_classes(loaded, dataset)
    # One process uses the model it loaded; workers each load their own from the spec, whose
    # name, weights file and hash the manifest records either way.
    spec = ModelSpec(args.model, args.weights, loaded=loaded)
    summary, failed = [], 0
    for folder, protocol in runs:
        result = run(
            protocol,
            spec,
            dataset,
            out=None if args.out is None else Path(args.out) / folder,
            resume=args.resume,
            limit=args.limit,
            batch_size=args.batch_size,
            workers=args.workers,
            ray=args.ray,
            ray_timeout=args.ray_timeout,
        )
        for row in result.summary:
            if row.get("rejected") == 100.0:
                print(
                    f"gradcam: warning: --recall-threshold {row['threshold']} is above every "
                    "map's maximum: every map was rejected (see the map_max column of the rows)",
                    file=sys.stderr,
                )
        summary += result.summary
        failed += len(result.failed)
    print(_markdown(summary))
    if args.out:
        print(f"results in {args.out}", file=sys.stderr)
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from gradcam.demo.app import serve
    except ImportError as exc:
        raise GradCAMError(
            f"the web demo needs Gradio ({exc}): pip install 'gradcam[demo]'"
        ) from None
    serve(
        args.model,
        args.weights,
        host=args.host,
        port=args.port,
        max_file_size_mb=args.max_file_size,
    )
    return 0


def _caption_or_vqa(args: argparse.Namespace) -> int:
    from gradcam.images import load_image
    from gradcam.vl import load_captioner, load_vqa
    from gradcam.vl.explain import explain_answer, explain_caption, save_text_explanation

    image = load_image(args.image, max_pixels=_max_pixels(args))
    methods = args.methods or ["gradcam"]
    if args.command == "caption":
        captioner = load_captioner(*([args.weights] if args.weights else []))
        explanation: Any = explain_caption(
            captioner, image, args.caption, words=args.words, methods=methods
        )
        print(f"caption: {explanation.caption}")
    else:
        vqa = load_vqa(*([args.weights] if args.weights else []))
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradcam`` command; returns the exit code."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "explain":
            return _explain(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "methods":
            return _methods()
        if args.command in ("caption", "vqa"):
            return _caption_or_vqa(args)
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args))
    except GradCAMError as exc:
        print(f"gradcam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradcam: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
