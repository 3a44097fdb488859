"""The plugin manager: built-in and installed plugins load the same way."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import httpx
import pluggy

from router.config import Destination
from router.config.entry_points import BrokenPlugin, load_entry_points
from router.ops.failures import Explained, one_line
from router.plugin import hookspecs
from router.plugin.client import DeliveryTransport, delivery_client, prepare
from router.plugin.formats import IngestFormat
from router.plugin.sinks import Sink, SinkContext, SinkType
from router.plugin.tls import CaBundleError

log = logging.getLogger("router.plugins")


class PluginError(Explained):
    """A plugin conflict or failure, as one line naming the plugin's
    distribution and entry point."""


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, with where each plugin came from and the plugins
    that could not be loaded (router.config.entry_points)."""

    def __init__(self) -> None:
        super().__init__("router")
        self.origins: dict[str, str] = {}  # plugin name -> distribution and entry point
        self.broken: list[BrokenPlugin] = []  # could not be imported or registered
        # Sink type name -> what provides it (its plugin's origin), for the
        # error of a sink that fails to start: as of the last available().
        self.providers: dict[str, str] = {}

    def origin_of(self, plugin_name: str) -> str:
        return self.origins.get(plugin_name) or f"plugin {plugin_name!r} (registered in-process)"


@functools.cache
def plugin_manager() -> PluginManager:
    """The process's plugin manager (one, as datasette's `pm`): built-ins and
    installed plugins from the entry points; tests may `register` more.
    Loaded once: a plugin installed later is seen by a new process only."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    # The router's own built-ins are an entry point of this package, so
    # they take the same path as every third-party plugin.
    pm.origins, pm.broken = load_entry_points(pm)
    return pm


@dataclass(frozen=True)
class Available:
    """What the plugins provide, and the plugins that are broken."""

    sink_types: dict[str, SinkType]
    formats: dict[str, IngestFormat]
    broken: list[BrokenPlugin]


def available(pm: PluginManager) -> Available:
    """Call every plugin's hooks: a hook that raises, or returns something
    else than a list of what it provides, makes its plugin broken (listed
    with the ones that could not be loaded), never stops the others."""
    broken = list(pm.broken)
    types = _provided(pm, pm.hook.router_sink_types, SinkType, "plugin", broken)
    formats = _provided(pm, pm.hook.router_ingest_formats, IngestFormat, "format", broken)
    pm.providers = {name: pm.origin_of(owner) for name, owner in types.owners.items()}
    return Available(types.items, formats.items, broken)


def sink_types(pm: PluginManager) -> dict[str, SinkType]:
    """Every kind of destination the installed plugins provide, by name."""
    return available(pm).sink_types


Provided = TypeVar("Provided", SinkType, IngestFormat)


@dataclass(frozen=True)
class _Found(Generic[Provided]):
    """What one hook's implementations provide, by name, and which plugin
    provides each."""

    items: dict[str, Provided]
    owners: dict[str, str]  # name -> its plugin's name


def _provided(
    pm: PluginManager,
    hook: pluggy.HookCaller,
    kind: type[Provided],
    label: str,
    broken: list[BrokenPlugin],
) -> _Found[Provided]:
    """Collect one hook (router_sink_types, router_ingest_formats) from
    every plugin: the same code for each kind of thing plugins provide."""
    found: _Found[Provided] = _Found({}, {})
    for impl in hook.get_hookimpls():
        owner = impl.plugin_name
        try:
            provided = impl.function() or []
        except Exception as exc:
            problem = f"its {hook.name} hook raised {one_line(exc)}"
            broken.append(BrokenPlugin(owner, pm.origin_of(owner), problem))
            continue
        if not isinstance(provided, list | tuple) or not all(isinstance(p, kind) for p in provided):
            problem = (
                f"its {hook.name} hook returned {provided!r:.100}, not a list of {kind.__name__}"
            )
            broken.append(BrokenPlugin(owner, pm.origin_of(owner), problem))
            continue
        for item in provided:
            if item.name in found.items:
                raise PluginError(
                    f"{label} {item.name!r} is provided twice, by "
                    f"{pm.origin_of(found.owners[item.name])} and {pm.origin_of(owner)}: "
                    "uninstall one of them"
                )
            found.items[item.name] = item
            found.owners[item.name] = owner
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


async def open_sink(destination: Destination, transport: DeliveryTransport = "h1") -> OpenSink:
    """Build a destination's sink through its plugin's factory, with a shared
    HTTP client sized for its max_in_flight (router.plugin.client)."""
    s = destination.settings
    try:
        http = delivery_client(s.max_in_flight, s.timeout, transport)
    except CaBundleError as exc:  # (httpx's own transport builds its context here)
        raise PluginError(f"destination {destination.name}: {exc}") from exc
    context = SinkContext(
        destination=destination.name,
        timeout=s.timeout,
        max_in_flight=s.max_in_flight,
        http=http,
        redactor=destination.redactor,
    )
    try:
        sink = destination.sink_type.factory(destination.options, context)
    except BaseException as exc:
        await http.aclose()  # a plugin that refuses to start leaks nothing
        if isinstance(exc, Exception):
            provider = plugin_manager().providers.get(s.plugin, f"plugin {s.plugin!r}")
            raise PluginError(
                f"destination {destination.name}: plugin {s.plugin!r} of {provider} "
                f"failed to start: {destination.redactor(one_line(exc))}"
            ) from exc
        raise
    try:
        prepare(http)
    except BaseException as exc:
        # Not the plugin's failure (its sink started): the router's own,
        # raised as is, as when the client is made; a CA file that cannot
        # be loaded as one line naming the destination (as a plugin's).
        await OpenSink(sink, http).aclose()
        if isinstance(exc, CaBundleError):
            raise PluginError(f"destination {destination.name}: {exc}") from exc
        raise
    return OpenSink(sink, http)


async def try_sinks(destinations: Iterable[Destination], transport: DeliveryTransport) -> list[str]:
    """Build each destination's sink as the workers do, and close it at
    once, nothing delivered (`router check`): why each that fails to start
    fails, one line each."""
    problems = []
    for destination in destinations:
        try:
            opened = await open_sink(destination, transport)
        except PluginError as exc:
            problems.append(str(exc))
            continue
        await opened.aclose()
    return problems
