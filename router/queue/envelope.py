"""The envelope: a message as stored in a lane.

It is the request body exactly as received (raw JSON, never re-encoded) plus
the router's message id and arrival time, encoded once at ingest, and the
sender's W3C trace context when it sent one (router.ingest.tracecontext).
"""

from __future__ import annotations

import os
import time

import msgspec


class Envelope(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    ts: int  # arrival time, ms since the epoch
    body: msgspec.Raw
    tp: str | None = None  # traceparent header, as received (valid ones only)
    tst: str | None = None  # tracestate header, kept with its traceparent


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def new_message_id(now_ms: int | None = None) -> str:
    """A sortable, unique id: arrival ms in hex, then 64 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"msg_{ms:011x}{os.urandom(8).hex()}"


def encode(
    message_id: str,
    ts_ms: int,
    body: bytes,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> bytes:
    return _encoder.encode(
        Envelope(id=message_id, ts=ts_ms, body=msgspec.Raw(body), tp=traceparent, tst=tracestate)
    )


def decode(data: bytes) -> Envelope:
    return _decoder.decode(data)
