"""Envelopes as stored, read by the scripts: a new one leaves out its
arrival time when its id carries it (router.queue.envelope), and a lane may
still hold what the previous version stored (with `ts`, numbered or from
before numbers). Every script that reads an arrival time (the `heads` of
a lane, the message log's received_at, coalescing's window, a replay's
place) reads the same time from either, and never a `ts` of the body.
Real Redis, the router's own scripts; then a router delivering both."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from redis import Redis

from router.config import MessageLogSettings
from router.queue import envelope, message_log
from router.queue.enqueue import Target, enqueue
from router.queue.lanes import DestinationQueue, Outcome
from tests.support.bot import Bot
from tests.support.messages import post_message, previous_envelope
from tests.support.queues import destination_queue
from tests.support.routes import KEYS
from tests.support.servers import wait_until

POLICY = message_log.policy(MessageLogSettings(), 0, 1)
# A body with a "ts" of its own after the envelope's id: the scripts once
# took the first ,"ts": they met, which was the envelope's only while it had one.
TRICKY = b'{"mensaje":"new","wa_id":"k","ts":5}'


@pytest.fixture()
async def queue(clean_redis: str) -> AsyncIterator[DestinationQueue]:
    async with destination_queue(clean_redis, "layout") as opened:
        opened.log = MessageLogSettings()
        yield opened


async def store_new(queue: DestinationQueue, key: str, body: bytes, arrival: int) -> str:
    """A message stored by ingest's path today (enqueue.lua, the log on)."""
    message_id = envelope.new_message_id(arrival)
    raw = envelope.encode(message_id, arrival, body)
    assert b'"ts"' not in raw.replace(body, b"")  # the new layout
    await enqueue(queue.scripts, [Target(queue.keys, key, POLICY)], raw, message_id, None, 60)
    return message_id


async def store_previous(queue: DestinationQueue, key: str, entry: bytes, arrival: int) -> None:
    """An entry as the previous version's enqueue.lua left it (lane, ready,
    heads, counts), its number already taken from `seq` by the caller."""
    r = queue.redis
    if await r.rpush(queue.keys.lane(key), entry) == 1:
        await r.rpush(queue.keys.ready, key)
        await r.zadd(queue.keys.heads, {key: arrival})
    await r.hincrby(queue.keys.counts, "messages", 1)


async def head_arrival(queue: DestinationQueue, key: str) -> int | None:
    score = await queue.redis.zscore(queue.keys.heads, key)
    return None if score is None else int(score)


