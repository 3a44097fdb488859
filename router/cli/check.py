"""`router check` and `router plugins`: routes.yaml with the sinks it
names, and the installed plugins, without Redis."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from router.cli.config_load import load_or_exit

if TYPE_CHECKING:
    from router.config.settings import Settings


def check(settings: Settings, args: argparse.Namespace) -> int:
    config = load_or_exit(settings)
    for route in config.routes:
        print(f"route {route.path} -> {', '.join(d.name for d in route.destinations)}")
    for dest in config.destinations.values():
        s = dest.settings
        # As written (`${VAR}`s unexpanded): a token in its query stays out.
        url = "" if dest.shown_url is None else f" -> {dest.shown_url}"
        print(
            f"destination {dest.name}: plugin {s.plugin}{url}, ordered by "
            f"{s.ordering_key or '(one global order)'}, max_in_flight {s.max_in_flight}"
            + (f", {s.shards} shards" if s.shards > 1 else "")
        )
    # Each sink is built as `router serve` builds it (and closed, nothing
    # delivered): a plugin that refuses its options fails here, not at start.
    from router.config.plugins import try_sinks

    problems = asyncio.run(try_sinks(config.destinations.values(), settings.delivery_transport))
    for problem in problems:
        print(f"router: config error: {settings.routes_file}: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"{settings.routes_file}: ok")
    return 0


def plugins(settings: Settings, args: argparse.Namespace) -> int:
    """The installed plugins, then each broken one with its reason (exit 1:
    a build or deploy step running `router plugins` stops on it)."""
    from router.config.plugins import PluginError, available, plugin_manager

    try:
        found = available(plugin_manager())
    except PluginError as exc:  # two plugins provide one name
        print(f"router plugins: {exc}", file=sys.stderr)
        return 2
    for name, st in sorted(found.sink_types.items()):
        print(f"{name}: {st.description}")
    for name, fmt in sorted(found.formats.items()):
        print(f"format {name}: {fmt.description}")
    for broken in found.broken:
        print(f"broken: {broken}")
    return 1 if found.broken else 0
