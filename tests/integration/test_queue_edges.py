"""Edge cases of the lane scripts found in review: each a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from router.queue import envelope
from router.queue.enqueue import Target, enqueue
from router.queue.keys import DestinationKeys
from router.queue.lanes import DestinationQueue, Outcome
from router.queue.sharded_queue import ShardedQueue
from tests.support.queues import body, destination_queue, store


@pytest.fixture()
async def queue(clean_redis: str) -> AsyncIterator[DestinationQueue]:
    async with destination_queue(clean_redis, "edge") as opened:
        yield opened


async def test_replayed_dead_letters_keep_their_order(queue: DestinationQueue) -> None:
    await store(queue, "k", "m0", "m1", "m2")
    for _ in range(2):  # m0 then m1 die
        (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
        assert (await queue.fail(claim, 0, "boom", Outcome.DEAD_LETTER)).attempts == 1
    assert await ShardedQueue(queue.redis, queue.scripts, "edge").replay_oldest() == 2
    lane = await queue.redis.lrange(DestinationKeys("edge").lane("k"), 0, -1)
    assert [body(raw) for raw in lane] == ["m0", "m1", "m2"]


async def test_replay_keeps_the_order_when_a_worker_claims_between_letters(
    queue: DestinationQueue,
) -> None:
    """Letters of one key replayed in separate steps, a worker claiming the
    first in between, messages of the same millisecond around: the lane
    stays in arrival order (found by the dashboard's browser test: replayed
    newest first, each to the head, dead-2 went out before dead-1)."""
    await store(queue, "k", "d1", "d2", "d3", "new")  # likely one millisecond
    for _ in range(3):
        (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
        assert (await queue.fail(claim, 0, "boom", Outcome.DEAD_LETTER)).attempts == 1
        await asyncio.sleep(0.002)  # dead_at in ms: one tick apart
    dead = [raw for raw, _ in await queue.dead_letters()]
    assert await queue.replay(dead[0])
    (claim,) = (await queue.claim("w", 1, 30_000, 10)).claims  # d1 out to the bot at once
    assert body(claim.head) == "d1"
    assert await queue.replay(dead[1])
    assert await queue.replay(dead[2])
    lane = await queue.redis.lrange(queue.keys.lane("k"), 0, -1)
    assert [body(raw) for raw in lane] == ["d1", "d2", "d3", "new"]
    assert await queue.lane_length("k") == (await queue.figures()).messages == 4
    # The head's ack still matches what the worker holds (marked envelope).
    assert envelope.decode(claim.head).id == envelope.decode(lane[0]).id
    assert not (await queue.ack(claim, claim.head, 30_000, keep=False)).lease_lost
    assert await queue.lane_length("k") == 3


async def test_a_key_s_letters_replayed_together_go_back_in_one_step(
    queue: DestinationQueue,
) -> None:
    await store(queue, "k", "d1", "d2", "new")
    for _ in range(2):
        (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
        assert (await queue.fail(claim, 0, "boom", Outcome.DEAD_LETTER)).attempts == 1
        await asyncio.sleep(0.002)
    (claim,) = (await queue.claim("w", 1, 30_000, 10)).claims  # "new" is in flight
    assert body(claim.head) == "new"
    replayed = await ShardedQueue(queue.redis, queue.scripts, "edge").replay_oldest()
    assert replayed == 2
    lane = await queue.redis.lrange(queue.keys.lane("k"), 0, -1)
    assert [body(raw) for raw in lane] == ["new", "d1", "d2"]  # never ahead of the head in flight


async def test_dead_letters_of_several_shards_list_and_replay_oldest_first(
    queue: DestinationQueue,
) -> None:
    """A sharded destination's dead letters are one list to the operator:
    merged oldest first, replayed into each key's own shard, in order."""
    shards = ShardedQueue(queue.redis, queue.scripts, "edge", 4)
    keys = ["a", "b", "c", "d", "e", "f"]
    assert len({shards.of_key(k).keys.tag for k in keys}) > 1  # the keys span shards
    for i, key in enumerate(keys):
        shard = shards.of_key(key)
        await store(shard, key, f"{key}0")
        (claim,) = (await shard.claim("t", 1, 30_000, 10)).claims
        assert claim.key == key
        assert (await shard.fail(claim, 0, f"boom {i}", Outcome.DEAD_LETTER)).attempts == 1
        await asyncio.sleep(0.003)  # dead_at is in ms: one tick apart
    for key in keys:
        await store(shards.of_key(key), key, f"{key}1")
    dead = await shards.dead_letters(0, 10)
    assert [d.error for _, d in dead] == [f"boom {i}" for i in range(6)]
    assert [d.key for _, d in await shards.dead_letters(2, 2)] == ["c", "d"]
    assert (await shards.figures()).dead == 6
    assert await shards.replay_oldest(3) == 3
    for key in keys[:3]:
        lane = await queue.redis.lrange(shards.of_key(key).keys.lane(key), 0, -1)
        assert [body(raw) for raw in lane] == [f"{key}0", f"{key}1"]
    assert [d.key for _, d in await shards.dead_letters()] == ["d", "e", "f"]


