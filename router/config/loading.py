"""Load plugins and routes.yaml together: the start-up check."""

from __future__ import annotations

import dataclasses

from router.config import Config, ConfigError, load_config
from router.config.plugins import PluginError, available, plugin_manager


def load(
    routes_file: str,
    env: dict[str, str] | None = None,
    content: bytes | None = None,
    *,
    running: bool = False,
) -> Config:
    """`content`: the file as read already (a reload reads it once).
    `running`: read by a process that started earlier (a reload), whose
    plugins and environment are those of its start: its errors say so.

    A broken plugin (router.config.entry_points) is a warning while
    routes.yaml names nothing missing; a `plugin:` or `format:` that is
    missing is refused with the broken plugins that may provide it."""
    try:
        found = available(plugin_manager())
    except PluginError as exc:
        raise ConfigError(f"{routes_file}: {exc}") from None
    broken = [(b.entry_point, str(b)) for b in found.broken]
    config = load_config(
        routes_file, found.sink_types, env, content, found.formats, broken=broken, running=running
    )
    unused = tuple(
        f"broken plugin, not loaded (routes.yaml does not need it): {b}" for _, b in broken
    )
    return dataclasses.replace(config, warnings=unused + config.warnings) if unused else config
