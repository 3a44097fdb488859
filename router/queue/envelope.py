"""The envelope: a message as stored in a lane.

It is the request body exactly as received (raw JSON, never re-encoded) plus
the router's message id and arrival time, encoded once at ingest, and the
sender's W3C trace context when it sent one (router.ingest.tracecontext).

A lane entry is the envelope behind a short prefix, `<n>:`, where n is the
message's sequence number for its destination and ordering key (1, 2, 3...
in arrival order: the `X-Router-Sequence` header). The envelope is encoded
once and shared by every destination of a route, so the number, which is
per destination, lives in each lane's entry instead: the enqueue script
takes it from the destination's `seq` counter (router.queue.keys) as it
appends the message (store_message in lua/_lib.lua). An envelope always
starts with `{`, so an entry without a prefix (stored before sequence
numbers existed) is told apart, and is delivered without a number.
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


def split_entry(entry: bytes) -> tuple[int | None, bytes]:
    """A lane entry's sequence number (None: stored without one) and envelope."""
    if entry[:1] == b"{":
        return None, entry
    number, _, rest = entry.partition(b":")
    return int(number), rest


def entry(sequence: int | None, envelope: bytes) -> bytes:
    """The lane entry of an envelope and its sequence number (split_entry's inverse)."""
    return envelope if sequence is None else b"%d:%s" % (sequence, envelope)


def decode_entry(data: bytes) -> tuple[int | None, Envelope]:
    """A lane entry's sequence number and decoded envelope."""
    sequence, raw = split_entry(data)
    return sequence, _decoder.decode(raw)


def decode(data: bytes) -> Envelope:
    """An envelope, or a lane entry's (its sequence number dropped)."""
    return _decoder.decode(split_entry(data)[1])
