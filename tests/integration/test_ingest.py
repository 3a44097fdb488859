"""Ingest: bad input gets a clear 4xx JSON answer and stores nothing; good
input is stored byte for byte, once per Idempotency-Key; Redis away is a 503."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from redis import Redis

from router.redis.embedded import EmbeddedRedis
from tests.support.messages import assert_refused, stored_bodies, stored_count, stored_keys
from tests.support.routes import KEYS, STORE, routes_file
from tests.support.servers import ServerThread, free_port, serve

OK = {"mensaje": "hola", "wa_id": "44912345678"}
ONE_MIB = 1024 * 1024


def post(url: str, content: bytes | str, **kwargs: object) -> httpx.Response:
    return httpx.post(url + STORE, content=content, timeout=10, **kwargs)  # type: ignore[arg-type]


def nested(levels: int) -> bytes:
    """A valid message whose extra field nests `levels` arrays deep."""
    return b'{"mensaje":"x","wa_id":"1","deep":' + b"[" * levels + b"]" * levels + b"}"


def with_fields(**fields: object) -> bytes:
    return json.dumps({**OK, **fields}).encode()


REFUSED: list[tuple[str, bytes, list[str]]] = [
    ("invalid JSON", b'{"mensaje": "x", "wa_id":', ["invalid JSON"]),
    ("not JSON at all", b"hello", ["invalid JSON"]),
    ("trailing garbage", json.dumps(OK).encode() + b"}", ["invalid JSON"]),
    ("array", b'[{"mensaje": "x", "wa_id": "1"}]', ["JSON object", "array"]),
    ("string", b'"hola"', ["JSON object", "string"]),
    ("number", b"42", ["JSON object", "number"]),
    ("null", b"null", ["JSON object", "null"]),
    ("boolean", b"true", ["JSON object"]),
    ("missing mensaje", b'{"wa_id": "1"}', ["missing field `mensaje`"]),
    ("missing wa_id", b'{"mensaje": "x"}', ["missing field `wa_id`"]),
    ("empty object", b"{}", ["missing field"]),
    ("mensaje number", with_fields(mensaje=5), ["`mensaje`", "string"]),
    ("mensaje float", with_fields(mensaje=1.5), ["`mensaje`", "string"]),
    ("mensaje bool", with_fields(mensaje=True), ["`mensaje`", "string"]),
    ("mensaje null", with_fields(mensaje=None), ["`mensaje`", "string"]),
    ("mensaje object", with_fields(mensaje={"text": "x"}), ["`mensaje`", "string"]),
    ("mensaje array", with_fields(mensaje=["x"]), ["`mensaje`", "string"]),
    ("wa_id number", with_fields(wa_id=44912345678), ["`wa_id`", "string"]),
    ("wa_id bool", with_fields(wa_id=False), ["`wa_id`", "string"]),
    ("wa_id null", with_fields(wa_id=None), ["`wa_id`", "string"]),
    ("wa_id object", with_fields(wa_id={"id": "1"}), ["`wa_id`", "string"]),
    ("wa_id empty", with_fields(wa_id=""), ["`wa_id`", "empty"]),
    ("wa_id too long", with_fields(wa_id="9" * 300), ["`wa_id`", "longer"]),
    ("nested 100 levels", nested(100), ["nested deeper"]),
    ("nested 100000 levels", nested(100_000), ["nested deeper"]),
    (
        "nested objects",
        b'{"mensaje":"x","wa_id":"1","d":' + b'{"a":' * 50 + b"1" + b"}" * 51,
        ["nested deeper"],
    ),
    ("invalid UTF-8 in wa_id", b'{"mensaje": "x", "wa_id": "\xff\xfe"}', ["UTF-8"]),
    ("invalid UTF-8 elsewhere", b'{"mensaje": "x\xc3\x28", "wa_id": "1"}', ["UTF-8"]),
    ("latin-1 body", '{"mensaje": "añejo", "wa_id": "1"}'.encode("latin-1"), ["UTF-8"]),
    ("lone surrogate in wa_id", rb'{"mensaje": "x", "wa_id": "\ud800"}', ["invalid JSON"]),
    ("lone low surrogate", rb'{"mensaje": "x", "wa_id": "a\udc00b"}', ["invalid JSON"]),
    ("surrogate at the end", rb'{"mensaje": "x", "wa_id": "\ud800', ["invalid JSON"]),
    ("NUL byte", b"\x00", ["invalid JSON"]),
    ("empty body", b"", ["empty"]),
    ("only whitespace", b"  \r\n\t ", ["empty"]),
    ("number out of range", b'{"mensaje":"x","wa_id":"1","n":1e999999}', ["invalid JSON"]),
]


@pytest.mark.parametrize(
    ("body", "words"), [(b, w) for _, b, w in REFUSED], ids=[n for n, _, _ in REFUSED]
)
def test_bad_body_is_refused_with_400_and_nothing_stored(
    api: str, redis: Redis, body: bytes, words: list[str]
) -> None:
    r = post(api, body, headers={"content-type": "application/json"})
    assert_refused(r, 400, *words)
    assert stored_keys(redis) == []


def test_bad_idempotency_key_is_refused(api: str, redis: Redis) -> None:
    r = post(api, json.dumps(OK), headers={"Idempotency-Key": ""})
    assert_refused(r, 400, "Idempotency-Key", "empty")
    r = post(api, json.dumps(OK), headers={"Idempotency-Key": "k" * 300})
    assert_refused(r, 400, "Idempotency-Key", "longer")
    assert stored_keys(redis) == []


def test_body_over_the_default_1mib_limit_is_413(api: str, redis: Redis) -> None:
    padding = "x" * ONE_MIB
    r = post(api, json.dumps({**OK, "pad": padding}))
    assert_refused(r, 413, "too large")
    assert stored_keys(redis) == []
    # Just under the limit is fine.
    body = json.dumps({**OK, "pad": ""}).encode()
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (ONE_MIB - len(body)) + b'"')
    assert len(body) == ONE_MIB
    assert post(api, body).status_code == 200
    assert stored_count(redis) == 1


def test_body_over_the_limit_sent_chunked_is_413(api: str, redis: Redis) -> None:
    """No Content-Length to check up front: the limit holds while reading."""

    def chunks() -> Iterator[bytes]:
        yield b'{"mensaje": "x", "wa_id": "1", "pad": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    r = httpx.post(api + STORE, content=chunks(), timeout=10)
    assert_refused(r, 413, "too large")
    assert stored_keys(redis) == []


def test_route_max_body_is_enforced(start_router, redis: Redis, tmp_path: Path) -> None:
    router = start_router(
        "http://127.0.0.1:9/bot",
        routes_file=routes_file(tmp_path / "small.yaml", max_body="100B"),
        workers=False,
    )
    r = router.post({**OK, "pad": "x" * 100})
    assert_refused(r, 413, "too large")
    assert stored_keys(redis) == []
    assert router.post(OK).status_code == 200
    assert stored_count(redis) == 1


def _answer(r: httpx.Response) -> tuple[int, list[tuple[str, str]], str]:
    """An answer without what differs between two requests (date, message id)."""
    headers = [(k, v) for k, v in r.headers.multi_items() if k != "date"]
    return r.status_code, headers, re.sub(r"msg_[0-9a-f]+", "msg_X", r.text)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (json.dumps(OK).encode(), {}),
        (json.dumps(OK).encode(), {"Idempotency-Key": "same"}),
        (json.dumps(OK).encode(), {"Idempotency-Key": ""}),
        (b'{"mensaje": "x", "wa_id":', {}),
        (b'{"wa_id": "1"}', {}),
        (b"", {}),
        (b"x" * (ONE_MIB + 1), {}),
    ],
    ids=["stored", "duplicate", "bad key", "invalid JSON", "missing field", "empty", "too large"],
)
def test_the_raw_ingest_path_answers_as_litestar_does(
    api: str, body: bytes, headers: dict[str, str]
) -> None:
    # A POST to the route's own path takes the raw ASGI path (router.http.raw);
    # with a trailing slash it goes through Litestar's handler.
    if headers.get("Idempotency-Key"):
        post(api, body, headers=headers)  # both are then duplicates
    raw = post(api, body, headers=headers)
    litestar = httpx.post(api + STORE + "/", content=body, headers=headers, timeout=10)
    assert _answer(raw) == _answer(litestar)
    assert raw.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/v1/nope", "/", "/v1/store_message/extra", "/v2/store_message"])
def test_unknown_path_is_404_json(api: str, redis: Redis, path: str) -> None:
    assert_refused(httpx.post(api + path, json=OK), 404, "no route")
    assert_refused(httpx.get(api + path), 404, "no route")
    assert stored_keys(redis) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_json(api: str, redis: Redis, method: str) -> None:
    r = httpx.request(method, api + STORE, json=OK)
    assert_refused(r, 405, "method not allowed")
    assert "POST" in r.headers["allow"]
    assert stored_keys(redis) == []


def test_extra_fields_pass_through_byte_identical(api: str, redis: Redis) -> None:
    body = (
        '{ "wa_id" : "44912345678",\n  "mensaje":"¡hola! 👋 \\u00e9\\n",'
        ' "extra": {"nested": [1, 2.50, null, true], "big": 123456789012345678901234567890},'
        ' "mensaje_id": "wamid.X", "empty": {}, "dup": 1, "dup": 2 }'
    ).encode()
    r = post(api, body, headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok" and r.json()["duplicate"] is False
    lane = redis.lrange(KEYS.lane("44912345678"), 0, -1)
    assert len(lane) == 1
    assert stored_bodies(redis) == [body]


def test_same_idempotency_key_stores_once(api: str, redis: Redis) -> None:
    headers = {"Idempotency-Key": "order-1"}
    first = post(api, json.dumps(OK), headers=headers)
    again = post(api, json.dumps({**OK, "mensaje": "changed"}), headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["duplicate"] is False
    assert again.json() == {"status": "ok", "id": first.json()["id"], "duplicate": True}
    assert stored_bodies(redis) == [json.dumps(OK).encode()]
    # Another key is another message.
    other = post(api, json.dumps(OK), headers={"Idempotency-Key": "order-2"})
    assert other.json()["duplicate"] is False and other.json()["id"] != first.json()["id"]
    assert stored_count(redis) == 2


def test_concurrent_posts_with_one_idempotency_key_store_once(api: str, redis: Redis) -> None:
    body = json.dumps(OK)
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=50)) as client:

        def send(_: int) -> httpx.Response:
            return client.post(api + STORE, content=body, headers={"Idempotency-Key": "same"})

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(send, range(50)))
    assert [a.status_code for a in answers] == [200] * 50
    assert sum(a.json()["duplicate"] for a in answers) == 49
    assert len({a.json()["id"] for a in answers}) == 1
    assert stored_count(redis) == 1


def test_health_endpoints(api: str, redis: Redis) -> None:
    r = httpx.get(api + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(api + "/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert r.json()["redis"] == "ok"


def assert_unavailable(r: httpx.Response) -> None:
    body = assert_refused(r, 503, "Redis unreachable")
    # "no" when the write never left the router (no connection); "unknown"
    # when it went out on a pooled connection that Redis had dropped.
    if body["stored"] == "no":
        assert "the message was not stored" in body["error"]
    else:
        assert body["stored"] == "unknown" and "Idempotency-Key" in body["error"]
    assert float(r.headers["retry-after"]) > 0


def test_redis_unreachable_is_503_quickly(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    server = serve(dead, routes_file(tmp_path / "routes.yaml"))
    try:
        for _ in range(3):
            started = time.monotonic()
            r = post(server.url, json.dumps(OK))
            assert time.monotonic() - started < 5
            assert_unavailable(r)
        assert httpx.get(server.url + "/healthz").status_code == 200
        ready = httpx.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready"
        assert ready.json()["redis"].startswith("Redis unreachable")
    finally:
        server.stop()


def test_router_recovers_when_redis_comes_back(tmp_path: Path) -> None:
    valkey = EmbeddedRedis(tmp_path / "data", port=free_port(), appendfsync="always")
    valkey.start()
    server: ServerThread | None = None
    try:
        server = serve(valkey.url, routes_file(tmp_path / "routes.yaml"))
        assert post(server.url, json.dumps(OK)).status_code == 200

        valkey.kill()
        for _ in range(3):
            started = time.monotonic()
            assert_unavailable(post(server.url, json.dumps(OK)))
            assert time.monotonic() - started < 5
        assert httpx.get(server.url + "/readyz", timeout=10).status_code == 503

        valkey = EmbeddedRedis(tmp_path / "data", port=valkey.port, appendfsync="always")
        valkey.start()
        # The router reconnects by itself: the very next request is stored.
        for i in range(3):
            r = post(server.url, json.dumps({**OK, "mensaje": f"after{i}"}))
            assert r.status_code == 200, r.text
        assert httpx.get(server.url + "/readyz").status_code == 200
        client = Redis.from_url(valkey.url)
        try:
            # appendfsync always: the message acknowledged before the crash survived it.
            assert client.llen(KEYS.lane(OK["wa_id"])) == 4
        finally:
            client.close()
    finally:
        if server is not None:
            server.stop()
        valkey.stop()
