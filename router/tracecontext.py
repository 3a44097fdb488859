"""W3C Trace Context (https://www.w3.org/TR/trace-context/): a
`traceparent` (and its `tracestate`) sent with a webhook is kept with the
message and sent on every delivery attempt, so the bot's traces join the
sender's.

An invalid `traceparent` is ignored, as the spec asks of a receiver (never
a 400: tracing must not cost a message), and so is a `tracestate` without
a valid `traceparent` or longer than the spec's 512 characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# version-traceid-parentid-flags; a future version may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?")
MAX_TRACESTATE = 512


def from_headers(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(traceparent, tracestate) to keep with a message, or Nones."""
    raw = headers.get("traceparent")
    if raw is None:
        return None, None
    value = raw.strip()
    match = _TRACEPARENT.fullmatch(value)
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
    state = headers.get("tracestate")
    if state is not None:
        state = state.strip()
        if not state or len(state) > MAX_TRACESTATE or not state.isprintable():
            state = None
    return value, state
