"""The hooks a router plugin can implement.

A plugin is a module or object registered with the plugin manager, either
built in or installed as a package with an entry point in the group
``router``::

    [project.entry-points.router]
    mysink = "mysink_package"

Hooks are synchronous factories (pluggy does not await coroutines); the
objects they return have async methods that the delivery worker awaits.
"""

from __future__ import annotations

import pluggy

from router.ingest_formats import IngestFormat
from router.sinks import SinkType

hookspec = pluggy.HookspecMarker("router")
hookimpl = pluggy.HookimplMarker("router")


@hookspec
def router_sink_types() -> list[SinkType]:
    """Return the kinds of destination this plugin provides.

    Each ``SinkType`` has the ``name`` a destination's ``plugin:`` field
    refers to in routes.yaml, the msgspec Struct of its options (the
    destination's fields other than the router's own), and a factory
    ``factory(options, context) -> Sink`` called once per destination at
    start. The ``Sink`` has ``async deliver(delivery)``, which returns when
    the destination acknowledged the message and raises on failure
    (``router.sinks.DeliveryFailed``; with ``permanent=True`` when no retry
    can succeed: the message is then given up at once, dead-lettered or its
    key blocked as ``retry.on_exhausted`` says; with ``retry_after`` and
    ``hold_destination=True`` when the destination as a whole asked to wait),
    and ``async aclose()``. ``SinkType.circuit_breaker`` says whether its
    destinations get the circuit breaker unless routes.yaml says otherwise.
    """
    raise NotImplementedError


@hookspec
def router_ingest_formats() -> list[IngestFormat]:
    """Return the webhook formats this plugin reads at ingest.

    Each ``IngestFormat`` (router.ingest_formats) has the ``name`` a route's
    ``format:`` field refers to in routes.yaml, the msgspec Struct of its
    options (the route's ``format_options:``, validated at load), an
    optional ``authenticate(options, headers, body)`` that checks the raw
    request before it is parsed, ``parse(request) -> list[IngestedMessage]``
    that turns one request into its messages (each with its own body,
    ordering key, dedup id and destinations; all stored atomically; a
    malformed item is left out with ``request.skip(reason, problem)``), an
    optional ``verify(options, query) -> str`` answering the service's GET
    handshake, ``destinations(options)``: the destinations the options
    name beyond the route's own, and optionally ``docs`` (a ``FormatDocs``:
    the body's JSON Schema, headers and handshake parameters for /schema).
    Without a ``format:`` a route reads one JSON object per request, as
    always.
    """
    raise NotImplementedError
