"""A destination's router settings checked (limits, retry, circuit breaker,
outbound rate, ordering key), and its plugin's warnings about its options."""

from __future__ import annotations

import re
from typing import Any

from router.config.checks import Check, require
from router.config.filters import compile_path
from router.config.schema import (
    MAX_COALESCED,
    MAX_LOGGED_RESPONSE,
    MAX_SHARDS,
    DestinationSettings,
    Path,
)
from router.config.yaml_loader import Loader
from router.plugin.status_codes import StatusSpecError, parse_statuses


def check_destination(loader: Loader, path: Path, s: DestinationSettings) -> None:
    cb = s.circuit_breaker
    checks: list[Check] = [
        ("max_in_flight", s.max_in_flight >= 1, "must be at least 1"),
        ("shards", 1 <= s.shards <= MAX_SHARDS, f"must be between 1 and {MAX_SHARDS}"),
        (
            "max_in_flight",
            s.max_in_flight >= s.shards,
            "must be at least `shards` (each shard gets its part of it)",
        ),
        ("timeout", s.timeout > 0, "must be more than 0"),
        ("lease", s.lease >= 1, "must be at least 1s"),
        ("lease", s.lease > s.timeout, "must be longer than `timeout`"),
        (("retry", "initial"), s.retry.initial > 0, "must be more than 0"),
        (("retry", "factor"), s.retry.factor >= 1, "must be at least 1"),
        (("retry", "max_delay"), s.retry.max_delay >= s.retry.initial, "must be >= retry.initial"),
        (("retry", "jitter"), 0 <= s.retry.jitter <= 1, "must be between 0 and 1"),
        (
            ("retry", "max_attempts"),
            s.retry.max_attempts is None or s.retry.max_attempts >= 1,
            "must be at least 1, or null to retry forever",
        ),
        (
            ("circuit_breaker", "failing_keys"),
            cb.failing_keys >= 2,
            "must be at least 2 (one conversation's failures never open the breaker)",
        ),
        (("circuit_breaker", "window"), cb.window > 0, "must be more than 0"),
        (("circuit_breaker", "probe_interval"), cb.probe_interval > 0, "must be more than 0"),
        (
            ("circuit_breaker", "probe_interval_max"),
            cb.probe_interval_max >= cb.probe_interval,
            "must be >= circuit_breaker.probe_interval",
        ),
    ]
    try:
        parse_statuses(cb.ignore_statuses)
    except StatusSpecError as exc:
        where = (*path, "circuit_breaker", "ignore_statuses", exc.index)
        raise loader.error(where, exc.message) from None
    log = s.message_log
    checks += [
        (("message_log", "max_messages"), log.max_messages >= 1, "must be at least 1"),
        (("message_log", "max_age"), log.max_age > 0, "must be more than 0"),
        (
            ("message_log", "response_bytes"),
            log.response_bytes <= MAX_LOGGED_RESPONSE,
            f"must be at most {MAX_LOGGED_RESPONSE // 1024}KiB (what a delivery reads)",
        ),
    ]
    limit = s.rate_limit
    if limit is not None:
        checks += [
            (("rate_limit", "requests"), limit.requests >= 1, "must be at least 1"),
            (("rate_limit", "period"), limit.period > 0, "must be more than 0"),
            (("rate_limit", "burst"), limit.burst >= 1, "must be at least 1"),
            (
                ("rate_limit", "requests"),
                limit.requests >= s.shards,
                "must be at least `shards` (each shard gets its part of it)",
            ),
        ]
    coalesce = s.coalesce
    if coalesce is not None:
        checks += [
            (("coalesce", "window"), coalesce.window > 0, "must be more than 0"),
            (
                ("coalesce", "max_messages"),
                2 <= coalesce.max_messages <= MAX_COALESCED,
                f"must be between 2 and {MAX_COALESCED}",
            ),
        ]
    require(loader, path, checks)


def check_ordering_key(loader: Loader, path: Path, ordering_key: str | None) -> list[str]:
    """An ordering key is a path into the body (router.config.filters): a
    top-level field, or dotted keys into nested objects. Its warnings: a
    dot reads a nested field since content routing came; a config written
    before it meant a top-level field named with a dot."""
    if ordering_key is None:
        return []
    try:
        compile_path(ordering_key)
    except ValueError as exc:
        raise loader.error((*path, "ordering_key"), str(exc)) from None
    if re.search(r"(?<!\\)\.", ordering_key) is None:
        return []
    nested = " -> ".join(f"`{part}`" for part in re.split(r"(?<!\\)\.", ordering_key))
    escaped = ordering_key.replace(".", "\\.")
    return [
        loader.place(
            (*path, "ordering_key"),
            f"reads the nested field {nested}; for a top-level field named "
            f"`{ordering_key}` write `{escaped}`",
        )
    ]


def option_warnings(loader: Loader, path: Path, options: Any, written: dict[str, Any]) -> list[str]:
    """A plugin's warnings about its options (`config_warnings()`, if it has
    one), placed like errors. A warning "url: ..." names the option `url`."""
    config_warnings = getattr(options, "config_warnings", None)
    if config_warnings is None:
        return []
    placed = []
    for warning in config_warnings():
        option, sep, message = str(warning).partition(": ")
        if sep and option in written:
            placed.append(loader.place((*path, option), message))
        else:
            placed.append(loader.place(path, str(warning)))
    return placed
