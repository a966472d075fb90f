"""``gradcam methods``: the explanation methods of the registry, their costs and options."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "methods_command"]


def add_parser(commands: Any) -> None:
    """Add ``gradcam methods`` to the subparsers ``commands``."""
    methods = commands.add_parser(
        "methods",
        help="list the explanation methods and their options",
        description="Every method --method takes: its kind, what it costs, and its options.",
    )
    methods.set_defaults(handler=methods_command)


def methods_command(args: argparse.Namespace) -> int:
    """``gradcam methods``: print each registered method, its cost and its options."""
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
