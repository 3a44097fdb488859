"""The plugin manager: built-in and installed plugins load the same way."""

from __future__ import annotations

import logging

import pluggy

from router import hookspecs
from router.sinks import SinkType

log = logging.getLogger("router.plugins")

ENTRY_POINT_GROUP = "router"


class PluginError(Exception):
    pass


def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("router")
    pm.add_hookspecs(hookspecs)
    # The router's own built-ins are an entry point of this package, so
    # they take the same path as every third-party plugin.
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def sink_types(pm: pluggy.PluginManager) -> dict[str, SinkType]:
    """Every kind of destination the installed plugins provide, by name."""
    found: dict[str, SinkType] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.router_sink_types.get_hookimpls():
        provided: list[SinkType] = impl.function() or []  # type: ignore[assignment]
        for st in provided:
            if st.name in found:
                raise PluginError(
                    f"plugin {st.name!r} is provided twice, by {owners[st.name]} and "
                    f"{impl.plugin_name}: uninstall one of them"
                )
            found[st.name] = st
            owners[st.name] = impl.plugin_name
    return found
