"""The router's OpenTelemetry spans (the `otel` extra): imported by
router.ops.tracing.start() only, when tracing is on.

Two kinds of span (docs/tracing.md):

- an ingest request: SERVER, named `POST <route>`, the child of the
  sender's `traceparent` when it sent a valid one. While it runs it is the
  current span, and the trace context stored with each message it stores
  is its own (router.ingest.tracecontext.for_message), so every delivery of
  the message joins the sender's trace below it.
- a delivery attempt: CLIENT, named `deliver <destination>`, the child of
  the trace context stored with the message (a coalesced request's: its
  first message's, and a link to each other message's). The destination
  gets this span's context as `traceparent` (Delivery.traceparent), so its
  own spans continue the trace under the attempt that reached it.

Attribute names are OpenTelemetry's semantic conventions where one fits
(messaging.*, http.*, error.type), `router.*` where none does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from importlib import metadata

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

log = logging.getLogger("router.tracing")

SCOPE = "message-router"
# messaging.system of every span: the router is the messaging system.
SYSTEM = "message_router"
# How long stopping waits for the spans still queued to be sent.
FLUSH_SECONDS = 5.0


def traceparent_of(context: SpanContext) -> str:
    """A span's context as a W3C `traceparent` header (version 00)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def remote_context(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    """A stored (or received) trace context as a remote span's context;
    None without one. Both were checked at ingest (router.ingest.tracecontext)."""
    if traceparent is None:
        return None
    try:
        _, trace_id, span_id, flags = traceparent.split("-")[:4]
        return SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(int(flags, 16)),
            trace_state=TraceState.from_header([tracestate]) if tracestate else None,
        )
    except ValueError:
        return None


def _parent(context: SpanContext | None) -> otel_context.Context:
    """An OpenTelemetry context whose current span is `context`; without
    one, an empty context (a new trace, whatever span is current here)."""
    if context is None:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(context), otel_context.Context())


def _version() -> str | None:
    try:
        return metadata.version("message-router")
    except metadata.PackageNotFoundError:
        return None


class IngestSpan:
    """One ingest request's span, current (attached) until end()."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def stored(self, ids: Sequence[str], duplicates: int = 0) -> None:
        """The ids of the messages the request stored (or found stored)."""
        span = self._span
        if len(ids) == 1:
            span.set_attribute("messaging.message.id", ids[0])
        elif ids:
            span.set_attribute("messaging.batch.message_count", len(ids))
            span.set_attribute("router.message_ids", list(ids))
        if duplicates:
            span.set_attribute("router.duplicates", duplicates)

    def end(self, status: int) -> None:
        """The request was answered `status`: the span ends, and is no
        longer current."""
        span = self._span
        span.set_attribute("http.response.status_code", status)
        if status >= 500:  # a client's mistake (4xx) is no error of the server's
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        with contextlib.suppress(ValueError):  # (another context: already gone)
            otel_context.detach(self._token)
        span.end()


class AttemptSpan:
    """One delivery attempt's span; `traceparent` is what the destination
    gets: the span's, or `stored` when the SDK made none (OTEL_SDK_DISABLED)."""

    __slots__ = ("_span", "_start_ns", "traceparent")

    def __init__(self, span: Span, start_ns: int, stored: str | None) -> None:
        self._span = span
        self._start_ns = start_ns
        context = span.get_span_context()
        self.traceparent = traceparent_of(context) if context.is_valid else stored

    def end(
        self,
        outcome: str,
        seconds: float | None = None,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        """The attempt's outcome (ok, failed, dead, blocked, lease_lost, cancelled),
        what the destination answered, and the error (as logged: redacted).
        `seconds`: how long the sink took, the span's duration (None: until now)."""
        span = self._span
        span.set_attribute("router.outcome", outcome)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if outcome != "ok":
            span.set_attribute("error.type", str(status) if status is not None else "_OTHER")
            span.set_status(Status(StatusCode.ERROR, error))
        end = None if seconds is None else self._start_ns + int(seconds * 1e9)
        span.end(end_time=end)


class Tracer:
    """The spans of one process, exported by its SDK pipeline."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(SCOPE, _version())

    @classmethod
    def exporting(cls, endpoint: str, service_name: str) -> Tracer:
        """Spans batched (OTEL_BSP_* apply) and sent over OTLP/HTTP to
        `endpoint`; the sampler is OTEL_TRACES_SAMPLER's (default: the
        parent's decision, else every trace)."""
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        return cls(provider)

    def shutdown(self) -> None:
        """Send what is queued, then stop (blocking: the exporter's HTTP)."""
        self._provider.shutdown()

    async def stopped(self) -> None:
        """shutdown(), waited for at most FLUSH_SECONDS (a collector that
        does not answer must not hold a stopping process): it runs in a
        daemon thread, left behind past that."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def run() -> None:
            try:
                self.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone
                    loop.call_soon_threadsafe(done.set_result, None)

        threading.Thread(target=run, name="otel-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(done, FLUSH_SECONDS)
        except TimeoutError:
            log.warning(
                "tracing: the last spans were not sent within %gs (the collector does not "
                "answer?): stopping without them",
                FLUSH_SECONDS,
            )

    def ingest(
        self, route: str, traceparent: str | None, tracestate: str | None, client: str
    ) -> IngestSpan:
        """The span of an ingest request on `route`, the child of the
        sender's trace context (already checked: tracecontext.from_headers)."""
        span = self._tracer.start_span(
            f"POST {route}",
            _parent(remote_context(traceparent, tracestate)),
            SpanKind.SERVER,
            {
                "http.request.method": "POST",
                "http.route": route,
                "url.path": route,
                "client.address": client,
                "messaging.system": SYSTEM,
                "messaging.operation.type": "create",
            },
        )
        return IngestSpan(span)

    def current_traceparent(self) -> str | None:
        """The current span's context as a `traceparent` (an ingest
        request's, while it runs); None when no span is current."""
        context = trace.get_current_span().get_span_context()
        return traceparent_of(context) if context.is_valid else None

    def attempt(
        self,
        destination: str,
        plugin: str,
        key: str,
        attempt: int,
        message_id: str,
        sequence: int | None,
        traceparent: str | None,
        tracestate: str | None,
        others: Sequence[tuple[str, str | None, str | None]] = (),
    ) -> AttemptSpan:
        """The span of attempt number `attempt` of a message (stored with
        trace context `traceparent`/`tracestate`) to `destination`; `others`:
        the other messages of a coalesced request, (id, traceparent,
        tracestate) each, linked."""
        parent = remote_context(traceparent, tracestate)
        links = []
        seen = {(parent.trace_id, parent.span_id)} if parent is not None else set()
        for other_id, tp, tst in others:
            context = remote_context(tp, tst)
            if context is not None and (context.trace_id, context.span_id) not in seen:
                seen.add((context.trace_id, context.span_id))
                links.append(Link(context, {"messaging.message.id": other_id}))
        attributes: dict[str, str | int | list[str]] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "deliver",
            "messaging.destination.name": destination,
            "messaging.message.id": message_id,
            "messaging.message.conversation_id": key,
            "router.attempt": attempt,
            "router.plugin": plugin,
        }
        if sequence is not None:
            attributes["router.sequence"] = sequence
        if others:
            attributes["messaging.batch.message_count"] = len(others) + 1
            attributes["router.message_ids"] = [message_id, *(o[0] for o in others)]
        start = time.time_ns()
        span = self._tracer.start_span(
            f"deliver {destination}",
            _parent(parent),
            SpanKind.CLIENT,
            attributes,
            links,
            start_time=start,
        )
        return AttemptSpan(span, start, traceparent)
