"""W3C Trace Context at ingest: valid headers kept as sent, invalid ones
ignored as the spec asks (never a refused message)."""

from __future__ import annotations

import pytest

from router.ingest.tracecontext import from_headers
from router.queue import envelope

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_and_its_tracestate_are_kept_as_sent() -> None:
    headers = {"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"}
    assert from_headers(headers) == (VALID, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    assert from_headers({"traceparent": VALID}) == (VALID, None)
    future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-later"
    assert from_headers({"traceparent": future}) == (future, None)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        VALID + "-extra",  # version 00 has exactly four fields
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        VALID + "\nX-Forged: 1",
    ],
)
def test_an_invalid_traceparent_is_ignored_with_its_tracestate(value: str) -> None:
    assert from_headers({"traceparent": value, "tracestate": "a=b"}) == (None, None)


def test_a_tracestate_without_traceparent_too_long_or_not_ascii_is_dropped() -> None:
    assert from_headers({"tracestate": "a=b"}) == (None, None)
    assert from_headers({"traceparent": VALID, "tracestate": "a=" + "b" * 600}) == (VALID, None)
    assert from_headers({"traceparent": VALID, "tracestate": "a=b\x1b[31m"}) == (VALID, None)
    # latin-1 decoded bytes: not sendable as they came
    assert from_headers({"traceparent": VALID, "tracestate": "a=\xe9x"}) == (VALID, None)
    assert from_headers({"traceparent": VALID, "tracestate": "a=b,\tc=d"}) == (VALID, "a=b,\tc=d")


def test_a_future_version_is_kept_but_bounded() -> None:
    long = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + "x" * 600
    assert from_headers({"traceparent": long}) == (None, None)


def test_repeated_headers_follow_the_spec() -> None:
    """Litestar's headers keep repeats: several traceparents are invalid,
    several tracestates are one list."""
    from litestar.datastructures import Headers

    def headers(*pairs: tuple[str, str]) -> Headers:  # as the ASGI scope carries them
        return Headers([(k.encode(), v.encode()) for k, v in pairs])

    two_parents = headers(("traceparent", VALID), ("traceparent", VALID))
    assert from_headers(two_parents) == (None, None)
    states = headers(("traceparent", VALID), ("tracestate", "a=1"), ("tracestate", "b=2"))
    assert from_headers(states) == (VALID, "a=1,b=2")


def test_an_envelope_without_trace_context_carries_no_extra_bytes() -> None:
    assert envelope.encode("msg_1", 5, b"{}") == b'{"id":"msg_1","ts":5,"body":{}}'
    with_trace = envelope.decode(envelope.encode("msg_1", 5, b"{}", VALID, "a=b"))
    assert (with_trace.tp, with_trace.tst) == (VALID, "a=b")
