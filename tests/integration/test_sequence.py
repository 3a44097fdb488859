"""Sequence numbers (`X-Router-Sequence`): 1, 2, 3... per destination and
ordering key in arrival order, the same on every retry, kept by a replay,
continued across a restart, none for a duplicate, none for a message stored
before numbers existed; new ones in the target of a move. Real Redis, real
HTTP destinations on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from router.queue import envelope, moving
from router.queue.enqueue import Pending, Target, enqueue_many
from router.queue.keys import DestinationKeys
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from tests.support.bot import Answer, Bot, Received, serving_bot
from tests.support.messages import (
    interleaved,
    post_concurrently,
    post_message,
    previous_envelope,
)
from tests.support.processes import RouterProcess
from tests.support.routes import KEYS, STORE, write_routes
from tests.support.servers import serve, wait_until

FAST_RETRY = {"initial": "20ms", "factor": 1, "max_delay": "20ms", "jitter": 0}
SEQUENCE = "x-router-sequence"


def numbers(received: list[Received], key: str) -> list[tuple[str, int]]:
    """(message, its sequence number) of each request for `key`, in order."""
    return [
        (r.body["mensaje"], int(r.headers[SEQUENCE])) for r in received if r.body["wa_id"] == key
    ]


def expected(messages: list[str]) -> list[tuple[str, int]]:
    return [(m, i) for i, m in enumerate(messages, start=1)]


@pytest.fixture()
def second_bot() -> Iterator[Bot]:
    with serving_bot() as b:
        yield b


def two_destinations(path: Path, first: str, second: str) -> Path:
    """One route to two destinations (chatbot, crm), ordered by wa_id."""
    settings = {
        "plugin": "chatbot",
        "ordering_key": "wa_id",
        "max_in_flight": 8,
        "timeout": "2s",
        "lease": "5s",
        "retry": FAST_RETRY,
    }
    config = {
        "routes": [
            {
                "path": STORE,
                "destinations": ["chatbot", "crm"],
                "fields": {"mensaje": "string", "wa_id": "string"},
            }
        ],
        "destinations": {
            "chatbot": {**settings, "url": first},
            "crm": {**settings, "url": second},
        },
    }
    path.write_text(json.dumps(config))
    return path


def test_numbers_follow_arrival_per_key_and_destination(
    clean_redis: str, bot: Bot, second_bot: Bot, tmp_path: Path
) -> None:
    bot.latency = second_bot.latency = (0.0, 0.005)
    routes = two_destinations(tmp_path / "routes.yaml", bot.url, second_bot.url)
    server = serve(clean_redis, routes, run_workers=True)
    try:
        sent = interleaved([f"3460000{i}" for i in range(6)], 8)
        post_concurrently(server.url, sent)
        for b in (bot, second_bot):
            wait_until(lambda b=b: len(b.acknowledged()) >= 48, timeout=20, what="deliveries")
    finally:
        server.stop()
    for b in (bot, second_bot):
        assert len(b.received) == 48
        for key, messages in sent.items():
            assert numbers(b.received, key) == expected(messages)


def test_a_retry_carries_the_same_number(start_router, bot: Bot) -> None:
    def decide(message: dict[str, Any], n: int) -> Answer:
        # (Asked before the bot records the request: its first attempt only.)
        if message["mensaje"] == "m1" and not bot.attempts_of("m1"):
            return Answer(status=500, body={"status": "error"})
        return Answer()

    bot.decide = decide
    router = start_router(bot.url, retry=FAST_RETRY)
    for m in ("m0", "m1", "m2"):
        post_message(router.url, "k", m)
    wait_until(lambda: len(bot.acknowledged()) >= 3, timeout=10, what="deliveries")
    assert numbers(bot.received, "k") == [("m0", 1), ("m1", 2), ("m1", 2), ("m2", 3)]
    assert [r.headers["x-router-attempt"] for r in bot.attempts_of("m1")] == ["1", "2"]


def test_a_replayed_dead_letter_keeps_its_number(
    start_router, bot: Bot, redis: Redis, clean_redis: str
) -> None:
    accept = False

    def decide(message: dict[str, Any], n: int) -> Answer:
        if message["mensaje"] == "poison" and not accept:
            return Answer(status=500, body={"status": "error"})
        return Answer()

    bot.decide = decide
    router = start_router(bot.url, retry={**FAST_RETRY, "max_attempts": 1})
    for m in ("first", "poison", "after"):
        post_message(router.url, "k", m)
    wait_until(lambda: bot.acked_messages("k") == ["first", "after"], what="the key goes on")
    [raw] = redis.lrange(KEYS.dead, 0, -1)
    letter = json.loads(raw)
    assert letter["seq"] == 2
    assert json.loads(letter["envelope"])["body"]["mensaje"] == "poison"  # a bare envelope

    accept = True

    async def replay() -> int:
        client = AsyncRedis.from_url(clean_redis)
        try:
            return await ShardedQueue(client, Scripts(client), "chatbot", 1).replay_oldest()
        finally:
            await client.aclose()

    assert asyncio.run(replay()) == 1
    wait_until(lambda: "poison" in bot.acked_messages("k"), timeout=10, what="the replay")
    post_message(router.url, "k", "later")
    wait_until(lambda: "later" in bot.acked_messages("k"), timeout=10, what="a later message")
    assert numbers(bot.acknowledged(), "k") == [
        ("first", 1),
        ("after", 3),
        ("poison", 2),
        ("later", 4),
    ]


def test_a_restarted_router_continues_the_sequence(
    clean_redis: str, bot: Bot, tmp_path: Path
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url, retry=FAST_RETRY)
    router = RouterProcess(
        tmp_path / "router.log",
        die_with_parent=True,
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
    )
    router.start()
    try:
        for m in ("a0", "a1"):
            post_message(router.url, "k", m)
        wait_until(lambda: len(bot.acknowledged()) >= 2, timeout=10, what="deliveries")
        router.terminate()
        router.start()
        for m in ("a2", "a3"):
            post_message(router.url, "k", m)
        wait_until(lambda: len(bot.acknowledged()) >= 4, timeout=10, what="deliveries")
    finally:
        router.terminate()
    assert numbers(bot.received, "k") == expected(["a0", "a1", "a2", "a3"])


def test_a_duplicate_takes_no_number(start_router, bot: Bot) -> None:
    router = start_router(bot.url)
    once = {"Idempotency-Key": "order-1"}
    for body, headers in (
        ({"mensaje": "d0", "wa_id": "k"}, once),
        ({"mensaje": "d0", "wa_id": "k"}, once),  # the sender's retry: a duplicate
        ({"mensaje": "d1", "wa_id": "k"}, {}),
    ):
        r = httpx.post(router.url + STORE, json=body, headers=headers)
        assert r.status_code == 200, r.text
    wait_until(lambda: len(bot.acknowledged()) >= 2, timeout=10, what="deliveries")
    assert numbers(bot.received, "k") == [("d0", 1), ("d1", 2)]


def test_a_message_stored_before_numbers_is_delivered_without_one(
    start_router, bot: Bot, redis: Redis
) -> None:
    # As the enqueue script of a version before sequence numbers stored it:
    # the bare envelope in the lane, the key ready.
    message_id = envelope.new_message_id()
    body = json.dumps({"mensaje": "old", "wa_id": "k"}).encode()
    redis.rpush(KEYS.lane("k"), previous_envelope(message_id, int(time.time() * 1000), body))
    redis.rpush(KEYS.ready, "k")
    redis.hincrby(KEYS.counts, "messages", 1)
    router = start_router(bot.url)
    post_message(router.url, "k", "new")
    wait_until(lambda: len(bot.acknowledged()) >= 2, timeout=10, what="deliveries")
    old, new = bot.received
    assert old.body["mensaje"] == "old" and SEQUENCE not in old.headers
    assert old.headers["idempotency-key"] == message_id
    assert new.body["mensaje"] == "new" and new.headers[SEQUENCE] == "1"


# -- at the queue level --------------------------------------------------------


def lane_numbers(redis: Redis, keys: DestinationKeys, key: str) -> list[tuple[str, int | None]]:
    out = []
    for raw in redis.lrange(keys.lane(key), 0, -1):
        number, env = envelope.decode_entry(raw)
        out.append((json.loads(bytes(env.body))["m"], number))
    return out


def test_one_request_of_several_messages_numbers_them_in_order(
    redis: Redis, clean_redis: str
) -> None:
    a, b = DestinationKeys("a"), DestinationKeys("b")

    def pending(m: str, key: str, *keys: DestinationKeys) -> Pending:
        message_id = envelope.new_message_id()
        raw = envelope.encode(message_id, int(time.time() * 1000), json.dumps({"m": m}).encode())
        return Pending([Target(k, key) for k in keys], raw, message_id, f"dedup-{m}")

    async def store(messages: list[Pending]) -> None:
        client = AsyncRedis.from_url(clean_redis)
        try:
            await enqueue_many(Scripts(client), messages, 60)
        finally:
            await client.aclose()

    asyncio.run(store([pending("m0", "x", a, b), pending("m1", "y", a), pending("m2", "x", a, b)]))
    # The same request again (a sender's retry): duplicates take no number.
    asyncio.run(store([pending("m0", "x", a, b), pending("m3", "x", b)]))
    assert lane_numbers(redis, a, "x") == [("m0", 1), ("m2", 2)]
    assert lane_numbers(redis, a, "y") == [("m1", 1)]
    assert lane_numbers(redis, b, "x") == [("m0", 1), ("m2", 2), ("m3", 3)]
    assert redis.hgetall(a.seq) == {b"x": b"2", b"y": b"1"}


def test_moved_messages_take_new_numbers_from_the_target(redis: Redis, clean_redis: str) -> None:
    source, target = DestinationKeys("old"), DestinationKeys("new")

    async def run() -> None:
        client = AsyncRedis.from_url(clean_redis)
        scripts = Scripts(client)
        try:

            async def store(keys: DestinationKeys, *ms: str) -> None:
                for m in ms:
                    message_id = envelope.new_message_id()
                    raw = envelope.encode(message_id, 0, json.dumps({"m": m}).encode())
                    await enqueue_many(
                        scripts, [Pending([Target(keys, "k")], raw, message_id, None)], 60
                    )

            await store(target, "t0", "t1")
            await store(source, "s0", "s1", "s2")
            # s0 dead-lettered at the source (as fail.lua does: number apart).
            head = await client.lpop(source.lane("k"))
            number, env = envelope.split_entry(head)
            letter = {"key": "k", "envelope": env.decode(), "error": "e", "attempts": 1}
            await client.rpush(source.dead, json.dumps({**letter, "dead_at": 0, "seq": number}))
            await client.hincrby(source.counts, "messages", -1)
            src = ShardedQueue(client, scripts, "old", 1)
            dst = ShardedQueue(client, scripts, "new", 1)
            assert await moving.replay_dead_into(scripts, src, "old", dst, "new", None) == 1
            done = await moving.move_queued(scripts, src, "old", dst, "new")
            assert done.messages == 2 and not done.in_flight
            # The counters stay with the source, a purge of its queue included:
            # its numbers are never given again.
            assert await client.hget(source.seq, "k") == b"3"
            await moving.purge_queued(scripts, src)
            assert await client.hget(source.seq, "k") == b"3"
        finally:
            await client.aclose()

    asyncio.run(run())
    assert lane_numbers(redis, target, "k") == [
        ("t0", 1),
        ("t1", 2),
        ("s0", 3),
        ("s1", 4),
        ("s2", 5),
    ]
