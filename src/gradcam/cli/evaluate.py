"""``gradcam evaluate PROTOCOL --data PATH``: one of the paper's evaluations, its table printed.

Everything protocol-specific comes from the protocol registry
(:mod:`gradcam.evaluate.registry`): the choices of ``PROTOCOL``, one flag per protocol setting
(``--threshold``, ``--tolerance``, ... with the protocol's type and default), which protocols
take ``--method``, ``--option`` and ``--layer``, and which need labelled data. A new
registered protocol appears here without an edit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gradcam.cli.common import (
    OPTION_HELP,
    add_dataset_options,
    add_methods,
    add_model_options,
    add_runner_options,
    markdown_table,
    model_name,
    open_data,
    runner_options,
)
from gradcam.errors import GradCAMError
from gradcam.util import warnings_as_messages

__all__ = ["add_parser", "evaluate_command", "protocol_runs"]

# Settings that have their own generic flags (--method, --option, --layer), not one per setting.
_GENERIC = ("method", "methods", "options", "layer")


def _setting_flags() -> dict[str, list[tuple[Any, Any]]]:
    """``flag -> [(protocol spec, its setting)]`` for every registered protocol's settings."""
    from gradcam.evaluate.registry import flag, protocol_specs

    flags: dict[str, list[tuple[Any, Any]]] = {}
    for spec in protocol_specs():
        for option in spec.options:
            if option.name not in _GENERIC:
                flags.setdefault(flag(spec, option), []).append((spec, option))
    return flags


def _parser_of(option: Any) -> Any:
    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except GradCAMError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _dest(flag: str) -> str:
    return "setting_" + flag.lstrip("-").replace("-", "_")


def add_parser(commands: Any) -> None:
    """Add ``gradcam evaluate`` to the subparsers ``commands``, its choices and setting flags
    read from the protocol registry."""
    from gradcam.evaluate.registry import protocol_specs

    specs = protocol_specs()
    evaluate = commands.add_parser(
        "evaluate",
        help="run one of the paper's evaluation protocols on a dataset",
        description="Run an evaluation protocol and print its table. With --out, rows stream to "
        "Parquet and maps to .npz shards as images are scored (a folder per protocol and "
        "method), and --resume continues an interrupted run. Protocols: "
        + "; ".join(f"{s.name}: {s.title} ({s.citation})" for s in specs)
        + ".",
    )
    evaluate.add_argument(
        "protocol", choices=[s.name for s in specs], metavar="PROTOCOL", help="the protocol: "
        + ", ".join(s.name for s in specs),
    )  # fmt: skip
    add_dataset_options(evaluate, required=True)
    layered = ", ".join(s.name for s in specs if s.takes_layer)
    add_model_options(evaluate, layer_help=f"{layered}: the layer (default: the model's)")
    with_methods = ", ".join(s.name for s in specs if s.method_field)
    add_methods(evaluate, f"{with_methods}: method (repeatable; default: the protocol's)")
    evaluate.add_argument(
        "--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
        help=OPTION_HELP,
    )  # fmt: skip
    evaluate.add_argument("--out", metavar="DIR", help="stream rows and maps to this folder")
    add_runner_options(evaluate)
    for name, uses in _setting_flags().items():
        option = uses[0][1]
        defaults = "; ".join(f"{s.name}: {o.default!r}" for s, o in uses)
        evaluate.add_argument(
            name,
            dest=_dest(name),
            type=_parser_of(option),
            metavar=option.name.upper(),
            help=f"{option.help} (default {defaults})",
        )
    evaluate.set_defaults(handler=evaluate_command)


