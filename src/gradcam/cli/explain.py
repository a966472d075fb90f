"""``gradcam explain FILE...``: one picture per method and explained class, a ``summary.json``
(and ``maps.npz`` with ``--save-maps``) per image under ``--out``; videos, volumes and signals
go to :func:`gradcam.explain_media.explain_media`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradcam.cli.common import (
    OPTION_HELP,
    add_dataset_options,
    add_max_pixels,
    add_methods,
    add_model_options,
    add_runner_options,
    markdown_table,
    max_pixels,
    model_name,
    open_data,
    output_dirs,
    runner_options,
)
from gradcam.cli.dissect import add_explain_arguments, check_names, read_names, write_text
from gradcam.errors import GradCAMError, ImageLoadError, MediaLoadError
from gradcam.util import warnings_as_messages

__all__ = ["add_parser", "explain_command"]


def add_parser(commands: Any) -> None:
    """Add ``gradcam explain`` to the subparsers ``commands``."""
    from gradcam.explain import MAX_CLASSES

    explain = commands.add_parser(
        "explain",
        help="explain the predictions of a model on photos, videos, volumes and signals",
        description="Write Grad-CAM overlays, a summary.json and optionally maps.npz per image; "
        "for a video (.mp4, .avi, .webm, .mov, .mkv, animated .gif) an animated overlay (GIF and "
        "MP4), key frames and the maps per frame; for a volume (.nii, .nii.gz, 3-D .npy) the map "
        "as NIfTI on the input's grid and the slices through its peak; for a signal (.csv, 1-D "
        "or 2-D .npy) the signal coloured by its map. "
        "With --data, explain a whole dataset on the evaluate runner instead: rows to Parquet "
        "and maps to .npz shards in --out, in batches, with --resume, --workers and --ray.",
    )
    explain.add_argument(
        "images",
        nargs="*",
        metavar="FILE",
        help="photos, videos, volumes or signals to explain (the kind follows the suffix)",
    )
    add_model_options(explain, layer_help="dotted layer name (default: last conv feature maps)")
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
    add_methods(explain, "method to run (repeatable; default: gradcam)")
    _add_method_options(explain)
    explain.add_argument("--out", default="gradcam_out", metavar="DIR", help="output folder")
    explain.add_argument("--save-maps", action="store_true", help="also write maps.npz per image")
    add_explain_arguments(explain)
    _add_task_options(explain)
    _add_media_options(explain)
    add_max_pixels(explain)
    add_dataset_options(explain)
    add_runner_options(explain)
    explain.set_defaults(handler=explain_command)


def _add_method_options(explain: argparse.ArgumentParser) -> None:
    """``--counterfactual``, ``--figure`` and the methods' options (``--option``, ``--window``,
    ``--stride``)."""
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
        help=OPTION_HELP,
    )  # fmt: skip
    explain.add_argument(
        "--window", type=int, help="occlusion window size in input pixels (as --option window=N)"
    )
    explain.add_argument(
        "--stride", type=int, help="occlusion stride in input pixels (as --option stride=N)"
    )


def _add_task_options(explain: argparse.ArgumentParser) -> None:
    """``--task`` and ``--min-score``: detectors and segmenters (:mod:`gradcam.task_explain`)."""
    explain.add_argument(
        "--task",
        choices=("classification", "detection", "segmentation"),
        default=None,
        help="what the model does: detection and segmentation take a torchvision or Hugging "
        "Face detector or segmenter (--model fasterrcnn_resnet50_fpn, deeplabv3_resnet50, "
        "hf:DIR, ...) and write a map per detection (with its box) or per class region "
        "(default: an hf: model's own task, else classification)",
    )
    explain.add_argument(
        "--min-score",
        type=float,
        default=0.5,
        metavar="S",
        help="--task detection: explain detections scoring at least S (default: %(default)s)",
    )


def _add_media_options(explain: argparse.ArgumentParser) -> None:
    """``--size`` and ``--volume-index``: videos, volumes and signals
    (:mod:`gradcam.explain_media`)."""
    explain.add_argument(
        "--size",
        type=_size,
        metavar="N[,N,N]",
        help="videos, volumes, signals: the model's input grid, T,H,W for a clip (frames and "
        "crop), D,H,W for a volume, L for a signal (default: a torchvision video model's own "
        "clip and crop, 16,112,112 for other video models, the file's size for volumes and "
        "signals)",
    )
    explain.add_argument(
        "--volume-index",
        type=int,
        metavar="I",
        help="which volume of a 4-D volume file to explain (counted from 0)",
    )


def _size(text: str) -> tuple[int, ...]:
    """``--size``: one to three positive integers separated by commas."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers separated by commas: {text!r}") from None
    if not 1 <= len(values) <= 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"one to three positive numbers, got {text!r}")
    return values


