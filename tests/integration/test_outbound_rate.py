"""A destination's outbound `rate_limit` (router.queue.outbound_rate): the rate
seen at a real HTTP destination stays under the limit with several workers
sharing one Redis (as separate processes do: each Workers here has its own
Redis client and claim loops), a held message costs no attempt, per-key
order holds (also on ack's keep path, one busy key), and a destination
without a limit writes no limiter state.

The bounds are on counts of requests the bot saw in windows of its own
clock, never on how fast the machine is: a slow machine only makes the
rate lower, and a stall that bunches arrivals at the bot is allowed for
(half a period's worth of requests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from router.config import Destination
from router.config.loading import load
from router.delivery.workers import running_workers
from router.queue import envelope
from router.queue.keys import DestinationKeys, shard_of
from router.queue.lanes import DestinationQueue
from router.queue.outbound_rate import ShardRate
from router.queue.scripts import Scripts
from tests.support.bot import Bot, Received, check_order
from tests.support.messages import enqueue_json, interleaved
from tests.support.routes import KEYS, write_routes

RATE = 20  # requests per second: a 60-message run lasts about 3 s


def destination(tmp_path: Path, bot: Bot, **dest: Any) -> Destination:
    config = load(str(write_routes(tmp_path / "routes.yaml", bot.url, **dest)))
    return config.destinations["chatbot"]


async def store(redis_url: str, sent: dict[str, list[str]], shards: int = 1) -> None:
    """Everything queued before any worker runs (round robin over the keys,
    as messages arrive), so the limit, not ingest, paces the deliveries."""
    redis = AsyncRedis.from_url(redis_url)
    try:
        scripts = Scripts(redis)
        for i in range(max(len(m) for m in sent.values())):
            for key, messages in sent.items():
                if i < len(messages):
                    keys = DestinationKeys("chatbot", shard_of(key, shards), shards)
                    await enqueue_json(scripts, keys, key, {"mensaje": messages[i], "wa_id": key})
    finally:
        await redis.aclose()


async def deliver_with(redis_url: str, dest: Destination, instances: int, bot: Bot, n: int) -> None:
    """Run `instances` sets of workers, each with its own Redis client,
    until the bot acknowledged `n` messages (generous deadline)."""
    clients = [AsyncRedis.from_url(redis_url) for _ in range(instances)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for client in clients:
                await stack.enter_async_context(running_workers(client, [dest], grace=1))
            deadline = time.monotonic() + 60
            while len(bot.acknowledged()) < n:
                assert time.monotonic() < deadline, f"{len(bot.acknowledged())} of {n} delivered"
                await asyncio.sleep(0.05)
    finally:
        for client in clients:
            await client.aclose()


def busiest_window(received: list[Received], period: float) -> int:
    """The most requests the bot saw within any `period` seconds."""
    times = sorted(r.at for r in received)
    return max(sum(1 for t in times[i:] if t - start <= period) for i, start in enumerate(times))


def assert_limited(received: list[Received], requests: int, period: float, burst: int) -> None:
    # GCRA: any window of one period holds at most requests + burst starts;
    # half a period more for arrivals bunched by a stall on the way.
    assert busiest_window(received, period) <= requests + burst + requests // 2


@pytest.mark.anyio  # marked here: the conftest hook comes too late for a parametrized test
@pytest.mark.parametrize("shards", [1, 2])
async def test_the_rate_at_the_destination_holds_across_three_worker_instances(
    clean_redis: str, redis: Redis, bot: Bot, tmp_path: Path, shards: int
) -> None:
    bot.latency = (0.001, 0.01)
    limit = {"requests": RATE, "period": "1s"}
    dest = destination(tmp_path, bot, rate_limit=limit, shards=shards, max_in_flight=16)
    sent = interleaved([f"k{i}" for i in range(12)], 5)  # 60 messages
    await store(clean_redis, sent, shards)

    await deliver_with(clean_redis, dest, 3, bot, 60)

    assert_limited(bot.received, RATE, 1.0, burst=2)  # the default burst
    # Without the limit 60 messages take a fraction of a second; with it
    # the run spans at least (60 - burst) intervals, less a stall's bunching.
    span = max(r.at for r in bot.received) - min(r.at for r in bot.received)
    assert span >= (60 - 2) / RATE - 0.5
    # Held messages were never attempted: one request each, attempt 1,
    # no failure recorded anywhere, every key in order.
    assert len(bot.received) == 60
    assert {r.headers["x-router-attempt"] for r in bot.received} == {"1"}
    assert check_order(sent, bot.acknowledged()) == (0, 0)
    for shard in range(shards):
        keys = DestinationKeys("chatbot", shard, shards)
        assert redis.hlen(keys.attempts) == 0 and redis.hlen(keys.last_error) == 0


async def test_one_busy_key_is_paced_too_and_keeps_its_order(
    clean_redis: str, bot: Bot, tmp_path: Path
) -> None:
    """One key: after the first claim, each next message is handed over by
    ack (its keep path), which must take its start from the limit too."""
    dest = destination(tmp_path, bot, rate_limit={"requests": RATE, "period": "1s", "burst": 3})
    sent = {"solo": [f"m{i}" for i in range(40)]}
    await store(clean_redis, sent)

    await deliver_with(clean_redis, dest, 3, bot, 40)

    assert_limited(bot.received, RATE, 1.0, burst=3)
    span = max(r.at for r in bot.received) - min(r.at for r in bot.received)
    assert span >= (40 - 3) / RATE - 0.5
    assert bot.acked_messages() == sent["solo"]
    assert {r.headers["x-router-attempt"] for r in bot.received} == {"1"}
    assert bot.max_in_flight_per_key == 1


async def test_a_destination_without_a_limit_keeps_no_limiter_state(
    clean_redis: str, redis: Redis, bot: Bot, tmp_path: Path
) -> None:
    dest = destination(tmp_path, bot)
    assert dest.settings.rate_limit is None
    sent = interleaved([f"k{i}" for i in range(4)], 10)
    await store(clean_redis, sent)
    await deliver_with(clean_redis, dest, 2, bot, 40)
    assert check_order(sent, bot.acknowledged()) == (0, 0)
    assert redis.exists(KEYS.throttle) == 0


async def test_a_held_key_stays_in_ready_with_no_lease_and_no_attempt(
    clean_redis: str, redis: Redis
) -> None:
    """The scripts themselves, with a limit that allows 2 starts now and the
    next in 10 s (nothing frees during the test: no timing involved)."""
    client = AsyncRedis.from_url(clean_redis)
    try:
        scripts = Scripts(client)
        queue = DestinationQueue(client, scripts, "chatbot", rate=ShardRate(10_000_000, 2))
        for key in ["a", "b", "c", "d"]:
            await enqueue_json(scripts, KEYS, key, {"mensaje": f"{key}1", "wa_id": key})
        await enqueue_json(scripts, KEYS, "a", {"mensaje": "a2", "wa_id": "a"})

        result = await queue.claim("t1", 4, 30_000, 16)
        assert [c.key for c in result.claims] == ["a", "b"]
        assert result.ready_left == 2
        # The worker sleeps until the limit allows the next start (~10 s,
        # less the burst's credit), not until a nudge that cannot help.
        assert 0 < result.next_deadline_ms - result.now_ms <= 10_000
        assert redis.lrange(KEYS.ready, 0, -1) == [b"c", b"d"]
        assert redis.zcard(KEYS.leases) == 2 and redis.hlen(KEYS.attempts) == 0
        assert 0 < redis.pttl(KEYS.throttle) <= 20_001

        again = await queue.claim("t2", 4, 30_000, 16)
        assert again.claims == [] and again.ready_left == 2

        # ack's keep path: "a" has a next message and nobody else... would
        # keep it, but the limit allows no start: "a" goes back to ready.
        claim_a = result.claims[0]
        await client.delete(KEYS.ready)  # nobody else waiting: only the limit says no
        acked = await queue.ack(claim_a, claim_a.head, 30_000, keep=True)
        assert not acked.lease_lost and acked.next_head is None
        assert redis.lrange(KEYS.ready, 0, -1) == [b"a"]
        assert redis.zscore(KEYS.leases, "a") is None
        head = redis.lindex(KEYS.lane("a"), 0)
        assert head is not None
        assert json.loads(bytes(envelope.decode(head).body))["mensaje"] == "a2"
    finally:
        await client.aclose()
