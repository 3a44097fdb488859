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

The arrival time `ts` is left out when the message id carries the same
millisecond (new_message_id: every message ingest stores), which saves 19
of about 110 bytes per queued message; a reader takes it from the id then
(here, and arrival_of in lua/_lib.lua). An envelope stored before, with its
`ts`, reads as it always did, and so does one whose id carries another time
(a retried fan-out stored under an earlier try's id) or none.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import msgspec
from msgspec.structs import force_setattr

# `ts` as stored when it is left out (never a real arrival time); decode
# puts the id's own time in its place, so a reader always sees one.
FROM_ID = -1


class Envelope(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    id: str
    ts: int = FROM_ID  # arrival time, ms since the epoch
    body: msgspec.Raw
    tp: str | None = None  # traceparent header, as received (valid ones only)
    tst: str | None = None  # tracestate header, kept with its traceparent


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def new_message_id(now_ms: int | None = None) -> str:
    """A sortable, unique id: arrival ms in hex, then 64 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"msg_{ms:011x}{os.urandom(8).hex()}"


# An id new_message_id made until the year 2527 (11 hex digits of ms): the
# only ids whose time a reader takes (lua/_lib.lua's arrival_of matches
# the same shape).
_TIMED_ID = re.compile(r"msg_([0-9a-fA-F]{11})[0-9a-fA-F]{16}")


def id_ms(message_id: str) -> int | None:
    """The arrival time (ms) a message id carries, None when it has none."""
    m = _TIMED_ID.fullmatch(message_id)
    return int(m.group(1), 16) if m else None


def encode(
    message_id: str,
    ts_ms: int,
    body: bytes,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> bytes:
    ts = FROM_ID if id_ms(message_id) == ts_ms else ts_ms
    return _encoder.encode(
        Envelope(id=message_id, ts=ts, body=msgspec.Raw(body), tp=traceparent, tst=tracestate)
    )


def _timed(env: Envelope) -> Envelope:
    """`env` with its arrival time, taken from its id when it was left out."""
    if env.ts == FROM_ID:
        ms = id_ms(env.id)
        if ms is None:
            raise msgspec.ValidationError("envelope without `ts`, and its id carries no time")
        force_setattr(env, "ts", ms)  # still being made: nothing has seen it yet
    return env


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
    return sequence, _timed(_decoder.decode(raw))


def decode(data: bytes) -> Envelope:
    """An envelope, or a lane entry's (its sequence number dropped)."""
    return _timed(_decoder.decode(split_entry(data)[1]))


def with_ts(env: Any) -> Any:
    """A decoded envelope as it always read, with its `ts`: one stored
    without it (its id carries that time) gets it back, after the id, where
    an envelope stored with it has it (what `router dead list --json` and
    the admin API's dead letters show)."""
    if isinstance(env, dict) and "ts" not in env and isinstance(env.get("id"), str):
        ms = id_ms(env["id"])
        if ms is not None:
            env = {k: v for k, v in env.items() if k in ("rp", "id")} | {"ts": ms} | env
    return env


_ID_FIELD = re.compile(r'^\{(?:"rp":1,)?"id":"([^"]*)"')


def with_ts_text(stored: str) -> str:
    """with_ts() of an envelope's JSON text, the rest byte for byte (the
    body as it was posted): `,"ts":<ms>` put back after the id when the id
    carries it and the text has none. Other text as it is."""
    m = _ID_FIELD.match(stored)
    if m is None or stored.startswith(',"ts":', m.end()):
        return stored
    ms = id_ms(m.group(1))
    if ms is None:
        return stored
    return f'{stored[: m.end()]},"ts":{ms}{stored[m.end() :]}'
