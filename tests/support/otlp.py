"""An OpenTelemetry collector of the tests' own: an OTLP/HTTP receiver on
loopback (an ASGI app under uvicorn in a thread) that decodes each export
(protobuf, gzip or not) with opentelemetry-proto's ExportTraceServiceRequest
and keeps its spans, answering as a collector does."""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.servers import ServerThread

TRACES_PATH = "/v1/traces"
SERVER, CLIENT = 2, 3  # Span.SpanKind: SPAN_KIND_SERVER, SPAN_KIND_CLIENT
STATUS_ERROR = 2  # Status.StatusCode: STATUS_CODE_ERROR


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One exported span, ids as lower-case hex."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    links: list[Link]
    status_code: int
    status_message: str
    start_ns: int
    end_ns: int
    service_name: str

    @property
    def traceparent_ids(self) -> str:
        """`<trace id>-<span id>`, as in a traceparent header."""
        return f"{self.trace_id}-{self.span_id}"


@dataclass
class Collector:
    """Receives OTLP/HTTP exports on `url` (the base: set it as
    OTEL_EXPORTER_OTLP_ENDPOINT) and keeps their spans; `requests` counts
    every POST it got."""

    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ServerThread | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                done = message["type"] == "lifespan.shutdown"
                await send({"type": message["type"] + ".complete"})
                if done:
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = b"".join(chunks)
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        status = 404
        if scope["method"] == "POST" and scope["path"] == TRACES_PATH:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with self.lock:
                self.requests += 1
                self.spans.extend(_spans(request))
            status = 200
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send(
            {"type": "http.response.body", "body": ExportTraceServiceResponse().SerializeToString()}
        )

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def named(self, prefix: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name.startswith(prefix)]


def _spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                yield Span(
                    name=s.name,
                    kind=s.kind,
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(),
                    attributes={a.key: _value(a.value) for a in s.attributes},
                    links=[
                        Link(
                            link.trace_id.hex(),
                            link.span_id.hex(),
                            {a.key: _value(a.value) for a in link.attributes},
                        )
                        for link in s.links
                    ],
                    status_code=s.status.code,
                    status_message=s.status.message,
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    service_name=str(resource.get("service.name")),
                )


@contextlib.contextmanager
def serving_collector() -> Iterator[Collector]:
    """A Collector on loopback for the block, stopped after it."""
    collector = Collector()
    collector.server = ServerThread(collector).start()
    try:
        yield collector
    finally:
        collector.server.stop()
