"""mkdocs hooks of the documentation site (``mkdocs.yml``: ``hooks:``).

``docs/benchmarks.md`` includes the repository's ``BENCHMARKS.md``, whose pictures are linked
from the repository root (``docs/bench_peers.png``); on the site that page lives in ``docs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INCLUDE = '--8<-- "BENCHMARKS.md"'


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    """Relink the included ``BENCHMARKS.md``'s root-relative paths for its place in ``docs/``.

    The snippets extension expands the include only while the page is converted, after this
    hook and when mkdocs already checks the links; so the file is included here.
    """
    if page.file.src_uri != "benchmarks.md":
        return markdown
    root = Path(config["config_file_path"]).parent
    markdown = markdown.replace(INCLUDE, (root / "BENCHMARKS.md").read_text(encoding="utf-8"))
    return markdown.replace("](docs/", "](")
