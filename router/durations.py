"""The one duration parser: routes.yaml (router.config) and the environment
(router.settings) write durations alike, as a number of seconds or with a
unit, 500ms, 10s, 1m, 2h, 1d. Each caller says which units it allows and
words its own error."""

from __future__ import annotations

import re
from collections.abc import Collection

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)?\s*$")


def seconds(text: str, units: Collection[str] = tuple(UNITS)) -> float | None:
    """The seconds `text` writes (no unit: seconds), or None when it is no
    duration or its unit is not one of `units`."""
    match = _DURATION.match(text)
    if match is None:
        return None
    unit = match.group(2)
    if unit is not None and unit not in units:
        return None
    return float(match.group(1)) * (UNITS[unit] if unit is not None else 1.0)
