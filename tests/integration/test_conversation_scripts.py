"""One conversation's controls at the level of the scripts (pause_key.lua,
resume_key.lua, skip.lua, and what claim, ack, recount and move_out do with
a paused key), each against a real Redis: the key is never in ready twice,
never lost, and goes on in order once resumed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from router.queue import envelope
from router.queue.keys import DestinationKeys
from router.queue.lanes import DestinationQueue, Outcome
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from tests.support.queues import body, destination_queue, store

K = DestinationKeys("convo")


@pytest.fixture()
async def queue(clean_redis: str) -> AsyncIterator[DestinationQueue]:
    async with destination_queue(clean_redis, "convo") as opened:
        yield opened


async def claimed(queue: DestinationQueue, want: int = 10) -> dict[str, str]:
    """Key -> head body of what one claim takes."""
    result = await queue.claim("t", want, 30_000, 100)
    return {c.key: body(c.head) for c in result.claims}


async def places(queue: DestinationQueue, key: str) -> list[str]:
    """Where a key is: each of ready (as often as it is there), leases,
    delayed, blocked, parked."""
    r: Any = queue.redis
    keys = queue.keys
    out = ["ready" for k in await r.lrange(keys.ready, 0, -1) if k.decode() == key]
    if await r.zscore(keys.leases, key) is not None:
        out.append("leases")
    if await r.zscore(keys.delayed, key) is not None:
        out.append("delayed")
    if await r.hexists(keys.blocked, key):
        out.append("blocked")
    entry = await r.hget(keys.paused_keys, key)
    if entry is not None and json.loads(entry).get("parked"):
        out.append("parked")
    return out


async def test_a_paused_key_is_parked_not_claimed_and_resumes_in_order(
    queue: DestinationQueue,
) -> None:
    await store(queue, "a", "a0", "a1")
    await store(queue, "b", "b0")
    assert await queue.pause_key("a") is True
    assert await queue.pause_key("a") is False  # already
    assert await claimed(queue) == {"b": "b0"}
    assert await places(queue, "a") == ["parked"]
    state = await queue.key_state("a")
    assert (state.state, state.paused, state.messages) == ("paused", True, 2)
    await store(queue, "a", "a2")  # ingest still stores; the key stays parked
    assert await places(queue, "a") == ["parked"]
    assert await claimed(queue) == {}
    assert await queue.resume_key("a") is True
    assert await queue.resume_key("a") is False
    assert await places(queue, "a") == ["ready"]
    assert await claimed(queue) == {"a": "a0"}
    assert (await queue.key_state("a")).paused is False


async def test_pausing_a_key_in_flight_lets_the_attempt_finish_then_holds_it(
    queue: DestinationQueue,
) -> None:
    await store(queue, "a", "a0", "a1")
    [claim] = (await queue.claim("t", 1, 30_000, 100)).claims
    await queue.pause_key("a")
    acked = await queue.ack(claim, claim.head, 30_000, keep=True)
    assert not acked.lease_lost and acked.next_head is None  # never kept while paused
    assert await claimed(queue) == {}
    assert await places(queue, "a") == ["parked"]
    await queue.resume_key("a")
    assert await claimed(queue) == {"a": "a1"}


async def test_a_paused_key_waiting_out_a_backoff_resumed_before_its_turn_stays_put(
    queue: DestinationQueue,
) -> None:
    await store(queue, "a", "a0")
    [claim] = (await queue.claim("t", 1, 30_000, 100)).claims
    await queue.fail(claim, 60_000, "boom", Outcome.RETRY)
    await queue.pause_key("a")
    assert await queue.resume_key("a") is True
    assert await places(queue, "a") == ["delayed"]  # not pushed to ready as well


async def test_recount_counts_parked_keys_and_leaves_them_parked(
    queue: DestinationQueue,
) -> None:
    await store(queue, "a", "a0", "a1")
    await store(queue, "b", "b0")
    await queue.pause_key("a")
    await queue.pause_key("nobody")  # paused with no messages: counts nothing
    assert await claimed(queue) == {"b": "b0"}
    await queue.redis.delete(K.counts, K.heads)
    assert await queue.recount(force=True) == 3
    assert await queue.redis.zscore(K.heads, "a") is not None
    assert await places(queue, "a") == ["parked"]
    assert "a" in await queue.keys_with_messages()


async def test_skip_dead_letters_the_head_wherever_the_key_is(queue: DestinationQueue) -> None:
    # (Not pytest's parametrize: anyio's marker is added after collection.)
    for where in ("ready", "in flight", "waiting", "blocked", "parked"):
        await skip_where(DestinationQueue(queue.redis, queue.scripts, f"skip-{where}"), where)


async def skip_where(queue: DestinationQueue, where: str) -> None:
    await store(queue, "a", "a0", "a1")
    claim = None
    if where != "ready" and where != "parked":
        [claim] = (await queue.claim("t", 1, 30_000, 100)).claims
    if where == "waiting":
        assert claim is not None
        await queue.fail(claim, 60_000, "HTTP 500", Outcome.RETRY)
    elif where == "blocked":
        assert claim is not None
        await queue.fail(claim, 0, "HTTP 500", Outcome.BLOCK)
    elif where == "parked":
        await queue.pause_key("a")
        assert await claimed(queue) == {}
    skipped = await queue.skip("a")
    assert skipped is not None
    assert (skipped.seq, skipped.was, skipped.left) == (1, where, 1)
    [(_, letter)] = await queue.dead_letters()
    assert letter.seq == 1 and letter.key == "a" and body(letter.envelope.encode()) == "a0"
    assert letter.error.startswith("skipped by an operator")
    if where in ("waiting", "blocked"):
        assert letter.error == "skipped by an operator (last error: HTTP 500)"
        assert letter.attempts == 1
    assert envelope.decode(letter.envelope.encode()).id == skipped.message_id
    if where == "in flight":
        assert claim is not None
        # The fenced attempt's outcome changes nothing.
        assert (await queue.ack(claim, claim.head, 30_000, keep=True)).lease_lost
        assert (await queue.fail(claim, 0, "late", Outcome.DEAD_LETTER)).lease_lost
    if where == "parked":
        assert await places(queue, "a") == ["parked"]
        assert await claimed(queue) == {}
        await queue.resume_key("a")
    assert await places(queue, "a") == ["ready"]
    assert await claimed(queue) == {"a": "a1"}
    state = await queue.key_state("a")
    assert (state.attempts, state.last_error, state.messages) == (0, None, 1)
    figures = await queue.figures()
    assert (figures.messages, figures.dead) == (1, 1)


async def test_skipping_the_last_message_leaves_the_key_nowhere(
    queue: DestinationQueue,
) -> None:
    await store(queue, "a", "a0")
    await store(queue, "b", "b0")
    assert (await queue.skip("a")) is not None
    assert await places(queue, "a") == []
    assert await queue.skip("a") is None  # nothing left
    assert await queue.skip("never") is None
    # Paused and parked, its last message skipped: still paused, not parked;
    # what arrives next waits, and goes once resumed.
    await queue.pause_key("b")
    assert await claimed(queue) == {}
    assert (await queue.skip("b")) is not None
    assert await places(queue, "b") == []
    await store(queue, "b", "b1")
    assert await claimed(queue) == {}
    assert await places(queue, "b") == ["parked"]
    await queue.resume_key("b")
    assert await places(queue, "b") == ["ready"]
    assert await claimed(queue) == {"b": "b1"}
    assert (await queue.figures()).messages == 1


async def test_an_expired_lease_of_a_paused_key_parks_it(queue: DestinationQueue) -> None:
    await store(queue, "a", "a0", "a1")
    [claim] = (await queue.claim("t", 1, 1, 100)).claims  # a 1 ms lease
    await queue.pause_key("a")
    await queue.redis.zadd(K.leases, {"a": 0})  # run out
    assert await claimed(queue) == {}
    assert await places(queue, "a") == ["parked"]
    assert (await queue.ack(claim, claim.head, 30_000, keep=False)).lease_lost
    await queue.resume_key("a")
    assert await claimed(queue) == {"a": "a0"}


async def test_a_paused_key_is_never_the_probe_of_a_destination_down(
    queue: DestinationQueue,
) -> None:
    await store(queue, "a", "a0")
    await store(queue, "b", "b0")
    await queue.pause_key("b")  # the newest: the probe it would have been
    await queue.redis.hset(
        K.health, mapping={"state": "down", "since": 1, "onset": 1, "probe_at": 0, "probe_ms": 1}
    )
    result = await queue.claim("t", 5, 30_000, 100, breaker=True)
    assert [c.key for c in result.claims] == ["a"]
    assert await queue.redis.hget(K.health, "probe_key") == b"a"


async def test_sharded_paused_keys_are_listed_and_found_in_their_shard(clean_redis: str) -> None:
    client = AsyncRedis.from_url(clean_redis)
    try:
        queues = ShardedQueue(client, Scripts(client), "convo", 2)
        keys = [f"k{i}" for i in range(6)]
        for key in keys:
            assert await queues.pause_key(key)
        assert sorted(p.key for p in await queues.paused_keys()) == keys
        assert (await queues.figures()).paused_keys == 6
        assert {len(await q.paused_keys()) for q in queues.shards} != {0, 6}  # both shards
        for key in keys:
            assert await queues.resume_key(key)
        assert await queues.paused_keys() == []
    finally:
        await client.aclose()
