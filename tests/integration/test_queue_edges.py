"""Edge cases of the lane scripts found in review: each a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from router.queue import envelope
from router.queue.enqueue import Target, enqueue
from router.queue.keys import DestinationKeys
from router.queue.lanes import Claim, DestinationQueue, Outcome
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


async def test_an_ack_hands_its_slot_on_to_the_next_key_in_line(queue: DestinationQueue) -> None:
    """With keys waiting, an ack that may go on takes the first of them under
    the new token (the acked key goes to the back, as after a claim): the
    slot never goes back to the loop while the queue is busy, and the old
    token can no longer touch the key it handed on."""
    await store(queue, "a", "a0", "a1")
    await store(queue, "b", "b0")
    (a,) = (await queue.claim("t1", 1, 30_000, 1)).claims
    acked = await queue.ack(a, a.head, 30_000, keep=True, hand_on="t2")
    assert acked.next_head is None and acked.handed is not None
    b = acked.handed
    assert (b.key, body(b.head), b.attempts, b.token) == ("b", "b0", 0, "t2")
    assert await queue.redis.lrange(queue.keys.ready, 0, -1) == [b"a"]
    assert await queue.redis.zrange(queue.keys.leases, 0, -1) == [b"b"]
    assert await queue.redis.hgetall(queue.keys.owner) == {b"b": b"t2"}
    stale = Claim(b.key, b.head, 0, "t1")
    assert (await queue.ack(stale, b.head, 30_000, keep=True, hand_on="x")).lease_lost
    # b has nothing more: its ack hands the slot on to a's next message.
    acked = await queue.ack(b, b.head, 30_000, keep=True, hand_on="t3")
    assert acked.handed is not None and (acked.handed.key, body(acked.handed.head)) == ("a", "a1")
    # Nobody waiting: a keeps its claim (the same token), as before.
    await store(queue, "a", "a2")
    a = acked.handed
    acked = await queue.ack(a, a.head, 30_000, keep=True, hand_on="t4")
    assert acked.handed is None and acked.next_head is not None and body(acked.next_head) == "a2"
    assert await queue.redis.hgetall(queue.keys.owner) == {b"a": b"t3"}
    # Without a token (or when stopping: keep False) the slot is freed.
    await store(queue, "c", "c0")
    acked = await queue.ack(a, acked.next_head, 30_000, keep=True)
    assert acked.handed is None and acked.next_head is None
    assert await queue.redis.zcard(queue.keys.leases) == 0
    assert await queue.redis.lrange(queue.keys.ready, 0, -1) == [b"c"]


async def test_a_hand_on_gives_way_to_a_due_backoff_a_pause_and_the_rate_limit(
    queue: DestinationQueue,
) -> None:
    """Only claim.lua sweeps due backoffs and expired leases and decides
    while paused: then the slot is freed for it, the keys left in line."""
    await store(queue, "b", "b0")
    (b,) = (await queue.claim("t1", 1, 30_000, 2)).claims
    await queue.fail(b, 50, "later", Outcome.RETRY)
    await store(queue, "a", "a0")
    await store(queue, "c", "c0")
    (a,) = (await queue.claim("t2", 1, 30_000, 2)).claims
    await asyncio.sleep(0.1)  # b's backoff is due
    acked = await queue.ack(a, a.head, 30_000, keep=True, hand_on="t3")
    assert acked.handed is None and acked.next_head is None
    assert await queue.redis.lrange(queue.keys.ready, 0, -1) == [b"c"]
    assert [c.key for c in (await queue.claim("t4", 2, 30_000, 2)).claims] == ["b", "c"]

    await store(queue, "d", "d0")
    (c,) = [x for x in (await queue.claim("t5", 2, 30_000, 4)).claims if x.key == "d"] or [None]
    assert c is not None
    await queue.set_paused(True)
    acked = await queue.ack(c, c.head, 30_000, keep=True, hand_on="t6")
    assert acked.handed is None


async def test_a_hand_on_passes_over_what_a_claim_would_not_take(queue: DestinationQueue) -> None:
    """A key in ready twice (its copy leased) is dropped, a paused
    conversation parked, and a key with failures so far is handed on with
    its attempts counted, as claim.lua does."""
    await store(queue, "a", "a0")
    await store(queue, "p", "p0")
    await store(queue, "f", "f0")
    claims = (await queue.claim("t1", 3, 30_000, 3)).claims
    a, p, f = sorted(claims, key=lambda c: "apf".index(c.key))
    await queue.fail(f, 60_000, "boom", Outcome.RETRY)
    await queue.ack(p, p.head, 30_000, keep=False)
    await store(queue, "p", "p1")  # p: in ready again
    assert await queue.pause_key("p")
    assert await queue.retry_now(["f"]) == 1  # f: in ready, 1 attempt so far
    assert sorted(await queue.redis.lrange(queue.keys.ready, 0, -1)) == [b"f", b"p"]
    # In this order, behind a copy of the leased a:
    await queue.redis.delete(queue.keys.ready)
    await queue.redis.rpush(queue.keys.ready, "a", "p", "f")
    acked = await queue.ack(a, a.head, 30_000, keep=True, hand_on="t2")
    assert acked.handed is not None
    assert (acked.handed.key, body(acked.handed.head), acked.handed.attempts) == ("f", "f0", 1)
    assert await queue.redis.llen(queue.keys.ready) == 0
    assert [k.key for k in await queue.paused_keys()] == ["p"]
    assert await queue.redis.zrange(queue.keys.leases, 0, -1) == [b"f"]


async def test_a_retried_ack_whose_first_run_handed_the_slot_on_gets_the_hand_on(
    queue: DestinationQueue,
) -> None:
    """_settle retries an ack with the same arguments (the same hand-on
    token) when its reply is lost, or when the batcher reports NotReplicated
    for a script that ran (ROUTER_REDIS_WAIT). The first run already handed
    the slot to b under the new token: the retry must give the worker that
    claim, not LEASE_LOST, or b stays leased to nobody until its lease runs
    out and is then counted one attempt it never had."""
    await store(queue, "a", "a0")
    await store(queue, "b", "b0")
    (a,) = (await queue.claim("t1", 1, 30_000, 1)).claims
    first = await queue.ack(a, a.head, 30_000, keep=True, hand_on="t2")
    assert first.handed is not None and first.handed.key == "b"
    # The reply was lost: the same call again.
    retried = await queue.ack(a, a.head, 30_000, keep=True, hand_on="t2")
    assert not retried.lease_lost, "b is leased under t2, which no worker holds"
    assert retried.handed is not None and retried.handed.key == "b"


async def test_a_lost_ack_reply_costs_the_key_handed_on_no_attempt(
    queue: DestinationQueue,
) -> None:
    """However the retry of an ack whose reply was lost ends, the key the
    first run handed the slot on to reaches a worker with no attempt counted
    (it was never tried: a message at max_attempts - 1, or any message with
    max_attempts 1, would be given up untried)."""
    await store(queue, "a", "a0")
    await store(queue, "b", "b0")
    (a,) = (await queue.claim("t1", 1, 50, 1)).claims
    await queue.ack(a, a.head, 50, keep=True, hand_on="t2")  # its reply lost
    retried = await queue.ack(a, a.head, 50, keep=True, hand_on="t2")
    if retried.handed is None:  # b is nobody's: claimed again once its lease ran out
        await asyncio.sleep(0.1)
        (b,) = (await queue.claim("t3", 1, 30_000, 1)).claims
    else:
        b = retried.handed
    assert (b.key, b.attempts) == ("b", 0)
