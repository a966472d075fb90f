"""mkdocs hooks of the documentation site (``mkdocs.yml``: ``hooks:``).

``docs/benchmarks.md`` includes the repository's ``BENCHMARKS.md``, whose pictures are linked
from the repository root (``docs/bench_peers.png``); on the site that page lives in ``docs/``.
"""

from __future__ import annotations

from typing import Any


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Relink the included ``BENCHMARKS.md``'s root-relative paths for its place in ``docs/``."""
    if page.file.src_uri == "benchmarks.md":
        return markdown.replace("](docs/", "](")
    return markdown
