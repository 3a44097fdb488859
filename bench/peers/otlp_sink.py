"""The OpenTelemetry collector of bench/tracing.py: a raw ASGI app that
answers 200 (an empty ExportTraceServiceResponse) to every OTLP/HTTP export
POSTed to /v1/traces, as a collector does, and counts the exports, their
bytes and their spans (the protobuf decoded with opentelemetry-proto), so
the bench can check that every span arrived.

GET /count answers {"requests", "spans", "bytes"}; POST /reset zeroes them.

    python -m uvicorn otlp_sink:app --port 4318 --log-level warning --no-access-log
"""

import gzip
import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

EMPTY = ExportTraceServiceResponse().SerializeToString()
counts = {"requests": 0, "spans": 0, "bytes": 0}


async def app(scope, receive, send):
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, kind = b"", b"application/json"
    if scope["path"] == "/count":
        body = json.dumps(counts).encode()
    elif scope["path"] == "/reset":
        counts.update(requests=0, spans=0, bytes=0)
    elif scope["path"] == "/v1/traces":
        raw = b"".join(chunks)
        if (b"content-encoding", b"gzip") in scope["headers"]:
            raw = gzip.decompress(raw)
        export = ExportTraceServiceRequest()
        export.ParseFromString(raw)
        counts["requests"] += 1
        counts["bytes"] += len(raw)
        counts["spans"] += sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
        body, kind = EMPTY, b"application/x-protobuf"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})
