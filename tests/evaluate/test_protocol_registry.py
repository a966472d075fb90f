"""The protocol registry: one entry per protocol, read by the CLI, the runner and the docs."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

import gradcam.evaluate
from gradcam.cli import main
from gradcam.cli.evaluate import protocol_runs
from gradcam.errors import GradCAMError
from gradcam.evaluate import (
    Faithfulness,
    Localization,
    Pointing,
    Protocol,
    Sanity,
    create_protocol,
    protocol_names,
    protocol_spec,
    protocol_specs,
    register_protocol,
)
from gradcam.evaluate.base import Progress, Scored, Scorer, finished, setting
from gradcam.evaluate.datasets import Sample
from gradcam.evaluate.registry import _REGISTRY, flag, protocol_table
from gradcam.models import LoadedModel

EVALUATE = Path(gradcam.evaluate.__file__).parent
ROOT = Path(__file__).parents[2]


def _rows_for(name: str) -> list[dict[str, Any]]:
    """One hand-written scored row per protocol, as its scorer would give it."""
    box = {"boxes": [[0, 0, 1, 1]], "loc_top1": True, "loc_top5": True}
    methods = {"spearman": 0.5, "deletion_auc": 0.1, "insertion_auc": 0.9}
    return {
        "localization": [{**box, "classes": [0], "cls_top1": True, "cls_top5": True}],
        "ablations": [
            {"classes": [0], "cls_top1": True, "cls_top5": True}
            | {v: {"loc_top1": True, "loc_top5": False} for v in gradcam.evaluate.ABLATIONS}
        ],
        "pointing": [{"classes": [0], "hits": [True], "map_max": [1.0]}],
        "faithfulness": [{"class": 0} | {m: methods for m in Faithfulness().methods}],
        "sanity": [{"class": 0, "steps": [{"randomized_to": "fc", "layers": 1, "gradcam": 0.2}]}],
        "road": [
            {"class": 0}
            | {
                m: {"morf": -0.2, "lerf": 0.1, "combined": 0.15}
                for m in ("gradcam", "guided-gradcam")
            }
        ],
        "confidence": [
            {"class": 0}
            | {
                m: {
                    "change": -0.1,
                    "drop": 0.1,
                    "increase": 0.0,
                    "complexity": 0.3,
                    "coherency": 0.9,
                    "arcc": 0.5,
                }
                for m in ("gradcam", "guided-gradcam")
            }
        ],
        "seeds": [
            {
                "classes": [-1, 0],
                "names": ["background", "circle"],
                "intersection": [5, 3],
                "seeded": [6, 4],
                "truth": [7, 3],
                "pixels": 16,
            }
        ],
    }[name]


def test_the_paper_protocols_are_registered_in_order() -> None:
    assert protocol_names() == [
        "localization",
        "pointing",
        "faithfulness",
        "sanity",
        "ablations",
        "seeds",
        "road",
        "confidence",
    ]
    assert protocol_spec("localization").cls is Localization


@pytest.mark.parametrize(
    "name",
    [
        "localization",
        "pointing",
        "faithfulness",
        "sanity",
        "ablations",
        "seeds",
        "road",
        "confidence",
    ],
)
def test_the_summary_layout_is_what_summarize_writes(name: str) -> None:
    spec = protocol_spec(name)
    methods = ("gradcam",) if name == "sanity" else ()
    protocol = spec.create(methods=methods) if methods else spec.create()
    rows = [{"index": 0, "image": "a.png", "error": None, **row} for row in _rows_for(name)]
    summary = protocol.summarize(rows)
    expected = [c for col in spec.summary for c in (methods if col == "<method>" else (col,))]
    assert summary and all(list(row) == expected for row in summary)


@pytest.mark.parametrize("spec", protocol_specs(), ids=lambda s: s.name)
def test_options_are_the_dataclass_fields_with_their_defaults(spec: Any) -> None:
    made = spec.cls()
    names = [f.name for f in dataclasses.fields(spec.cls)]
    assert [o.name for o in spec.options] == names
    for option in spec.options:
        assert option.default == getattr(made, option.name)
        assert option.help, f"{spec.name}.{option.name} has no help"


def test_needs_and_layer_come_from_the_class() -> None:
    assert protocol_spec("pointing").needs == ("labels", "boxes or masks")
    assert protocol_spec("faithfulness").needs == () and not protocol_spec("sanity").needs_labels
    layered = [s.name for s in protocol_specs() if s.takes_layer]
    assert layered == ["localization", "pointing", "ablations", "seeds"]
    assert [s.method_field for s in protocol_specs()] == [
        "method", "method", "methods", "methods", None, "method", "methods", "methods",
    ]  # fmt: skip
    assert flag(protocol_spec("sanity"), protocol_spec("sanity").option("seed")) == (
        "--randomization-seed"
    )


def test_protocol_is_a_real_dataclass_and_settings_are_plain() -> None:
    assert dataclasses.is_dataclass(Protocol)
    assert Pointing(tolerance=3.0).settings() == {
        "protocol": "pointing",
        "method": "gradcam",
        "tolerance": 3.0,
        "recall_threshold": None,
        "layer": None,
        "options": {},
    }


def test_unknown_names_and_bad_values_are_refused_in_one_line() -> None:
    with pytest.raises(GradCAMError, match="unknown protocol 'deletion'; choose from local"):
        protocol_spec("deletion")
    with pytest.raises(GradCAMError, match="protocol 'sanity' has no setting 'window'"):
        create_protocol("sanity", window=3)
    with pytest.raises(GradCAMError, match="threshold must be a fraction"):
        create_protocol("localization", threshold=2.0)


def test_runs_follow_the_method_field() -> None:
    runs = protocol_runs("localization", methods=["gradcam", "cam"], settings={"threshold": 0.3})
    assert [(f, p.method, p.threshold) for f, p in runs] == [
        ("localization-gradcam", "gradcam", 0.3),
        ("localization-cam", "cam", 0.3),
    ]
    [(folder, sanity)] = protocol_runs("sanity", option_pairs=["relu=false"], methods=["gradcam"])
    assert folder == "sanity" and isinstance(sanity, Sanity)
    assert sanity.methods == ("gradcam",) and sanity.options == {"gradcam": {"relu": False}}
    [(_, faithful)] = protocol_runs("faithfulness")
    # The class's defaults (options: an empty entry per method, as earlier manifests hold).
    assert dataclasses.replace(faithful, options={}) == Faithfulness()
    with pytest.raises(GradCAMError, match="ablations runs its own variants: --method"):
        protocol_runs("ablations", methods=["cam"])
    with pytest.raises(GradCAMError, match="--layer applies to localization, pointing, abl"):
        protocol_runs("faithfulness", layer="features")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sanity", "--tolerance", "3"], "--tolerance does not apply to sanity (it applies to"),
        (["ablations", "--option", "relu=false"], "--option does not apply"),
        (["sanity", "--layer", "features"], "--layer applies to localization"),
    ],
)
def test_the_command_refuses_flags_of_other_protocols(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["evaluate", *args, "--data", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class Brightness(Protocol):
    """A toy protocol: the mean brightness of each image (no model needed)."""

    name: ClassVar[str] = "brightness"
    scale: float = dataclasses.field(default=1.0, metadata=setting("multiplies the brightness"))

    def scorer(self, loaded: LoadedModel, progress: Progress | None = None) -> Scorer:
        def score(samples: Sequence[Sample], images: Sequence[Image.Image]) -> list[Scored]:
            means = [float(np.asarray(i.convert("L")).mean()) for i in images]
            return [({"mean": self.scale * mean}, {}) for mean in means]

        return score

    def summarize(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        done = finished(rows)
        return [{"images": len(done), "mean": sum(r["mean"] for r in done) / len(done)}]


def test_a_new_protocol_is_one_class_and_one_registration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for k, value in enumerate((10, 30)):
        Image.new("L", (8, 8), value).convert("RGB").save(tmp_path / f"{k}.png")
    register_protocol(title="brightness", citation="a test", summary=("images", "mean"))(Brightness)
    try:
        code = main(["evaluate", "brightness", "--data", str(tmp_path), "--scale", "2",
                     "--model", "shapes"])  # fmt: skip
        out = capsys.readouterr().out
        assert code == 0
        assert "| images | mean |" in out and "| 2 | 40.0 |" in out
        with pytest.raises(SystemExit):
            main(["evaluate", "--help"])
        assert "brightness" in capsys.readouterr().out
    finally:
        _REGISTRY.pop("brightness")
    assert "brightness" not in protocol_names()


def _top_level_imports(path: Path) -> set[str]:
    """The ``gradcam.evaluate`` modules a module imports when it is imported (not inside
    functions, which run later)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[2] for n in names if n.startswith("gradcam.evaluate.")}
    return found


def test_the_evaluate_modules_import_without_a_cycle() -> None:
    graph = {p.stem: _top_level_imports(p) for p in EVALUATE.glob("*.py") if p.stem != "__init__"}
    order: list[str] = []
    visiting: list[str] = []

    def visit(module: str) -> None:
        if module in order:
            return
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        visiting.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        visiting.pop()
        order.append(module)

    for module in sorted(graph):
        visit(module)
    assert {"base", "registry", "protocols", "runner"} <= set(order)
    assert "runner" not in graph["protocols"] and "protocols" not in graph["runner"]


@pytest.mark.parametrize("module", ["base", "registry", "protocols", "runner", "inprocess"])
def test_each_evaluate_module_imports_alone(module: str) -> None:
    code = f"import gradcam.evaluate.{module} as m; print(m.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_docs_table_is_the_registry() -> None:
    assert protocol_table() in (ROOT / "docs" / "evaluate.md").read_text()
