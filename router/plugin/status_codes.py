"""Lists of HTTP statuses as routes.yaml writes them: a code (`422`), a
range (`"400-407"`) or a class (`"4xx"`). `success_statuses` of the http
plugins and `circuit_breaker.ignore_statuses` of every destination."""

from __future__ import annotations

import re
from collections.abc import Sequence

_STATUS_CLASS = re.compile(r"^\s*([1-5])xx\s*$", re.IGNORECASE)
_STATUS_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")

Ranges = tuple[tuple[int, int], ...]


class StatusSpecError(ValueError):
    """Item `index` of a status list is not a status."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


def parse_statuses(spec: Sequence[int | str]) -> Ranges:
    """The list as (lowest, highest) ranges. Raises StatusSpecError."""
    ranges = []
    for i, item in enumerate(spec):
        if isinstance(item, bool):  # YAML's yes/no: never a status
            raise StatusSpecError(i, f"{item!r} is not a status")
        if isinstance(item, int):
            low = high = item
        elif (klass := _STATUS_CLASS.match(item)) is not None:
            low = int(klass.group(1)) * 100
            high = low + 99
        elif (span := _STATUS_RANGE.match(item)) is not None:
            low = int(span.group(1))
            high = int(span.group(2) or low)
        else:
            raise StatusSpecError(
                i, f'{item!r} is not a status: write 200, a range "200-299" or "2xx"'
            )
        if not 100 <= low <= high <= 599:
            raise StatusSpecError(i, f"{item!r}: statuses are 100 to 599, a range written low-high")
        ranges.append((low, high))
    return tuple(ranges)


def matches(ranges: Ranges, status: int) -> bool:
    return any(low <= status <= high for low, high in ranges)