async def test_a_busy_key_does_not_keep_its_claim_past_a_due_backoff(
    queue: DestinationQueue,
) -> None:
    """With one slot, key a keeps flowing while b waits out a backoff; once b
    is due, a's ack hands the slot back so a claim can sweep b in."""
    await store(queue, "b", "b0")
    (b,) = (await queue.claim("t1", 1, 30_000, 1)).claims
    await queue.fail(b, 50, "later", Outcome.RETRY)
    await store(queue, "a", "a0", "a1", "a2")
    (a,) = (await queue.claim("t2", 1, 30_000, 1)).claims
    nxt = (await queue.ack(a, a.head, 30_000, keep=True)).next_head
    assert nxt is not None and body(nxt) == "a1"  # b not due yet: a keeps going
    await asyncio.sleep(0.1)
    assert (await queue.ack(a, nxt, 30_000, keep=True)).next_head is None  # b is due: give way
    claimed = (await queue.claim("t3", 1, 30_000, 1)).claims
    assert [c.key for c in claimed] == ["b"]


async def test_max_age_gives_an_unblocked_message_its_try(
    queue: DestinationQueue, start_router, bot
) -> None:
    """A message older than max_age is still tried once, and again after an
    operator unblocks it, instead of being blocked again untried."""
    from tests.support.bot import Answer
    from tests.support.servers import wait_until

    keys = DestinationKeys("chatbot")
    real = DestinationQueue(queue.redis, queue.scripts, "chatbot")
    old_ms = int(time.time() * 1000) - 60_000
    message_id = envelope.new_message_id(old_ms)
    raw = envelope.encode(message_id, old_ms, b'{"mensaje":"old","wa_id":"k"}')
    await enqueue(queue.scripts, [Target(keys, "k")], raw, message_id, None, 60)
    bot.decide = lambda m, n: Answer(status=500)
    start_router(bot.url, retry={"initial": "50ms", "max_age": "10s", "on_exhausted": "block"})
    await asyncio.to_thread(wait_until, lambda: len(bot.received) == 1, 10, "one try")
    for _ in range(50):
        if await real.blocked_keys():
            break
        await asyncio.sleep(0.05)
    assert list(await real.blocked_keys()) == ["k"]
    assert len(bot.received) == 1

    bot.decide = lambda m, n: Answer()
    assert await real.unblock("k")
    await asyncio.to_thread(wait_until, lambda: bot.acked_messages("k") == ["old"], 10)
    assert len(bot.received) == 2


async def test_a_key_in_ready_twice_is_claimed_once(queue: DestinationQueue) -> None:
    """A Redis that lost part of the state may hold a key in ready twice:
    one claim takes it once (both copies popped in one step), and a copy
    left behind while its key is leased is dropped, never a second lease."""
    await store(queue, "k", "m0", "m1")
    await store(queue, "j", "n0")
    await queue.redis.rpush(queue.keys.ready, "k")  # ready: k, j, k
    claims = (await queue.claim("t", 10, 30_000, 10)).claims
    assert sorted(c.key for c in claims) == ["j", "k"]
    assert await queue.redis.llen(queue.keys.ready) == 0
    assert await queue.redis.zcard(queue.keys.leases) == 2
    await queue.redis.rpush(queue.keys.ready, "k")  # k is leased
    assert (await queue.claim("u", 10, 30_000, 10)).claims == []
    assert await queue.redis.hget(queue.keys.owner, "k") == b"t"
    (k,) = [c for c in claims if c.key == "k"]
    assert not (await queue.ack(k, k.head, 30_000, keep=False)).lease_lost
    assert await queue.lane_length("k") == 1
