"""Checks of converted settings as (where, holds, what to fix), raised at
their place; the upper bound of every duration and rate count."""

from __future__ import annotations

import msgspec

from router.config.schema import MAX_COALESCE_WINDOW, Duration, Path
from router.config.yaml_loader import Loader

Check = tuple[str | tuple[str, ...], bool, str]  # where, holds, what to fix

# -- upper bounds: a value past these passes every other check, then stops
# delivery (a rate_limit.period of 1e17 s allows one request in 3 billion
# years) or makes Redis refuse each command (an expiry past 64 bits). Every
# duration of a destination or a route is bounded, by its own entry here or
# else by MAX_DURATION, so a duration added later is bounded too.
DAY = 86400.0
MAX_DURATION = DAY
DURATION_MAXIMA: dict[tuple[str, ...], float] = {
    ("timeout",): 3600.0,  # one HTTP attempt
    ("retry", "max_age"): 365 * DAY,  # a give-up time, not a wait
    ("dedup_ttl",): 365 * DAY,  # how long ids are kept
    ("message_log", "max_age"): 365 * DAY,  # how long stories are kept
    ("coalesce", "window"): MAX_COALESCE_WINDOW,  # each conversation's first message waits it
}
# Counts that feed a rate (requests per period, and the slack on top).
COUNT_MAXIMA: dict[tuple[str, ...], int] = {
    ("rate_limit", "requests"): 1_000_000,
    ("rate_limit", "burst"): 1_000_000,
    # Stories kept per destination (each a few hundred bytes of Redis).
    ("message_log", "max_messages"): 100_000_000,
}


def _shown(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def upper_bounds(struct: msgspec.Struct, where: tuple[str, ...] = ()) -> list[Check]:
    """The maxima of every duration (and rate count) in `struct`, nested
    settings included."""
    checks: list[Check] = []
    for name in struct.__struct_fields__:
        value, place = getattr(struct, name), (*where, name)
        if isinstance(value, Duration):
            most = DURATION_MAXIMA.get(place, MAX_DURATION)
            checks.append((place, value <= most, f"must be at most {_shown(most)}"))
        elif isinstance(value, int) and place in COUNT_MAXIMA:
            checks.append(
                (place, value <= COUNT_MAXIMA[place], f"must be at most {COUNT_MAXIMA[place]:,}")
            )
        elif isinstance(value, msgspec.Struct):
            checks += upper_bounds(value, place)
    return checks


def require(loader: Loader, path: Path, checks: list[Check]) -> None:
    """Raise the first failed check as a config error at its place."""
    for where, ok, message in checks:
        if not ok:
            sub = where if isinstance(where, tuple) else (where,)
            raise loader.error((*path, *sub), message)
