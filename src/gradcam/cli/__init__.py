"""``gradcam`` command line: thin commands over plain functions, one module per command.

``gradcam explain IMAGE...`` (:mod:`gradcam.cli.explain`) writes, for every image, one
picture per method and explained class and a ``summary.json`` under ``--out``.
``gradcam evaluate PROTOCOL --data PATH`` (:mod:`gradcam.cli.evaluate`) runs one of the
paper's evaluations and prints its table. ``gradcam serve`` starts the web demo;
``gradcam methods`` lists the methods; ``gradcam caption`` and ``gradcam vqa`` explain the
section 8 models. A bad file is reported by name and skipped; the exit code is then 1. User
errors print one line (exit code 2), never a traceback.

Every command is a module of this package with ``add_parser(commands)``, which adds its
subparsers to argparse's ``commands`` and sets ``handler=<function(args) -> int>`` on them;
choices come from the registries (methods, protocols). A handler turns the parsed options into
plain values and makes one call into the library, which never sees an ``argparse.Namespace``.
Modules import their heavy dependencies inside the handler, so ``gradcam --help`` stays light.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from gradcam.cli import diagnose, dissect, evaluate, explain, methods, serve, study, vl
from gradcam.errors import GradCAMError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: The command modules, in the order ``gradcam --help`` lists them.
COMMAND_MODULES = (explain, evaluate, serve, diagnose, dissect, study, methods, vl)


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
    for module in COMMAND_MODULES:
        module.add_parser(commands)
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
