"""W3C Trace Context (https://www.w3.org/TR/trace-context/): a
`traceparent` (and its `tracestate`) sent with a webhook is kept with the
message and sent on every delivery attempt, so the bot's traces join the
sender's.

With tracing on (router.ops.tracing), the trace context kept is the
ingest request's own span's instead (for_message), a child of the
sender's: the deliveries join the trace below the request that stored
the message.

An invalid `traceparent` is ignored, as the spec asks of a receiver (never
a 400: tracing must not cost a message), and so is a `tracestate` without
a valid `traceparent` or longer than the spec's 512 characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from router.ops import tracing

# version-traceid-parentid-flags; a future version may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?")
# list-members, commas and optional white space: printable ASCII and tabs
# only (anything else could not be sent on as it came).
_TRACESTATE = re.compile(r"[\t -~]+")
MAX_TRACEPARENT = 512  # version 00 is 55; a later version's extra fields, bounded
MAX_TRACESTATE = 512


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of a header (Litestar's headers keep repeats)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    value = headers.get(name)
    return [] if value is None else [value]


def from_headers(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(traceparent, tracestate) to keep with a message, or Nones."""
    parents = _all(headers, "traceparent")
    if len(parents) != 1:  # none, or several: invalid per the spec
        return None, None
    value = parents[0].strip()
    match = _TRACEPARENT.fullmatch(value) if len(value) <= MAX_TRACEPARENT else None
    if match is None:
        return None, None
    version, trace_id, parent_id, _, rest = match.groups()
    if (
        version == "ff"
        or (version == "00" and rest is not None)
        or trace_id == "0" * 32
        or parent_id == "0" * 16
    ):
        return None, None
    # Several tracestate headers are one list, joined with commas.
    state = ",".join(v.strip() for v in _all(headers, "tracestate")).strip(",")
    if not state or len(state) > MAX_TRACESTATE or not _TRACESTATE.fullmatch(state):
        return value, None
    return value, state


def for_message(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(traceparent, tracestate) to store with a message: the sender's, or
    with tracing on the current (ingest) span's, with the sender's tracestate."""
    traceparent, tracestate = from_headers(headers)
    tracer = tracing.active
    if tracer is not None:
        traceparent = tracer.current_traceparent() or traceparent
    return traceparent, tracestate
