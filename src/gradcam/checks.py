"""The one home of numeric range checks on what a user passes (an option, a library argument).

Every command and library function that takes a number with a meaningful range refuses a
value outside it with :func:`check_number`, before any work: one line naming the setting, the
range and the value, as a :class:`~gradcam.errors.GradCAMError` (the CLI prints it, exit 2).
NaN and infinity are never in a range, and ``True``/``False`` are not numbers here.

Examples:
    >>> check_number("tolerance", 15.0, 0, unit=" pixels")
    15.0
    >>> check_number("confidence", float("nan"), 0, 1, high_open=True)
    Traceback (most recent call last):
    ...
    gradcam.errors.GradCAMError: confidence must be a number at least 0 and below 1, got nan
    >>> check_number("epsilon", 1000, 1, 255, integer=True, unit=" pixel units")
    Traceback (most recent call last):
    ...
    gradcam.errors.GradCAMError: epsilon must be an integer between 1 and 255 pixel units, \
got 1000
"""

from __future__ import annotations

import math
from typing import TypeVar

from gradcam.errors import GradCAMError

__all__ = ["check_number"]

N = TypeVar("N", int, float)


def _bounds(
    low: float | None, high: float | None, low_open: bool, high_open: bool, unit: str
) -> str:
    lower = None if low is None else f"{'above' if low_open else 'at least'} {low:g}"
    upper = None if high is None else f"{'below' if high_open else 'at most'} {high:g}"
    if lower and upper and not (low_open or high_open):
        return f"between {low:g} and {high:g}{unit}"
    return " and ".join(part for part in (lower, upper) if part) + unit


def check_number(
    name: str,
    value: N,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    unit: str = "",
    what: str | None = None,
) -> N:
    """``value`` when it is a finite number in the range, else a one-line error.

    The range is ``low <= value <= high`` (``<`` where ``low_open``/``high_open``); a bound
    that is ``None`` is no bound.

    Args:
        name: the setting as the user wrote it (``"tolerance"``, ``"--max-steps"``).
        value: the number to check.
        low: the smallest value allowed (``None``: no lower bound).
        high: the largest value allowed (``None``: no upper bound).
        low_open: ``low`` itself is refused.
        high_open: ``high`` itself is refused.
        integer: only an ``int`` is accepted (a whole ``float`` such as ``3.0`` too).
        unit: appended to the range in the message (``" pixels"``).
        what: how the message names the kind of number (default: ``"a number"`` or
            ``"an integer"``).

    Raises:
        GradCAMError: ``"{name} must be {what} {range}, got {value}"``.

    Examples:
        >>> check_number("report_limit", -5, 0, integer=True)
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: report_limit must be an integer at least 0, got -5
        >>> check_number("threshold", 0.5, 0, 1, what="a fraction of the map's maximum")
        0.5
    """
    kind = what or ("an integer" if integer else "a number")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (not integer or float(value).is_integer())
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = _bounds(low, high, low_open, high_open, unit)
        raise GradCAMError(f"{name} must be {' '.join(filter(None, (kind, bounds)))}, got {value}")
    return value
