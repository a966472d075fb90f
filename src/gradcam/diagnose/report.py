"""Self-contained HTML reports: every picture embedded as a ``data:`` URI, no request leaves
the file, and it opens from disk in any browser.

The report is written as it is built (:class:`HtmlReport` streams to its file), so a report of
thousands of pictures never holds more than one of them in memory.

Examples:
    >>> from PIL import Image
    >>> with HtmlReport("report.html", "Failures") as report:
    ...     report.heading("Two kinds")
    ...     report.table([{"kind": "right object", "count": 3}])
    ...     report.figure([("photo", Image.new("RGB", (8, 8)))], caption="one failure")
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from PIL import Image

__all__ = ["HtmlReport", "data_uri"]

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 0.9em; }
figure { display: inline-block; margin: 0 0 1.2em; border-top: 1px solid #ddd; }
.panels { display: flex; gap: 6px; align-items: flex-start; }
.panel { text-align: center; font-size: 0.8em; }
.panel img { display: block; max-height: 200px; }
figcaption { font-size: 0.85em; margin-top: 4px; }
"""


def data_uri(image: Image.Image) -> str:
    """A lossless PNG of ``image`` as a ``data:image/png;base64,...`` URI.

    Examples:
        >>> data_uri(Image.new("RGB", (1, 1))).startswith("data:image/png;base64,")
        True
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class HtmlReport:
    """An HTML file being written: headings, paragraphs, tables and rows of pictures.

    Args:
        path: the ``.html`` file to write (its folder is created).
        title: the page title and first heading.
    """

    def __init__(self, path: str | os.PathLike[str], title: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed when closed: never a half report.
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._file: TextIO = self._tmp.open("w", encoding="utf-8")
        self._file.write(
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            # The policy forbids every request: pictures are data: URIs, styles inline.
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n"
        )

    def heading(self, text: str, level: int = 2) -> None:
        """An ``<h2>`` (or ``<h{level}>``) heading."""
        self._file.write(f"<h{level}>{html.escape(text)}</h{level}>\n")

    def paragraph(self, text: str) -> None:
        """A paragraph of plain text."""
        self._file.write(f"<p>{html.escape(text)}</p>\n")

    def table(self, rows: Sequence[dict[str, Any]]) -> None:
        """A table with one column per key of the first row."""
        if not rows:
            self.paragraph("(none)")
            return
        keys = list(rows[0])
        head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(k)))}</td>" for k in keys) + "</tr>"
            for row in rows
        )
        self._file.write(f"<table><tr>{head}</tr>{body}</table>\n")

    def figure(self, panels: Sequence[tuple[str, Image.Image]], caption: str = "") -> None:
        """Pictures side by side, each with its title, and a caption below."""
        cells = "".join(
            f"<div class='panel'><img alt='{html.escape(title)}' src='{data_uri(image)}'>"
            f"{html.escape(title)}</div>"
            for title, image in panels
        )
        self._file.write(
            f"<figure><div class='panels'>{cells}</div>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>\n"
        )

    def close(self) -> None:
        """Finish the page and put it under its name."""
        if self._file.closed:
            return
        self._file.write("</body></html>\n")
        self._file.close()
        os.replace(self._tmp, self.path)

    def __enter__(self) -> HtmlReport:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._file.close()
            self._tmp.unlink(missing_ok=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
