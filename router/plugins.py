"""The plugin manager: built-in and installed plugins load the same way."""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass

import httpx
import pluggy

from router import hookspecs
from router.config import Destination
from router.delivery_http import delivery_client
from router.ingest_formats import IngestFormat
from router.settings import DeliveryTransport
from router.sinks import Sink, SinkContext, SinkType

log = logging.getLogger("router.plugins")

ENTRY_POINT_GROUP = "router"


class PluginError(Exception):
    pass


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager (one, as datasette's `pm`): built-ins and
    installed plugins from the entry points; tests may `register` more."""
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


def ingest_formats(pm: pluggy.PluginManager) -> dict[str, IngestFormat]:
    """Every webhook format the installed plugins read at ingest, by name."""
    found: dict[str, IngestFormat] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.router_ingest_formats.get_hookimpls():
        provided: list[IngestFormat] = impl.function() or []  # type: ignore[assignment]
        for f in provided:
            if f.name in found:
                raise PluginError(
                    f"format {f.name!r} is provided twice, by {owners[f.name]} and "
                    f"{impl.plugin_name}: uninstall one of them"
                )
            found[f.name] = f
            owners[f.name] = impl.plugin_name
    return found


@dataclass(frozen=True)
class OpenSink:
    """A destination's sink with the HTTP client the router lent it."""

    sink: Sink
    http: httpx.AsyncClient

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # a plugin's close must not stop the others
            await self.sink.aclose()
        await self.http.aclose()


async def open_sink(destination: Destination, transport: DeliveryTransport = "aiohttp") -> OpenSink:
    """Build a destination's sink through its plugin's factory, with a shared
    HTTP client sized for its max_in_flight (router.delivery_http)."""
    s = destination.settings
    http = delivery_client(s.max_in_flight, s.timeout, transport)
    context = SinkContext(
        destination=destination.name,
        timeout=s.timeout,
        max_in_flight=s.max_in_flight,
        http=http,
        redactor=destination.redactor,
    )
    try:
        sink = destination.sink_type.factory(destination.options, context)
    except BaseException:
        await http.aclose()  # a plugin that refuses to start leaks nothing
        raise
    return OpenSink(sink, http)