def explain_command(args: argparse.Namespace) -> int:
    """``gradcam explain``: explain each file with :func:`gradcam.explain.explain_image` (photos)
    or :func:`gradcam.explain_media.explain_media` (videos, volumes, signals) and save it; a bad
    file is reported and skipped (exit code 1)."""
    from tqdm import tqdm

    from gradcam.explain import check_classes
    from gradcam.explain_media import check_media, file_kind
    from gradcam.outputs import output_folder
    from gradcam.task_explain import infer_task
    from gradcam.vl.hf import is_image_text

    args.model = model_name(args)
    prompts = args.data is None and is_image_text(args.model)  # CLIP-like: --class are prompts
    args.task = "classification" if prompts else infer_task(args.model, args.task)
    if args.data is not None:
        return _explain_data(args)
    if not args.images:
        raise GradCAMError("give IMAGE files to explain, or a dataset with --data PATH")
    output_folder(args.out, create=False)  # before any work: a file, under a file, read-only
    kinds = [file_kind(path) for path in args.images]
    media = [path for path, kind in zip(args.images, kinds, strict=True) if kind is not None]
    if media:
        _refuse(
            [
                ("--task", args.task != "classification"),
                ("--figure", args.figure),
                ("--text", args.text),
            ],
            f"apply to photos, not to {media[0]}",
        )
    if args.task != "classification":
        return _explain_task(args)
    if args.top_k < 1:
        raise GradCAMError(f"--top-k must be at least 1, got {args.top_k}")
    pixels = max_pixels(args)
    specs, options = _methods(args, figure=args.figure)
    names = [spec.name for spec in specs]
    neuron_names = read_names(args, specs)
    loaded = _load(args, prompts)
    classes = [loaded.class_index(c) for c in args.classes] if args.classes else None
    check_classes(loaded, classes, args.top_k)  # before any image: a wrong count fails fast
    for path, kind in zip(args.images, kinds, strict=True):
        check_media(loaded, kind or "image", Path(path).name, names)
    if neuron_names is not None:
        check_names(neuron_names, loaded, args)
    out = Path(args.out)
    failures = 0
    pairs = list(zip(args.images, output_dirs(args.images, out), strict=True))
    progress = tqdm(pairs, desc="explaining", unit="image", disable=len(pairs) < 2, file=sys.stderr)
    for (path, folder), kind in zip(progress, kinds, strict=True):
        job = _Job(args, loaded, specs, options, classes, neuron_names, pixels)
        try:
            summary = job.media(path, folder) if kind is not None else job.photo(path, folder)
        except (ImageLoadError, MediaLoadError) as exc:
            failures += 1
            tqdm.write(f"gradcam: error: {exc}", file=sys.stderr)
            continue
        explained = dict.fromkeys(m["name"] or str(m["class"]) for m in summary["maps"])
        tqdm.write(f"{path}: {', '.join(explained)} -> {folder}", file=sys.stdout)
    done = len(pairs) - failures
    what = "files" if media else "images"
    print(f"explained {done} of {len(pairs)} {what}; results in {out}", file=sys.stderr)
    return 1 if failures else 0


def _refuse(flags: list[tuple[str, Any]], why: str) -> None:
    """One line naming every flag given (a true value) that does not apply, and ``why``."""
    unused = [flag for flag, given in flags if given]
    if unused:
        raise GradCAMError(f"{', '.join(unused)} {why}")


def _methods(args: argparse.Namespace, *, figure: bool = False) -> tuple[list[Any], Any]:
    """The ``--method`` entries, each looked up once (with ``--counterfactual`` and, for
    ``--figure``, Grad-CAM and the figure's methods), and their typed ``--option`` values."""
    from gradcam.explain import FIGURE_METHODS
    from gradcam.methods.registry import (
        DEFAULT_METHOD,
        GRAD_CAM,
        flag_options,
        parse_options,
        resolve_methods,
    )

    names = list(args.methods or [DEFAULT_METHOD])
    if args.counterfactual:
        names.append("counterfactual")
    if figure:
        names += [GRAD_CAM, *FIGURE_METHODS]  # Grad-CAM first, as without --figure
    specs = resolve_methods(names)  # the one lookup of each method
    flags = {"window": args.window, "stride": args.stride}
    return specs, parse_options(specs, [*args.options, *flag_options(specs, flags)])


