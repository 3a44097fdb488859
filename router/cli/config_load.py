"""routes.yaml as the `router` commands read it: whole (load_or_exit), or
only its destinations' layout (layout_or_exit, for the operator commands);
a config error ends the command with exit 2, one line on stderr."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING

from router.config import Config, ConfigError
from router.config.loading import load

if TYPE_CHECKING:
    from router.config.settings import Settings

log = logging.getLogger("router")


def load_or_exit(settings: Settings) -> Config:
    try:
        config = load(settings.routes_file)
    except ConfigError as exc:
        print(f"router: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in config.warnings:
        log.warning("config: %s", warning)
    return config


def layout_or_exit(settings: Settings) -> dict[str, int]:
    """The destinations and their shard counts, for the operator commands:
    read without the rest of routes.yaml's checks, so they need none of the
    destinations' secrets (config.load_layout)."""
    from router.config import load_layout

    try:
        layout = load_layout(settings.routes_file)
    except ConfigError as exc:
        print(f"router: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Errors they print from Redis are cleaned of the file's secrets
    # (redaction.known): its variables' values (load_layout), and, where the
    # whole file loads here, its literal ones too (header values). Only an
    # extra: whatever stops the whole load (an unset variable, a broken
    # plugin) must not stop these commands.
    with contextlib.suppress(Exception):
        load(settings.routes_file)
    return layout


def into_ok(layout: dict[str, int], command: str, name: str, into: str) -> bool:
    """`--into` names a configured destination other than the source."""
    if into not in layout:
        print(
            f"router {command}: --into {into!r}: no destination of that name in routes.yaml; "
            f"defined: {', '.join(layout)}",
            file=sys.stderr,
        )
        return False
    if into == name:
        print(f"router {command}: --into names {name} itself", file=sys.stderr)
        return False
    return True
