"""Plugins shipped inside the router, registered through its own entry point."""

from __future__ import annotations

from router.plugin.hookspecs import hookimpl
from router.plugin.http_sink import HttpOptions, HttpSink
from router.plugin.sinks import SinkType


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="http",
            factory=HttpSink,
            options=HttpOptions,
            circuit_breaker=True,
            description=(
                "send the message JSON to `url` (POST, PUT or PATCH; optionally reshaped "
                "and signed); a 2xx, or one of success_statuses, acknowledges it"
            ),
        )
    ]