def _load(args: argparse.Namespace, prompts: bool) -> Any:
    """The model, with ``--layer`` resolved as it loads; a CLIP-like model's classes are the
    ``--class`` prompts."""
    from gradcam.models import load_model
    from gradcam.vl.hf import load_image_text

    with warnings_as_messages():
        if prompts:
            return load_image_text(args.model, args.classes or [], args.weights, layer=args.layer)
        return load_model(args.model, args.weights, layer=args.layer, input_size=args.size)


@dataclass
class _Job:
    """What every file of one ``gradcam explain`` shares, resolved once."""

    args: argparse.Namespace
    loaded: Any
    specs: list[Any]
    options: Any
    classes: list[int] | None
    neuron_names: Any
    pixels: int | None

    def media(self, path: str, folder: Path) -> dict[str, Any]:
        """A video, volume or signal: :func:`gradcam.explain_media.explain_media`."""
        from gradcam.explain_media import explain_media

        return explain_media(
            self.loaded,
            path,
            folder,
            methods=[spec.name for spec in self.specs],
            classes=self.classes,
            top_k=self.args.top_k,
            options=self.options,
            volume_index=self.args.volume_index,
            source=path,
        )

    def photo(self, path: str, folder: Path) -> dict[str, Any]:
        """A photo: :func:`gradcam.explain.explain_image`, saved, and its textual
        explanation with ``--text``."""
        from gradcam.explain import explain_image, save_explanation
        from gradcam.images import load_image

        image = load_image(path, max_pixels=self.pixels)
        explanation = explain_image(
            self.loaded,
            image,
            classes=self.classes,
            top_k=self.args.top_k,
            methods=self.specs,
            layer=self.loaded.default_layer,
            options=self.options,
        )
        summary = save_explanation(
            explanation,
            image,
            folder,
            source=path,
            model=self.args.model,
            save_maps=self.args.save_maps,
            figure=self.args.figure,
        )
        if self.neuron_names is not None:
            write_text(explanation, self.loaded, image, self.neuron_names, folder)
        return summary


def _explain_task(args: argparse.Namespace) -> int:
    """``explain --task detection|segmentation``: Grad-CAM only, with its own options."""
    from gradcam.task_explain import explain_task

    _refuse(
        [
            ("--method", args.methods),
            ("--counterfactual", args.counterfactual),
            ("--figure", args.figure),
            ("--option", args.options),
            ("--window", args.window is not None),
            ("--stride", args.stride is not None),
            ("--save-maps", args.save_maps),
        ],
        f"apply to classifiers; --task {args.task} runs Grad-CAM only",
    )
    return explain_task(
        args.images,
        output_dirs(args.images, Path(args.out)),
        model=args.model,
        task=args.task,
        weights=args.weights,
        layer=args.layer,
        classes=args.classes,
        top_k=args.top_k,
        min_score=args.min_score,
    )


def _explain_data(args: argparse.Namespace) -> int:
    """``explain --data PATH``: every image of a dataset on the evaluate runner."""
    from gradcam.evaluate.runner import ModelSpec
    from gradcam.explain_data import explain_dataset
    from gradcam.models import load_model
    from gradcam.outputs import output_folder

    if args.images:
        raise GradCAMError("give IMAGE files or --data PATH, not both")
    _refuse(
        [
            ("--figure", args.figure),
            ("--save-maps", args.save_maps),
            ("--text", args.text),
            ("--task", args.task != "classification"),
        ],
        "apply to IMAGE files, not to --data",
    )
    specs, options = _methods(args)
    model = model_name(args)
    with warnings_as_messages():
        loaded = load_model(model, args.weights, layer=args.layer)
    classes = [loaded.class_index(c) for c in args.classes] if args.classes else []
    output_folder(args.out)  # before a synthetic dataset is written there
    dataset = open_data(args, annotated=False)
    if not dataset.samples:
        raise GradCAMError(f"no images to explain in {args.data}")
    result = explain_dataset(
        ModelSpec(model, args.weights, loaded=loaded),
        dataset,
        methods=[spec.name for spec in specs],
        top_k=args.top_k,
        classes=classes,
        layer=args.layer,
        options=options,
        out=args.out,
        progress=True,
        **runner_options(args),
    )
    print(markdown_table(result.summary))
    for row in result.failed:
        print(f"gradcam: error: {row['image']}: {row['error']}", file=sys.stderr)
    print(f"results in {args.out}", file=sys.stderr)
    return 1 if result.failed else 0
