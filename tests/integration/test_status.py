"""Status figures (router status, metrics, dashboard) against what the lanes
really hold: the counts the scripts keep must never drift from the lanes,
whatever sequence of transitions runs."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from router.queue import envelope
from router.queue.enqueue import Target, enqueue
from router.queue.inspection import QueueFigures
from router.queue.lanes import Claim, DestinationQueue, Outcome
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from tests.support.bot import Answer, Bot
from tests.support.messages import enqueue_json
from tests.support.routes import KEYS as ROUTE_KEYS
from tests.support.routes import STORE, write_routes
from tests.support.servers import serve, wait_until

KEYS = ["a", "b", "c", "d", "e"]


@pytest.fixture()
async def client(clean_redis: str) -> AsyncIterator[AsyncRedis]:
    redis = AsyncRedis.from_url(clean_redis)
    try:
        yield redis
    finally:
        await redis.aclose()


async def truth(queue: DestinationQueue) -> tuple[int, int | None]:
    """Messages in the lanes and the oldest head's arrival, by walking them."""
    total, oldest = 0, None
    async for lane in queue.redis.scan_iter(match=queue.keys.lane_prefix + "*"):
        items = await queue.redis.lrange(lane, 0, -1)
        total += len(items)
        if items:
            ts = envelope.decode(items[0]).ts
            oldest = ts if oldest is None else min(oldest, ts)
    return total, oldest


async def test_counts_follow_the_lanes_through_any_sequence_of_transitions(
    client: AsyncRedis,
) -> None:
    for sequence in range(3):
        await _random_transitions(client, random.Random(sequence), f"counted{sequence}")


async def _random_transitions(client: AsyncRedis, rng: random.Random, name: str) -> None:
    queue = DestinationQueue(client, Scripts(client), name)
    other = DestinationQueue(client, Scripts(client), name + "-other")  # fan-out's second
    other_stored = 0
    acked = 0
    for step in range(300):
        op = rng.choice(
            ["store", "store", "fan_out", "claim_ack", "claim_fail", "replay", "unblock", "retry"]
        )
        if op == "store":
            await enqueue_json(queue.scripts, queue.keys, rng.choice(KEYS), f"m{step}")
            continue
        if op == "fan_out":
            # Two destinations at once, with a dedup id sometimes repeated:
            # a duplicate counts nowhere.
            dedup = f"d{rng.randrange(20)}"
            raw = envelope.encode(envelope.new_message_id(), int(time.time() * 1000), b"{}")
            targets = [Target(queue.keys, rng.choice(KEYS)), Target(other.keys, "o")]
            result = await enqueue(queue.scripts, targets, raw, f"id{step}", dedup, 60)
            other_stored += not result.duplicate
            assert (await other.figures()).messages == other_stored
            continue
        if op == "replay":
            dead = await queue.dead_letters(0, 5)
            if dead:
                await queue.replay(rng.choice(dead)[0])
            continue
        if op == "unblock":
            blocked = list(await queue.blocked_keys())
            if blocked:
                await queue.unblock(rng.choice(blocked))
            continue
        if op == "retry":
            await queue.retry_now([])
            continue
        claimed = (await queue.claim(f"t{step}", 2, 30_000, 10)).claims
        for claim in claimed:
            # A replay while the key is leased goes right behind its head.
            dead = await queue.dead_letters(0, 5)
            if dead and rng.random() < 0.3:
                await queue.replay(rng.choice(dead)[0])
            stale = Claim(claim.key, claim.head, claim.attempts, "stale-token")
            if op == "claim_ack":
                # A duplicate delivery's ack or fail (the lease is someone
                # else's) changes nothing.
                assert (await queue.ack(stale, claim.head, 30_000, keep=False)).lease_lost
                result = await queue.ack(claim, claim.head, 30_000, keep=rng.random() < 0.5)
                acked += 1
                if result.next_head is not None:  # the claim went on: give it back
                    await queue.release(claim)
            else:
                outcome = rng.choice(list(Outcome))
                assert (await queue.fail(stale, 0, "late", outcome)).lease_lost
                await queue.fail(claim, rng.choice([0, 60_000]), "boom", outcome)
        figures = await queue.figures()
        assert (figures.messages, figures.oldest_arrival_ms) == await truth(queue), step
        assert figures.acked == acked
        assert figures.dead == await client.llen(queue.keys.dead)


