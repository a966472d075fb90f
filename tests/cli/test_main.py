"""gradcam.cli: the command modules, the parser, and what building it costs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gradcam
from gradcam.cli import COMMAND_MODULES, build_parser

SRC = Path(gradcam.__file__).parent

# The optional or heavy modules that `gradcam --help` and `gradcam methods` must not import:
# each is imported by the handler that needs it.
HEAVY = (
    "numba", "pyarrow", "scipy", "matplotlib", "gradio", "fastapi", "ray", "transformers", "timm",
)  # fmt: skip


def test_every_command_module_lives_in_cli_and_adds_its_parser() -> None:
    for module in COMMAND_MODULES:
        assert module.__name__.startswith("gradcam.cli.")
        assert callable(module.add_parser)
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"explain", "evaluate", "diagnose", "dissect", "study", "serve", "methods"} <= set(
        commands
    )


def test_help_and_methods_import_no_heavy_module() -> None:
    script = (
        "import contextlib, io, sys\n"
        "from gradcam.cli import main\n"
        "for argv in (['--help'], ['methods']):\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(io.StringIO()): main(argv)\n"
        "    except SystemExit: pass\n"
        f"print(sorted(set({HEAVY!r}) & set(m.split('.')[0] for m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_feature_packages_import_nothing_from_cli() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.parent.name != "cli"
        and any(n == "gradcam.cli" or n.startswith("gradcam.cli.") for n in _imported(path))
    ]
    assert offenders == []


def test_no_namespace_below_cli() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.parent.name != "cli" and "argparse" in _imported(path)
    ]
    assert offenders == []
