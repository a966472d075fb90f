"""The one rule for the names gradcam gives the files and folders it writes.

Every output name derived from something a user or a model supplied (a photo's file name, a
class name, a caption word, a layer name) goes through :func:`slug`: lowercase ASCII letters,
digits and single hyphens, at most ``max_length`` characters. Such a name is never empty,
never ``.`` or ``..``, holds no separator, so joined to an output folder it stays inside it.
:func:`unique_slugs` makes the names of one batch distinct.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

__all__ = ["slug", "unique_slugs"]

#: Hex digits of the SHA-1 digest that stand in for what a slug dropped.
_DIGEST = 8


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST]


def slug(text: str, *, fallback: str = "file", max_length: int = 40) -> str:
    """A safe, stable file-name part for ``text``.

    Accents are folded to ASCII (``café`` -> ``cafe``), letters lowercased, and every run of
    other characters (spaces, dots, slashes, other scripts) becomes one hyphen, trimmed at
    both ends. When nothing is left (``..``, ``///``, ``猫``), the name is ``fallback``
    followed by 8 hex digits of the SHA-1 of ``text``; when the result is longer than
    ``max_length``, it is cut and ends with those 8 digits instead. So the same text always
    gives the same name, and texts that lose their differences to the folding or the cut
    still get different names (up to a hash collision).

    Args:
        text: any text: a file stem, a class name, a word.
        fallback: the start of the name of a text with nothing ASCII to keep; itself a slug.
        max_length: the longest name returned, at least 16.

    Raises:
        ValueError: if ``fallback`` is not a slug or ``max_length`` is below 16.

    Examples:
        >>> slug("Egyptian cat"), slug("..."), slug("../../etc/passwd")
        ('egyptian-cat', 'file-6eae3a5b', 'etc-passwd')
        >>> slug("Café au lait"), len(slug("x" * 100)), slug("x" * 100)[-9:]
        ('cafe-au-lait', 40, '-50e48369')
    """
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", fallback):
        raise ValueError(f"fallback must be a slug, got {fallback!r}")
    if max_length < 16:
        raise ValueError(f"max_length must be at least 16, got {max_length}")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if not name:
        return f"{fallback[: max_length - _DIGEST - 1]}-{_digest(text)}"
    if len(name) > max_length:
        return f"{name[: max_length - _DIGEST - 1].rstrip('-')}-{_digest(text)}"
    return name


def unique_slugs(
    texts: Iterable[str], *, fallback: str = "file", max_length: int = 40
) -> list[str]:
    """:func:`slug` of each text, with ``-2``, ``-3``, ... appended to repeats, in order.

    Examples:
        >>> unique_slugs(["cat.jpg", "Cat.jpg", "cat-jpg"])
        ['cat-jpg', 'cat-jpg-2', 'cat-jpg-3']
    """
    used: set[str] = set()
    names = []
    for text in texts:
        base = slug(text, fallback=fallback, max_length=max_length)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        names.append(name)
    return names
