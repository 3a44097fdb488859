"""Messages: posting them to a router (one, or many keys in a defined order)
or storing them in a lane directly, and what came of it: the router's
answer, what sits in Redis."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from redis import Redis

from router.queue import envelope
from router.queue.enqueue import Target, enqueue
from router.queue.envelope import decode
from router.queue.keys import DestinationKeys, destinations_key
from router.queue.scripts import Scripts
from tests.support.routes import KEYS, STORE


def post_message(url: str, key: str, mensaje: str) -> None:
    """Post one message to the router at `url`; it must be stored (200)."""
    r = httpx.post(url + STORE, json={"mensaje": mensaje, "wa_id": key})
    assert r.status_code == 200, r.text


def interleaved(keys: list[str], per_key: int) -> dict[str, list[str]]:
    """The messages each key will send, in order: "<key>-<n>"."""
    return {k: [f"{k}-{i}" for i in range(per_key)] for k in keys}


def post_concurrently(
    url: str,
    sent: dict[str, list[str]],
    path: str = STORE,
    keys_at_once: int | None = None,
    keep_alive: bool = True,
) -> None:
    """Post every key's messages concurrently across keys (at most
    `keys_at_once` keys at a time, default all), one after the other within
    a key (each waits for the previous answer), so the per-key order of
    arrival is the order of `sent`. Without `keep_alive`, a connection per
    request: no request can go out on a connection the server is closing.
    A 503 saying the message was not stored is retried, as a sender does;
    anything else but a 200 fails."""
    limit = asyncio.Semaphore(keys_at_once or len(sent) or 1)

    async def one_key(client: httpx.AsyncClient, key: str, messages: list[str]) -> None:
        async with limit:
            for m in messages:
                for wait in (0.1, 0.2, 0.4, 0.8, 0):
                    r = await client.post(path, json={"mensaje": m, "wa_id": key})
                    # What a sender does with the documented 503 "stored": "no"
                    # (a loaded machine's Redis did not answer in time): the
                    # message was not stored, so it is sent again, before the
                    # key's next one (its order holds).
                    if r.status_code != 503 or r.json().get("stored") != "no" or not wait:
                        break
                    await asyncio.sleep(wait)
                assert r.status_code == 200, r.text

    async def run() -> None:
        # An idle expiry well under the server's keep-alive timeout (uvicorn:
        # 5 s): with equal timeouts a request can go out on a connection the
        # server is closing at that moment (ReadError, seen in CI).
        connections = min(len(sent), keys_at_once or len(sent)) or 1
        limits = httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=None if keep_alive else 0,
            keepalive_expiry=1.0,
        )
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
            await asyncio.gather(*(one_key(client, k, ms) for k, ms in sent.items()))

    asyncio.run(run())


def post_round_robin(url: str, sent: dict[str, list[str]]) -> None:
    """Post sequentially, key after key per round (a defined global order)."""
    longest = max(len(ms) for ms in sent.values())
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(longest):
            for key, messages in sent.items():
                if i < len(messages):
                    r = client.post(STORE, json={"mensaje": messages[i], "wa_id": key})
                    assert r.status_code == 200, r.text


async def enqueue_json(scripts: Scripts, keys: DestinationKeys, key: str, value: Any) -> str:
    """Store `value` (as JSON, received now) at the end of `key`'s lane, as
    ingest does; returns the message id."""
    now_ms = int(time.time() * 1000)  # one clock read, as ingest: the id carries the ts
    message_id = envelope.new_message_id(now_ms)
    raw = envelope.encode(message_id, now_ms, json.dumps(value).encode())
    await enqueue(scripts, [Target(keys, key)], raw, message_id, None, 60)
    return message_id


def previous_envelope(
    message_id: str, ts_ms: int, body: bytes, tp: str | None = None, tst: str | None = None
) -> bytes:
    """An envelope exactly as the previous version encoded it, `ts` always
    written after the id (written out here, not with today's encoder): what
    a router upgraded in place finds in its lanes and dead letters."""
    trace = b""
    if tp is not None:
        trace += b',"tp":%s' % json.dumps(tp).encode()
        if tst is not None:
            trace += b',"tst":%s' % json.dumps(tst).encode()
    return b'{"id":%s,"ts":%d,"body":%s%s}' % (json.dumps(message_id).encode(), ts_ms, body, trace)


# -- what the router answered and stored ---------------------------------------


def stored_keys(redis: Redis) -> list[bytes]:
    """Every key in the database but the bookkeeping a router writes when it
    starts: the registry of destination names (router.queue.orphans) and each
    queue's counts while they say it is empty (recount.lua): what requests
    stored."""
    out = []
    for k in redis.scan_iter(count=1000):
        if k == destinations_key().encode():
            continue
        if k.endswith(b":counts") and int(redis.hget(k, "messages") or 0) == 0:
            continue
        out.append(k)
    return out


def lane_keys(redis: Redis) -> list[bytes]:
    return list(redis.scan_iter(match=KEYS.lane_prefix + "*", count=1000))


def stored_count(redis: Redis) -> int:
    """How many messages sit in the chatbot destination's lanes."""
    return sum(int(redis.llen(k)) for k in lane_keys(redis))


def stored_bodies(redis: Redis) -> list[bytes]:
    out = []
    for k in lane_keys(redis):
        out += [bytes(decode(raw).body) for raw in redis.lrange(k, 0, -1)]
    return out


def assert_refused(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """A JSON error body with the status, naming the problem with `words`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["status"] == "error", body
    assert isinstance(body["error"], str) and body["error"], body
    for word in words:
        assert word.lower() in body["error"].lower(), (word, body)
    return dict(body)
