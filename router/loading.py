"""Load plugins and routes.yaml together: the start-up check."""

from __future__ import annotations

from router.config import Config, ConfigError, load_config
from router.plugins import PluginError, ingest_formats, plugin_manager, sink_types


def load(
    routes_file: str, env: dict[str, str] | None = None, content: bytes | None = None
) -> Config:
    """`content`: the file as read already (a reload reads it once)."""
    try:
        pm = plugin_manager()
        types = sink_types(pm)
        formats = ingest_formats(pm)
    except PluginError as exc:
        raise ConfigError(f"{routes_file}: {exc}") from None
    return load_config(routes_file, types, env, content, formats)