async def take(queue: DestinationQueue, key: str) -> tuple[int | None, envelope.Envelope]:
    """Claim `key` and acknowledge its head; the head's number and envelope."""
    (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
    assert claim.key == key
    sequence, env = envelope.decode_entry(claim.head)
    assert not (await queue.ack(claim, claim.head, 30_000, False)).lease_lost
    return sequence, env


async def test_a_lane_holding_both_layouts_reads_each_arrival(queue: DestinationQueue) -> None:
    now = int(time.time() * 1000)
    a0, a1 = now - 60_000, now - 30_000
    before_numbers = envelope.new_message_id(a0)
    numbered = envelope.new_message_id(a1)
    await store_previous(queue, "k", previous_envelope(before_numbers, a0, b'{"m":0}'), a0)
    await queue.redis.hset(queue.keys.seq, "k", 1)
    await store_previous(queue, "k", b"1:" + previous_envelope(numbered, a1, b'{"m":1}'), a1)
    new_id = await store_new(queue, "k", TRICKY, now)
    # The log's received_at and `logged` score: the id's time, not the body's 5.
    story = await message_log.story(queue.redis, queue.keys, new_id)
    assert story is not None and (story.received_at, story.seq) == (now, 2)
    assert await queue.redis.zscore(queue.keys.logged, new_id) == now
    assert await head_arrival(queue, "k") == a0

    assert await take(queue, "k") == (
        None,
        envelope.decode(previous_envelope(before_numbers, a0, b'{"m":0}')),
    )
    assert await head_arrival(queue, "k") == a1  # track_head on the previous layout
    # The numbered one dies, and is replayed in front of the new one.
    (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
    await queue.fail(claim, 0, "boom", Outcome.DEAD_LETTER)
    assert await head_arrival(queue, "k") == now  # the new layout: from the id
    ((dead, letter),) = await queue.dead_letters()
    assert (letter.seq, envelope.decode(letter.envelope.encode()).ts) == (1, a1)
    assert await queue.replay(dead)
    assert await head_arrival(queue, "k") == a1
    sequence, env = await take(queue, "k")
    assert (sequence, env.id, env.ts) == (1, numbered, a1)
    sequence, env = await take(queue, "k")
    assert (sequence, env.id, env.ts, bytes(env.body)) == (2, new_id, now, TRICKY)
    assert await head_arrival(queue, "k") is None


async def test_a_new_letter_replayed_keeps_its_arrival_and_place(queue: DestinationQueue) -> None:
    """replay.lua marks the envelope ({"rp":1,...}) and places it by arrival."""
    now = int(time.time() * 1000)
    first = await store_new(queue, "k", b'{"m":"d1"}', now - 2_000)
    await store_new(queue, "k", b'{"m":"d2"}', now - 1_000)
    for _ in range(2):
        (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
        await queue.fail(claim, 0, "boom", Outcome.DEAD_LETTER)
    await store_new(queue, "k", TRICKY, now)
    dead = [raw for raw, _ in await queue.dead_letters()]
    assert await queue.replay(dead[1])
    assert await queue.replay(dead[0])  # older: goes in front of d2
    assert await head_arrival(queue, "k") == now - 2_000
    lane = await queue.redis.lrange(queue.keys.lane("k"), 0, -1)
    assert [json.loads(bytes(envelope.decode(e).body))["m"] for e in lane[:2]] == ["d1", "d2"]
    assert lane[0].startswith(b'1:{"rp":1,"id":"%s","body":' % first.encode())
    sequence, env = await take(queue, "k")
    assert (sequence, env.id, env.ts) == (1, first, now - 2_000)
    assert await head_arrival(queue, "k") == now - 1_000


async def test_coalescing_waits_from_the_arrival_the_id_carries(queue: DestinationQueue) -> None:
    now = int(time.time() * 1000)
    await store_new(queue, "fresh", TRICKY, now)
    (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
    assert await queue.gather(claim, 60_000, 10) == now + 60_000  # due: arrival + window
    # One that waited longer than the window goes at once, either layout.
    old = envelope.new_message_id(now - 120_000)
    await store_previous(queue, "old", previous_envelope(old, now - 120_000, b"{}"), now - 120_000)
    await store_new(queue, "new", b"{}", now - 120_000)
    for _ in range(2):
        (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
        group = await queue.gather(claim, 60_000, 10)
        assert isinstance(group, list) and len(group) == 1, (claim.key, group)


def test_a_router_delivers_what_the_previous_version_stored(
    start_router, bot: Bot, redis: Redis
) -> None:
    """Upgraded in place: the previous version's numbered entry (with its
    ts) is delivered first with its number, then a new message the next."""
    arrival = int(time.time() * 1000) - 5_000
    message_id = envelope.new_message_id(arrival)
    body = json.dumps({"mensaje": "old", "wa_id": "k"}).encode()
    redis.rpush(KEYS.lane("k"), b"1:" + previous_envelope(message_id, arrival, body))
    redis.hset(KEYS.seq, "k", 1)
    redis.rpush(KEYS.ready, "k")
    redis.zadd(KEYS.heads, {"k": arrival})
    redis.hincrby(KEYS.counts, "messages", 1)
    router = start_router(bot.url)
    post_message(router.url, "k", "new")
    wait_until(lambda: len(bot.acknowledged()) >= 2, timeout=10, what="deliveries")
    old, new = bot.received
    assert (old.body["mensaje"], old.headers["x-router-sequence"]) == ("old", "1")
    assert old.headers["idempotency-key"] == message_id
    assert (new.body["mensaje"], new.headers["x-router-sequence"]) == ("new", "2")
    # Both acknowledged in Redis too (the bot answers before the router's ack).
    wait_until(lambda: not redis.keys(KEYS.lane_prefix + "*"), timeout=10, what="the acks")