async def test_a_queue_without_counts_is_counted_once_at_start(client: AsyncRedis) -> None:
    """A queue stored by an earlier version has lanes but no counts; this
    version may store a message before anything counts: recount builds them
    from the lanes, once, whatever came first."""
    queue = DestinationQueue(client, Scripts(client), "legacy")
    k = queue.keys
    for i, key in enumerate(KEYS * 3):  # as the earlier enqueue.lua stored them
        raw = envelope.encode(envelope.new_message_id(), int(time.time() * 1000), b"%d" % i)
        if await client.rpush(k.lane(key), raw) == 1:
            await client.rpush(k.ready, key)
    (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
    await queue.fail(claim, 60_000, "later", Outcome.RETRY)  # one key waiting
    (claim,) = (await queue.claim("t2", 1, 30_000, 10)).claims  # one key in flight
    await enqueue_json(queue.scripts, k, "new", "after the upgrade")  # counts: 1 of 16
    assert (await queue.figures()).messages == 1  # what an upgrade would show without it
    assert await queue.recount() == 16
    figures = await queue.figures()
    assert (figures.messages, figures.oldest_arrival_ms) == await truth(queue)
    assert await queue.recount() == -2  # never again: the scripts keep them now

    # An older process acknowledging alongside (a rolling upgrade) pops
    # without counting: `router recount` (force) sets it right again.
    await client.lpop(k.lane("new"))
    await client.zrem(k.heads, "new")
    assert (await queue.figures()).messages == 16
    assert await queue.recount(force=True) == 15
    assert (await queue.figures()).messages == 15


async def test_retry_makes_waiting_keys_due_now_keeping_their_attempts(
    client: AsyncRedis,
) -> None:
    queues = ShardedQueue(client, Scripts(client), "retried", shards=3)
    for key in KEYS:
        shard = queues.of_key(key)
        await enqueue_json(shard.scripts, shard.keys, key, key)
        (claim,) = (await shard.claim("t", 1, 30_000, 10)).claims
        await shard.fail(claim, 3_600_000, "down", Outcome.RETRY)  # an hour away
    assert (await queues.figures()).delayed == 5
    assert await queues.retry_now(["a", "nobody"]) == 1
    state = await queues.key_state("a")
    assert (state.state, state.attempts, state.last_error) == ("ready", 1, "down")
    assert await queues.retry_now() == 4
    figures = await queues.figures()
    assert (figures.delayed, figures.ready) == (0, 5)
    claims = []  # each claimable at once, as its next attempt
    for shard in queues.shards:
        claims += (await shard.claim("t2", 10, 30_000, 10)).claims
    assert sorted((c.key, c.attempts) for c in claims) == [(k, 1) for k in KEYS]


async def test_one_conversation_can_be_looked_at(client: AsyncRedis) -> None:
    queue = DestinationQueue(client, Scripts(client), "looked")
    before = int(time.time() * 1000)
    first = await enqueue_json(queue.scripts, queue.keys, "k", "one")
    await enqueue_json(queue.scripts, queue.keys, "k", "two")
    state = await queue.key_state("k")
    assert (state.state, state.messages, state.head_id, state.attempts) == ("ready", 2, first, 0)
    assert state.head_arrival_ms is not None and state.head_arrival_ms >= before
    (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
    assert (await queue.key_state("k")).state == "in flight"
    await queue.fail(claim, 30_000, "HTTP 500", Outcome.RETRY)
    state = await queue.key_state("k")
    assert (state.state, state.attempts, state.last_error) == ("waiting", 1, "HTTP 500")
    assert state.next_try_ms is not None and state.next_try_ms >= before + 30_000
    assert (await queue.key_state("nobody")).state == "empty"


async def test_purge_deletes_the_oldest_dead_letters_over_all_shards(
    client: AsyncRedis,
) -> None:
    queues = ShardedQueue(client, Scripts(client), "purged", shards=2)
    for key in KEYS:
        shard = queues.of_key(key)
        await enqueue_json(shard.scripts, shard.keys, key, key)
        (claim,) = (await shard.claim("t", 1, 30_000, 10)).claims
        await shard.fail(claim, 0, f"dead {key}", Outcome.DEAD_LETTER)
        await asyncio.sleep(0.002)  # dead_at is in ms: one tick apart
    assert await queues.purge_dead(2) == 2
    assert [d.key for _, d in await queues.dead_letters()] == ["c", "d", "e"]
    assert await queues.purge_dead() == 3
    figures = await queues.figures()
    assert (figures.dead, figures.messages) == (0, 0)


def test_figures_add_up_over_shards() -> None:
    one = QueueFigures(3, 1, 1, 1, 0, 2, 2_000, 10, False)
    two = QueueFigures(4, 2, 0, 1, 1, 0, 1_000, 5, True)
    total = QueueFigures.total([one, two])
    assert (total.messages, total.oldest_arrival_ms, total.acked, total.paused) == (
        7,
        1_000,
        15,
        True,
    )
    assert total.oldest_age(4_000) == 3.0


AUTH = {"Authorization": "Bearer admin-secret"}


def test_admin_api_shows_a_conversation_retries_and_purges(
    clean_redis: str, bot: Bot, tmp_path: Path, redis: Redis
) -> None:
    down = {"on": True}
    bot.decide = lambda m, n: Answer(500) if down["on"] or m["mensaje"] == "poison" else Answer()
    routes = write_routes(
        tmp_path / "routes.yaml", bot.url, retry={"initial": "60s", "max_delay": "60s"}
    )
    with serve(clean_redis, routes, run_workers=True, admin_token="admin-secret") as server:
        admin = server.url + "/admin/destinations/chatbot"
        for key in ("a/1", "b 2", "c"):
            r = httpx.post(server.url + STORE, json={"mensaje": f"to {key}", "wa_id": key})
            assert r.status_code == 200
        wait_until(lambda: redis.zcard(ROUTE_KEYS.delayed) == 3, what="three keys backing off")
        figures = httpx.get(server.url + "/admin/destinations", headers=AUTH).json()["chatbot"]
        assert (figures["messages"], figures["delayed"], figures["acknowledged"]) == (3, 3, 0)

        key = httpx.get(admin + "/key", params={"key": "a/1"}, headers=AUTH).json()
        assert (key["state"], key["attempts"], key["messages"]) == ("waiting", 1, 1)
        assert "HTTP 500" in key["last_error"]

        for bad in (b"{", b'{"keys": []}', b'{"keys": "a/1"}', b'{"key": ["a/1"]}'):
            refused = httpx.post(admin + "/retry", content=bad, headers=AUTH)
            assert refused.status_code == 400 and "keys" in refused.json()["error"], bad
        assert redis.zcard(ROUTE_KEYS.delayed) == 3  # a refused request changed nothing

        down["on"] = False
        one = httpx.post(admin + "/retry", json={"keys": ["a/1", "nobody"]}, headers=AUTH)
        assert one.json() == {"status": "ok", "retried": 1}
        wait_until(lambda: bot.acked_messages("a/1") == ["to a/1"], what="a/1 at once")
        assert redis.zcard(ROUTE_KEYS.delayed) == 2  # the others still wait
        rest = httpx.post(admin + "/retry", headers=AUTH)
        assert rest.json() == {"status": "ok", "retried": 2}
        wait_until(lambda: len(bot.acknowledged()) == 3, what="the rest at once")

        # Purge: the oldest N, then all; count checked.
        redis.delete(ROUTE_KEYS.counts)  # (the counts of the dead entries below are not the point)
        for i in range(3):
            redis.rpush(
                ROUTE_KEYS.dead,
                json.dumps(
                    {"key": "k", "envelope": "{}", "error": "e", "attempts": 1, "dead_at": i}
                ),
            )
        assert httpx.post(admin + "/dead/purge?count=0", headers=AUTH).status_code == 400
        assert httpx.post(admin + "/dead/purge?count=2", headers=AUTH).json()["purged"] == 2
        assert json.loads(redis.lindex(ROUTE_KEYS.dead, 0))["dead_at"] == 2
        assert httpx.post(admin + "/dead/purge", headers=AUTH).json()["purged"] == 1
        assert redis.llen(ROUTE_KEYS.dead) == 0
        assert httpx.post(admin + "/dead/purge", headers={}).status_code == 401