def protocol_runs(
    name: str,
    *,
    methods: list[str] | None = None,
    option_pairs: list[str] | None = None,
    settings: dict[str, Any] | None = None,
    layer: str | None = None,
) -> list[tuple[str, Any]]:
    """``(run folder name, protocol)`` for each run a ``gradcam evaluate`` asks for.

    A protocol with one ``method`` runs once per method (folder ``NAME-METHOD``); one with
    ``methods`` runs them all at once (folder ``NAME``); without ``methods`` each protocol runs
    its own defaults. ``option_pairs`` are ``--option NAME=VALUE`` texts.

    Raises:
        GradCAMError: a method, option, layer or setting the protocol does not take, or a
            value it refuses.

    Examples:
        >>> [folder for folder, _ in protocol_runs("pointing", methods=["gradcam", "cam"])]
        ['pointing-gradcam', 'pointing-cam']
        >>> protocol_runs("sanity", layer="features")
        Traceback (most recent call last):
        gradcam.errors.GradCAMError: --layer applies to localization, pointing, ablations, seeds
    """
    from gradcam.evaluate.registry import protocol_spec, protocol_specs
    from gradcam.methods.registry import parse_options

    spec = protocol_spec(name)
    given = dict(settings or {})
    pairs = list(option_pairs or [])
    if layer is not None:
        if not spec.takes_layer:
            layered = ", ".join(s.name for s in protocol_specs() if s.takes_layer)
            raise GradCAMError(f"--layer applies to {layered}")
        given["layer"] = layer
    field = spec.method_field
    if field is None:
        if methods:
            raise GradCAMError(f"{name} runs its own variants: --method does not apply")
        if pairs:
            raise GradCAMError(f"{name} runs its own variants: --option does not apply")
        return [(name, spec.create(**given))]
    default = spec.option(field).default
    names = list(methods or ([default] if field == "method" else default))
    options = parse_options(names, pairs)
    if field == "methods":
        return [(name, spec.create(**given, methods=tuple(names), options=options))]
    return [(f"{name}-{m}", spec.create(**given, method=m, options=options[m])) for m in names]


def _settings(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The protocol settings given as flags; a flag of another protocol is refused."""
    settings: dict[str, Any] = {}
    for flag, uses in _setting_flags().items():
        value = getattr(args, _dest(flag), None)
        if value is None:
            continue
        mine = [option for spec, option in uses if spec.name == name]
        if not mine:
            takers = ", ".join(spec.name for spec, _ in uses)
            raise GradCAMError(f"{flag} does not apply to {name} (it applies to {takers})")
        settings[mine[0].name] = value
    return settings


def evaluate_command(args: argparse.Namespace) -> int:
    """``gradcam evaluate``: the dataset from :func:`gradcam.evaluate.datasets.open_dataset`,
    each run of :func:`protocol_runs` through :func:`gradcam.evaluate.runner.run`, and the
    summary printed as a Markdown table (exit code 1 when an image failed)."""
    from gradcam.evaluate.base import check_classes
    from gradcam.evaluate.registry import protocol_spec
    from gradcam.evaluate.runner import ModelSpec, run
    from gradcam.evaluate.store import make_folder
    from gradcam.models import load_model

    spec = protocol_spec(args.protocol)
    model = model_name(args)
    runs = protocol_runs(
        spec.name,
        methods=args.methods,
        option_pairs=args.options,
        settings=_settings(args, spec.name),
        layer=args.layer,
    )
    if args.resume and args.out is None:
        raise GradCAMError("--resume needs --out DIR")
    if args.out is not None:
        make_folder(args.out)  # before a synthetic dataset is written there
    # Protocols that score labels need classes and boxes: the photos that have them.
    dataset = open_data(args, annotated=spec.needs_labels)
    if not dataset.samples:
        raise GradCAMError(f"no images to evaluate in {args.data}")
    with warnings_as_messages():
        loaded = load_model(model, args.weights)
    if spec.needs_labels:
        check_classes(loaded, dataset)
    # One process uses the model it loaded; workers each load their own from the spec, whose
    # name, weights file and hash the manifest records either way.
    model_spec = ModelSpec(model, args.weights, loaded=loaded)
    summary, failed = [], 0
    for folder, protocol in runs:
        result = run(
            protocol,
            model_spec,
            dataset,
            out=None if args.out is None else Path(args.out) / folder,
            **runner_options(args),
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
    print(markdown_table(summary))
    if args.out:
        print(f"results in {args.out}", file=sys.stderr)
    return 1 if failed else 0
