"""Plugins shipped inside the router, registered through its own entry point."""

from __future__ import annotations

from router.hookspecs import hookimpl
from router.http_sink import HttpOptions, HttpSink
from router.sinks import SinkType


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="http",
            factory=HttpSink,
            options=HttpOptions,
            description="POST the message JSON to `url`; any 2xx acknowledges it",
        )
    ]
