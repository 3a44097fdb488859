"""OpenTelemetry tracing, when on: the switch every process's hot paths
look at, without importing OpenTelemetry.

`active` is None unless OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then the process's Runtime
(router.runtime.wiring) starts the SDK through start() and stops it
(flushing what is queued) at stop. With it None, ingest and delivery pay
one `is None` check each, and nothing of OpenTelemetry is imported: the
spans themselves are router.ops.otel_spans, loaded by start() only.

What the spans are, and how a delivery attempt's span joins the sender's
trace through the trace context stored with the message: docs/tracing.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from router.ops.redaction import shown_redis_url

if TYPE_CHECKING:
    from router.ops.otel_spans import Tracer

# The running tracer; None: tracing off.
active: Tracer | None = None

# Runtimes of this process that started tracing (tests run several in one
# process): the tracer is shut down when the last one stops.
_users = 0


def start(endpoint: str, service_name: str) -> None:
    """Start exporting spans over OTLP/HTTP to `endpoint` (the traces URL
    itself), as `service_name`; the SDK reads its other OTEL_* variables
    (sampler, headers, batching) itself."""
    global active, _users
    if active is None:
        from router.ops.otel_spans import Tracer

        active = Tracer.exporting(endpoint, service_name)
        logging.getLogger("router.tracing").info(
            "tracing on: spans to %s as service %s", shown_redis_url(endpoint), service_name
        )
    _users += 1


async def stop() -> None:
    """The last user's stop ends tracing: the spans still queued are sent
    (in a thread: the exporter's HTTP calls block), waited for a few
    seconds at most."""
    global active, _users
    _users = max(0, _users - 1)
    tracer = active
    if _users or tracer is None:
        return
    active = None
    await tracer.stopped()
