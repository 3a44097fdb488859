"""What probing the router as an attacker and as an unlucky operator found
(issue 6): each test failed before its fix. Real servers on loopback: the
router's own app under uvicorn, real valkey-servers (one per test where the
test changes the server's settings or freezes it), a real HTTP bot. (The
cases that need `router` as a process: tests/process/test_hardening.py.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from redis.asyncio import Redis as AsyncRedis

from router.queue import envelope
from router.queue.lanes import DestinationQueue
from router.queue.scripts import Scripts
from router.redis.embedded import EmbeddedRedis
from tests.support.bot import Answer, Bot
from tests.support.messages import enqueue_json, stored_count
from tests.support.routes import KEYS, STORE, routes_file, write_routes
from tests.support.servers import serve, wait_until

# -- 1. Retry-After never shortens the backoff -----------------------------


@pytest.mark.parametrize("retry_after", ["0", "-5", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_zero_or_past_retry_after_does_not_cause_a_retry_storm(
    start_router, bot: Bot, retry_after: str
) -> None:
    bot.decide = lambda m, n: Answer(
        status=429, body="slow down", headers={"Retry-After": retry_after}
    )
    router = start_router(
        bot.url, retry={"initial": "200ms", "factor": 2, "max_delay": "400ms", "jitter": 0}
    )
    assert router.post({"mensaje": "m", "wa_id": "1"}).status_code == 200
    time.sleep(2.0)
    # The policy allows attempts at 0, 0.2, 0.6, 1.0, 1.4, 1.8 s: at most 6
    # (before the fix: hundreds, one every few milliseconds).
    assert 2 <= len(bot.received) <= 7, len(bot.received)


# -- 2. A Redis that evicts keys -------------------------------------------


async def test_a_key_in_ready_twice_is_never_leased_twice(clean_redis: str) -> None:
    client = AsyncRedis.from_url(clean_redis)
    try:
        queue = DestinationQueue(client, Scripts(client), "edge")
        for name in ("m0", "m1"):
            await enqueue_json(queue.scripts, queue.keys, "k", name)
        await client.rpush(queue.keys.ready, "k", "k")  # what a lossy Redis left behind
        first = await queue.claim("t1", 5, 30_000, 10)
        assert [c.key for c in first.claims] == ["k"]
        # The stray copies are dropped, not handed to another worker.
        second = await queue.claim("t2", 5, 30_000, 10)
        assert second.claims == [] and second.ready_left == 0
        assert await client.hget(queue.keys.owner, "k") == b"t1"
    finally:
        await client.aclose()


# -- 3. A frozen Redis -----------------------------------------------------


# Without batching each concurrent request opens its own connection, whose
# handshake a frozen Redis never answers: "not stored" is certain for them.
# With batching, how many calls were still queued (certain) or already taken
# (unknown) when the deadline passed depends on timing: what is asserted
# there is only that every "no" is true.
@pytest.mark.serial
@pytest.mark.parametrize("batching", [False, True], ids=["alone", "batched"])
def test_a_frozen_redis_gets_503_within_the_deadline_and_says_what_is_certain(
    own_redis: EmbeddedRedis, tmp_path: Path, batching: bool
) -> None:
    db_url = own_redis.url.rsplit("/", 1)[0] + "/3"
    routes = routes_file(tmp_path / "routes.yaml")
    # A deadline far below the 3 s socket timeout (SOCKET_TIMEOUT), so that
    # telling the two apart holds on a loaded machine too.
    server = serve(db_url, routes, ingest_deadline=0.5, ingest_batching=batching)
    client = redis_sync.Redis.from_url(db_url)
    assert own_redis.process is not None
    try:
        wait_until(
            lambda: (
                httpx.post(server.url + STORE, json={"mensaje": "warm", "wa_id": "1"}).is_success
            ),
            what="ingest before the freeze",
        )

        async def post(i: int) -> tuple[str, float, httpx.Response]:
            key = f"frozen-{i}"
            async with httpx.AsyncClient(timeout=30) as http:
                started = time.monotonic()
                r = await http.post(
                    server.url + STORE,
                    json={"mensaje": key, "wa_id": "1"},
                    headers={"Idempotency-Key": key},
                )
                return key, time.monotonic() - started, r

        async def burst() -> list[tuple[str, float, httpx.Response]]:
            return await asyncio.gather(*(post(i) for i in range(20)))

        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            answers = asyncio.run(burst())
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        for _, took, r in answers:
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert took < 2.5, took  # the 0.5 s deadline, not the 3 s socket timeouts
            body = r.json()
            assert body["stored"] in ("no", "unknown")
            assert "did not answer within 0.5s" in body["error"]
        certain = [key for key, _, r in answers if r.json()["stored"] == "no"]
        if not batching:
            assert certain, "connections opened while Redis was frozen never sent the write"
        # Redis runs again: what the router called "not stored" is not stored.
        time.sleep(1.0)
        wait_until(
            lambda: (
                httpx.post(server.url + STORE, json={"mensaje": "after", "wa_id": "1"}).is_success
            ),
            what="ingest after the thaw",
        )
        stored = {
            json.loads(bytes(envelope.decode(raw).body))["mensaje"]
            for raw in client.lrange(KEYS.lane("1"), 0, -1)
        }
        assert not stored & set(certain)
        assert {"warm", "after"} <= stored  # and it writes to the configured database
    finally:
        server.stop()
        client.close()


# -- 4. Replayed Standard Webhooks ------------------------------------------


def test_a_replayed_standard_webhooks_request_is_stored_once(
    start_router, bot: Bot, redis: redis_sync.Redis, tmp_path: Path
) -> None:
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    routes = write_routes(
        tmp_path / "routes.yaml",
        bot.url,
        route={"auth": {"type": "standard-webhooks", "secret": secret}},
    )
    router = start_router(bot.url, routes_file=routes)
    body = b'{"mensaje": "hola", "wa_id": "1"}'
    ts = str(int(time.time()))
    mac = hmac.new(key, b"wh_1." + ts.encode() + b"." + body, hashlib.sha256).digest()
    headers = {
        "webhook-id": "wh_1",
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }
    answers = [router.post(body, headers=headers).json() for _ in range(3)]
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert len({a["id"] for a in answers}) == 1
    wait_until(lambda: len(bot.acknowledged()) == 1, what="the one delivery")
    time.sleep(0.5)
    assert len(bot.received) == 1


def test_an_idempotency_key_dedups_on_any_route(start_router, bot: Bot, redis: redis_sync.Redis):
    router = start_router(bot.url, workers=False)
    headers = {"Idempotency-Key": "k-1"}
    first = router.post({"mensaje": "a", "wa_id": "1"}, headers=headers).json()
    again = router.post({"mensaje": "a", "wa_id": "1"}, headers=headers).json()
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert stored_count(redis) == 1


def test_id_field_wins_and_messages_without_it_fall_back_to_the_header(
    start_router, bot: Bot, redis: redis_sync.Redis, tmp_path: Path
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url, route={"id_field": "message_id"})
    router = start_router(bot.url, routes_file=routes, workers=False)

    def post(message_id: str | None, header: str | None) -> dict[str, object]:
        body: dict[str, object] = {"mensaje": "a", "wa_id": "1"}
        if message_id is not None:
            body["message_id"] = message_id
        headers = {"Idempotency-Key": header} if header else {}
        answer = router.post(body, headers=headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    first = post("m-1", "k-1")
    # Same field, another header: the configured field decides.
    assert post("m-1", "k-2") == {**first, "duplicate": True}
    # Another field, the same header: a new message.
    assert post("m-2", "k-1")["duplicate"] is False
    # Without the field, the header is the id.
    assert post(None, "k-9")["duplicate"] is False
    assert post(None, "k-9")["duplicate"] is True
    # Neither: never a duplicate.
    assert post(None, None)["duplicate"] is False
    assert post(None, None)["duplicate"] is False
    assert stored_count(redis) == 5


# -- 7. Admin API and keys with `/` ------------------------------------------


def test_every_blocked_key_can_be_unblocked_through_the_admin_api(
    start_router, bot: Bot, redis: redis_sync.Redis, tmp_path: Path, clean_redis: str
) -> None:
    keys = ["a/b", "100%", "with space", "ünï/cödé ☃", "/", "..", "%2F"]
    healthy = False
    bot.decide = lambda m, n: Answer() if healthy else Answer(status=500)
    routes = write_routes(
        tmp_path / "routes.yaml",
        bot.url,
        retry={"initial": "20ms", "max_attempts": 1, "on_exhausted": "block"},
    )
    router = start_router(bot.url, routes_file=routes, workers=False)
    admin = serve(clean_redis, routes, admin_token="t0ken", run_workers=True)
    auth = {"Authorization": "Bearer t0ken"}
    try:
        for key in keys:
            assert router.post({"mensaje": f"m {key}", "wa_id": key}).status_code == 200
        wait_until(lambda: redis.hlen(KEYS.blocked) == len(keys), what="all keys blocked")
        listed = httpx.get(admin.url + "/admin/destinations/chatbot/blocked", headers=auth).json()
        assert set(listed["blocked"]) == set(keys)
        healthy = True
        for key in keys:
            r = httpx.post(
                admin.url + "/admin/destinations/chatbot/blocked/unblock",
                json={"key": key},
                headers=auth,
            )
            assert r.status_code == 200, (key, r.text)
        wait_until(lambda: len(bot.acknowledged()) == len(keys), what="every key delivered")
        missing = httpx.post(
            admin.url + "/admin/destinations/chatbot/blocked/unblock",
            json={"key": "a/b"},
            headers=auth,
        )
        assert missing.status_code == 404 and "not blocked" in missing.json()["error"]
        bad = httpx.post(
            admin.url + "/admin/destinations/chatbot/blocked/unblock", content=b"a/b", headers=auth
        )
        assert bad.status_code == 400 and bad.json()["status"] == "error"
    finally:
        admin.stop()


# -- 9. A Redis out of memory -------------------------------------------------


def test_a_full_redis_is_reported_as_out_of_memory(
    own_redis: EmbeddedRedis, tmp_path: Path, caplog
):
    client = redis_sync.Redis.from_url(own_redis.url)
    client.config_set("maxmemory", "2mb")  # noeviction, the default
    for i in range(2000):
        try:
            client.set(f"filler:{i}", "x" * 1000)
        except redis_sync.exceptions.OutOfMemoryError:
            break
    else:
        pytest.fail("the server never ran out of memory")
    routes = routes_file(tmp_path / "routes.yaml")
    server = serve(own_redis.url, routes)
    try:
        with caplog.at_level("WARNING", logger="router.api"):
            r = httpx.post(server.url + STORE, json={"mensaje": "m", "wa_id": "1"})
        assert r.status_code == 503
        assert "out of memory" in r.json()["error"] and r.json()["stored"] == "no"
        assert any("out of memory" in rec.getMessage() for rec in caplog.records)
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503 and "out of memory" in ready.json()["redis"]
        client.config_set("maxmemory", "0")
        assert httpx.get(server.url + "/readyz").status_code == 200
        assert (
            httpx.post(server.url + STORE, json={"mensaje": "m", "wa_id": "1"}).status_code == 200
        )
    finally:
        server.stop()
        client.close()


# -- 13. Smaller wrong answers -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"mensaje": "hola\xff", "wa_id": "1"}', "not valid UTF-8 (byte 17"),
        (
            b'{"mensaje": "\\ud800", "wa_id": "1"}',
            "lone UTF-16 surrogate escape \\ud800 at byte 13",
        ),
        (
            b'{"mensaje": "\\udc00 x", "wa_id": "1"}',
            "lone UTF-16 surrogate escape \\udc00 at byte 13",
        ),
    ],
)
def test_bad_bytes_are_named_where_they_are(start_router, bot: Bot, body: bytes, expected: str):
    router = start_router(bot.url, workers=False)
    r = router.post(body)
    assert r.status_code == 400 and expected in r.json()["error"], r.text


# -- 5. Unbounded answers from a destination ----------------------------------


class HugeAnswerBot:
    """A raw HTTP/1.1 server answering every POST with a 50 MB body that
    starts with `prefix`; it counts how many bytes it could send before the
    router hung up."""

    TOTAL = 50 * 1024 * 1024

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.requests: list[bytes] = []
        self.sent: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self.handle, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        written = 0
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            self.requests.append(await reader.readexactly(int(length.group(1)) if length else 0))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % self.TOTAL + self.prefix
            )
            written = len(self.prefix)
            block = b"x" * 65536
            while written < self.TOTAL:
                writer.write(block[: self.TOTAL - written])
                await writer.drain()
                written += min(len(block), self.TOTAL - written)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.sent.append(written)
            writer.close()

    def stop(self) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.parametrize(
    ("prefix", "acknowledged"),
    [(b'{"status": "ok", "pad": "', True), (b'{"status": "error", "detail": {"pad": "', False)],
)
def test_a_huge_answer_is_judged_on_its_first_bytes_and_never_read_whole(
    start_router, redis: redis_sync.Redis, prefix: bytes, acknowledged: bool
) -> None:
    bot = HugeAnswerBot(prefix)
    try:
        router = start_router(bot.url, retry={"initial": "10s"})
        assert router.post({"mensaje": "m", "wa_id": "1"}).status_code == 200
        wait_until(lambda: len(bot.sent) == 1, what="the answer cut short")
        # The router hung up after the first bytes (the rest of the 50 MB
        # was never read; what the kernel buffered on loopback is far less).
        assert bot.sent[0] < 16 * 1024 * 1024, bot.sent
        if acknowledged:
            wait_until(lambda: redis.llen(KEYS.lane("1")) == 0, what="the acknowledgement")
        else:
            wait_until(lambda: redis.hexists(KEYS.last_error, "1"), what="the failed attempt")
            assert "HTTP" not in redis.hget(KEYS.last_error, "1").decode()  # a 200 ...
            assert "status 'error'" in redis.hget(KEYS.last_error, "1").decode()  # ... saying error
        time.sleep(0.3)
        assert len(bot.requests) == 1  # no timeout, no redelivery
    finally:
        bot.stop()
