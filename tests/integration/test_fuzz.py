"""Fuzzing the running router: whatever arrives, never a 5xx, and a message
is stored exactly when the answer was 200 (and not a duplicate)."""

from __future__ import annotations

import json
import socket
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis

from tests.support.messages import stored_count
from tests.support.routes import KEYS, STORE

# -- the router under test -------------------------------------------------


@dataclass
class Target:
    url: str
    client: httpx.Client
    stored: int = 0  # messages the router said it stored


@pytest.fixture()
def target(api: str, redis: Redis) -> Iterator[Target]:
    with httpx.Client(base_url=api, timeout=10) as client:
        yield Target(api, client)


# -- what gets posted ------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)

# Field values: mostly plausible, sometimes any JSON value.
texts = st.text(max_size=30) | st.text(string.digits, min_size=1, max_size=15)
field_values = texts | texts | json_values

messages = st.builds(
    lambda m, w, extra, drop: {
        **extra,
        **{k: v for k, v in {"mensaje": m, "wa_id": w}.items() if k not in drop},
    },
    field_values,
    field_values,
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    st.sets(st.sampled_from(["mensaje", "wa_id"]), max_size=2) | st.just(set()),
)


# Bodies the router must take: string fields, any extra fields.
valid_messages = st.builds(
    lambda m, w, extra: {**extra, "mensaje": m, "wa_id": w},
    st.text(max_size=50),
    st.text(min_size=1, max_size=40),
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


surrogates = st.text(
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3
)


@st.composite
def broken_unicode(draw: st.DrawFn) -> bytes:
    """Lone surrogates as escapes, or raw as CESU bytes, or invalid UTF-8 bytes."""
    text = draw(surrogates)
    kind = draw(st.sampled_from(["escape", "raw", "bytes", "latin1"]))
    if kind == "escape":
        value = "".join(f"\\u{ord(c):04x}" for c in text)
        return f'{{"mensaje": "x", "wa_id": "{value}"}}'.encode()
    if kind == "raw":
        return f'{{"mensaje": "{text}", "wa_id": "1"}}'.encode("utf-8", "surrogatepass")
    if kind == "latin1":
        return '{"mensaje": "añejo ü", "wa_id": "1"}'.encode("latin-1")
    invalid = [b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]
    junk = draw(st.sampled_from(invalid)) + draw(st.binary(max_size=6))
    return b'{"mensaje": "' + junk + b'", "wa_id": "1"}'


@st.composite
def huge_numbers(draw: st.DrawFn) -> bytes:
    digits = draw(st.integers(min_value=300, max_value=20_000))
    number = draw(
        st.sampled_from(
            ["9" * digits, "-" + "9" * digits, "1e999999", "-1e-999999", "1." + "5" * digits]
        )
    )
    where = draw(st.sampled_from(["extra", "wa_id", "top"]))
    if where == "top":
        return number.encode()
    if where == "wa_id":
        return f'{{"mensaje": "x", "wa_id": {number}}}'.encode()
    return f'{{"mensaje": "x", "wa_id": "1", "n": {number}}}'.encode()


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=1, max_value=50_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    balanced = draw(st.booleans())
    inner = opener * depth + b"1" + closer * (depth if balanced else depth // 2)
    if draw(st.booleans()):
        return inner
    return b'{"mensaje": "x", "wa_id": "1", "deep": ' + inner + b"}"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with bytes flipped, cut or inserted."""
    body = bytearray(encode(draw(messages)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(body)))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "cut":
            del body[i:]
        elif op == "insert":
            body[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif i < len(body):
            body[i] = draw(st.integers(0, 255))
    return bytes(body)


bodies = st.one_of(
    valid_messages.map(encode),
    valid_messages.map(encode),
    messages.map(encode),
    messages.map(encode),
    json_values.map(encode),
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    broken_unicode(),
    huge_numbers(),
    deep(),
    mutated(),
    st.sampled_from([b"", b" ", b"null", b"{}", b"[]", b'""', b"\x00", b"\xef\xbb\xbf{}"]),
)

content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "application/octet-stream",
            "*/*",
            ";;;",
            "",
        ]
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "/;=-+. ", max_size=40).map(str.strip),
)

idempotency_keys = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from(["k1", "k2"]),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=300),
)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, content_type=content_types, key=idempotency_keys)
def test_random_bodies_never_5xx_and_store_only_on_200(
    target: Target, redis: Redis, body: bytes, content_type: str | None, key: str | None
) -> None:
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if key is not None:
        headers["idempotency-key"] = key
    r = target.client.post(STORE, content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text)
    event(f"HTTP {r.status_code}")
    assert r.headers["content-type"].startswith("application/json"), r.headers
    answer = r.json()
    if r.status_code == 200:
        assert answer["status"] == "ok" and answer["id"].startswith("msg_")
        target.stored += not answer["duplicate"]
    else:
        assert 400 <= r.status_code < 500
        assert answer["status"] == "error" and answer["error"], answer
    assert stored_count(redis) == target.stored


# -- a client that sends half a body and stalls -----------------------------


def half_request(url: str, body: bytes, declared: int) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    head = (
        f"POST {STORE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def test_stalled_half_bodies_do_not_block_others_and_store_nothing(api: str, redis: Redis) -> None:
    # Each is a complete, valid message: only the declared length says more is coming.
    stalled = [
        half_request(api, encode({"mensaje": f"half{i}", "wa_id": "stalled"}), 1000)
        for i in range(10)
    ]
    try:
        with httpx.Client(base_url=api, timeout=5) as client:
            for i in range(20):
                started = time.monotonic()
                r = client.post(STORE, json={"mensaje": f"m{i}", "wa_id": "live"})
                assert r.status_code == 200, r.text
                assert time.monotonic() - started < 2
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
        assert redis.llen(KEYS.lane("stalled")) == 0
    finally:
        # Half of them just vanish; the other half say they are done sending.
        for i, sock in enumerate(stalled):
            if i % 2:
                sock.shutdown(socket.SHUT_WR)
            else:
                sock.close()
    for i, sock in enumerate(stalled):
        if i % 2:
            answer = _read_all(sock)
            sock.close()
            # Either no answer at all, or a 4xx for the incomplete body.
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    time.sleep(0.2)  # let the router finish with the closed connections
    assert redis.llen(KEYS.lane("stalled")) == 0
    assert stored_count(redis) == 20
    assert httpx.post(api + STORE, json={"mensaje": "after", "wa_id": "live"}).status_code == 200


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)
