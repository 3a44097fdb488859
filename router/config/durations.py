"""The one duration parser: routes.yaml (router.config) and the environment
(router.config.settings) write durations alike, as a number of seconds or with a
unit, 500ms, 10s, 1m, 2h, 1d. Each caller says which units it allows and
words its own error. And the one way a duration is shown (`age`): `router
status` and the dashboard alike."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime

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


def age(seconds: float | None) -> str:
    """A duration as people read it: 850ms, 12s, 4m05s, 3h12m, 2d04h."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if s >= 10 else f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def since_ms(text: str, now: float) -> int | None:
    """The moment `text` names, in ms since the epoch, or None when it names
    none: an ISO 8601 time (without an offset: UTC), ms since the epoch (a
    whole number), or a duration back from `now` (seconds since the epoch)
    with its unit, 15m, 2h, 7d (`router messages --since`, the admin API's
    `since`)."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        return int(text) if len(text) <= 16 else None  # int() of 5000 digits raises
    back = seconds(text, ("ms", "s", "m", "h", "d")) if text[-1:].isalpha() else None
    if back is not None:
        return int((now - back) * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
