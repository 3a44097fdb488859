"""The numbers of the bench's reports, written one way everywhere: a value
that was not measured (NaN) shows as "-"."""

from __future__ import annotations

import statistics
from math import nan as NAN


def median(values: list[float]) -> float:
    """The median of the values measured (NaN: not measured), NaN if none."""
    measured = [v for v in values if v == v]
    return statistics.median(measured) if measured else NAN


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is 0 or not measured."""
    return a / b if b and b == b else NAN


def rate(x: float) -> str:
    return "-" if x != x else f"{x:,.0f}"


def x2(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


def x0(x: float) -> str:
    return "-" if x != x else f"{x:.0f}"


def pct(x: float) -> str:
    return "-" if x != x else f"{x:.0%}"
