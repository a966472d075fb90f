"""``gradcam`` command line: thin commands over plain functions, one module per command.

``gradcam explain IMAGE...`` (:mod:`gradcam.cli.explain`) writes, for every image, one
picture per method and explained class and a ``summary.json`` under ``--out``.
``gradcam evaluate PROTOCOL --data PATH`` (:mod:`gradcam.cli.evaluate`) runs one of the
paper's evaluations and prints its table. ``gradcam serve`` starts the web demo;
``gradcam methods`` lists the methods; ``gradcam caption`` and ``gradcam vqa`` explain the
section 8 models. A bad file is reported by name and skipped; the exit code is then 1. User
errors print one line (exit code 2), never a traceback.

Every command is a module with ``add_parser(commands)``, which adds its subparsers to
argparse's ``commands`` and sets ``handler=<function(args) -> int>`` on them; choices come
from the registries (methods, protocols). Modules import their heavy dependencies inside
the handler.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Sequence

from gradcam.cli.common import markdown_table
from gradcam.errors import GradCAMError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

# Commands that live beside their feature: each module has `add_parser(commands)`, which adds
# its subparsers and sets `handler=<function(args) -> int>` on them. Imported when the parser is
# built, so they import their heavy dependencies inside the handler.
COMMAND_MODULES: tuple[str, ...] = (
    "gradcam.diagnose.cli",
    "gradcam.dissect.cli",
    "gradcam.study.cli",
)

# This package's own commands, listed before and after the feature commands in `--help`.
_FIRST = ("gradcam.cli.explain", "gradcam.cli.evaluate", "gradcam.cli.serve")
_LAST = ("gradcam.cli.methods", "gradcam.cli.vl")

# Kept for `gradcam.diagnose.cli`, which prints its table as `evaluate` does.
_markdown = markdown_table


def build_parser() -> argparse.ArgumentParser:
    """The ``gradcam`` parser: every command module's subparsers, choices from the registries.

    Examples:
        >>> parser = build_parser()
        >>> parser.parse_args(["evaluate", "pointing", "--data", "synthetic"]).protocol
        'pointing'
    """
    from gradcam.cli.common import method_names
    from gradcam.evaluate.registry import protocol_names

    lists = [("methods", method_names()), ("evaluation protocols", protocol_names())]
    # Wrapped here, not by argparse, which would cut names such as guided-gradcam at hyphens.
    epilog = "\n".join(
        textwrap.fill(f"{title}: {', '.join(names)}.", 79, break_on_hyphens=False)
        for title, names in lists
    )
    parser = argparse.ArgumentParser(
        prog="gradcam",
        description="Visual explanations for PyTorch vision models (Grad-CAM).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (*_FIRST, *COMMAND_MODULES, *_LAST):
        importlib.import_module(module).add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradcam`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except GradCAMError as exc:
        print(f"gradcam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradcam: interrupted", file=sys.stderr)
        return 130
