"""jetstream: auto's reading of a failed stream lookup (docs/nats.md): only
"no stream" and "JetStream is off" publish to core NATS; JetStream there but
unavailable fails the attempt. The errors are nats-py's, made as it makes
them (APIError.from_error on the server's JSON, ServiceUnavailableError for
no responders)."""

from __future__ import annotations

from typing import Any

import nats.errors
import nats.js.errors
import pytest
from router_nats.sink import captures, stream_lookup_failure


def from_server(err: dict[str, Any]) -> nats.js.errors.APIError:
    """The error nats-py raises for the server's JSON `error`."""
    try:
        nats.js.errors.APIError.from_error(err)
    except nats.js.errors.APIError as e:
        return e
    raise AssertionError("from_error did not raise")


UNAVAILABLE = from_server(
    {"code": 503, "err_code": 10008, "description": "JetStream system temporarily unavailable"}
)
OFF_ACCOUNT = from_server(
    {"code": 503, "err_code": 10039, "description": "jetstream not enabled for account"}
)
OFF_SERVER = from_server({"code": 503, "err_code": 10076, "description": "jetstream not enabled"})
NO_RESPONDERS = nats.js.errors.ServiceUnavailableError()  # nats-py's _api_request
NOT_FOUND = nats.js.errors.NotFoundError()  # find_stream_name_by_subject: no stream


def outcome(error: BaseException, has: bool = True, seen: bool = False) -> str | None:
    return stream_lookup_failure(error, server_has_jetstream=has, stream_seen=seen)


def test_the_errors_are_nats_pys() -> None:
    assert type(UNAVAILABLE) is nats.js.errors.ServiceUnavailableError
    assert (UNAVAILABLE.code, UNAVAILABLE.err_code) == (503, 10008)


@pytest.mark.parametrize("has", [True, False])
def test_no_stream_or_jetstream_off_is_core(has: bool) -> None:
    for error in (NOT_FOUND, OFF_ACCOUNT, OFF_SERVER):
        assert outcome(error, has) is None
    assert outcome(NOT_FOUND, has, seen=True) is None  # a stream deleted


def test_no_responders_is_core_only_on_a_server_without_jetstream() -> None:
    assert outcome(NO_RESPONDERS, has=False) is None
    assert outcome(nats.errors.NoRespondersError(), has=False) is None
    reason = outcome(NO_RESPONDERS, has=True)
    assert reason is not None and "no responders" in reason


def test_jetstream_unavailable_fails_the_attempt() -> None:
    for has in (True, False):
        reason = outcome(UNAVAILABLE, has)
        assert reason is not None and "temporarily unavailable" in reason and "10008" in reason
    other = from_server({"code": 500, "err_code": 10999, "description": "boom"})
    assert outcome(other) is not None
    assert outcome(nats.js.errors.APIError()) is not None


def test_jetstream_gone_from_a_subject_a_stream_was_seen_on_fails() -> None:
    for error in (OFF_ACCOUNT, OFF_SERVER, NO_RESPONDERS):
        reason = outcome(error, has=False, seen=True)
        assert reason is not None and "not publishing to core" in reason


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("router.*", "router.449", True),
        ("router.*", "router.449.x", False),
        ("router.*", "router", False),
        ("router.>", "router.449.x", True),
        ("router.>", "router", False),
        ("router.449", "router.449", True),
        ("router.449", "router.44", False),
        ("*.449", "router.449", True),
        (">", "a.b.c", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
    ],
)
def test_a_stream_subject_captures_as_nats_matches(
    pattern: str, subject: str, expected: bool
) -> None:
    assert captures(pattern, subject) is expected


async def test_the_size_checked_is_what_nats_py_announces() -> None:
    """The sink refuses a message over max_payload before publishing it
    (the server would drop the connection every key shares): the size it
    counts, headers included, and the stream header added after the
    lookup, is the one nats-py's HPUB announces to the server."""
    from nats.aio.client import Client
    from router_nats.sink import encoded_size, header_size

    sent: list[bytes] = []
    client = Client()

    async def capture(command: bytes, priority: bool = False) -> None:
        sent.append(command)

    client._send_command = capture  # type: ignore[method-assign]  # what would go out
    client._flush_queue = None
    body = b'{"mensaje": "\xc3\xb1and\xc3\xba", "wa_id": "k"}'
    for value in ["44912345678", "  padded  ", "ñandú", "a\r\nb", "\tx\t", "\x85x\u2028", ""]:
        for stream in ["S", "RT_ñ", "STREAM_" + "x" * 200]:
            headers = {"Nats-Msg-Id": "msg_1", "X-Router-Key": value, "traceparent": value}
            counted = encoded_size(body, headers) + header_size("Nats-Expected-Stream", stream)
            headers["Nats-Expected-Stream"] = stream
            sent.clear()
            await client._send_publish("subject", "", body, len(body), headers)
            announced = int(sent[0].split(b"\r\n", 1)[0].split()[-1])  # HPUB ... <total>
            assert counted == announced, (value, stream)
