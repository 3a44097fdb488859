"""Destination health (the circuit breaker, docs/destination-health.md): a
bot that is down for everyone gets one probe at a time instead of every
conversation's retries, and the first success resumes every conversation at
once, in order; one poison conversation never trips it; a Retry-After holds
the whole destination. Real routers (two, sharing one Redis), a real bot."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
import pytest
from redis import Redis

from router.queue.keys import DestinationKeys
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from router.redis.client import connect
from tests.support.bot import Answer, Bot
from tests.support.servers import wait_until

KEYS = DestinationKeys("chatbot")

# Per-conversation backoffs far longer than the test waits for anything:
# whatever is delivered in time was not waiting out its own backoff.
SLOW_RETRY = {"initial": "60s", "factor": 2, "max_delay": "10m", "jitter": 0.1}
BREAKER = {
    "failing_keys": 3,
    "window": "10s",
    "probe_interval": "200ms",
    "probe_interval_max": "400ms",
}


class Outage:
    """The bot answers 500 to everything while `down` is set."""

    def __init__(self, bot: Bot) -> None:
        self.down = threading.Event()
        bot.decide = lambda m, n: (
            Answer(status=500, body="down") if self.down.is_set() else Answer()
        )


def _health(redis: Redis) -> dict[bytes, bytes]:
    return redis.hgetall(KEYS.health)


def test_an_outage_for_everyone_gets_probes_and_recovery_resumes_every_conversation(
    start_router, bot: Bot, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.worker")
    outage = Outage(bot)
    outage.down.set()
    # Two routers on one Redis: the state is in Redis, so they agree.
    routers = [start_router(bot.url, retry=SLOW_RETRY, circuit_breaker=BREAKER) for _ in range(2)]
    conversations = [f"4491{i:04d}" for i in range(40)]
    for i in range(2):
        for c in conversations:
            r = routers[i % 2].post({"mensaje": f"{c}-{i}", "wa_id": c})
            assert r.status_code == 200

    wait_until(lambda: _health(redis).get(b"state") == b"down", what="the breaker to open")
    # What was in flight when it opened finishes failing; from then on only
    # probes go out, one at a time, across both routers.
    time.sleep(0.5)
    before = len(bot.received)
    time.sleep(2.0)
    during = bot.received[before:]
    # 2 s at one probe per 200-400 ms (plus one whose answer was pending).
    assert 2 <= len(during) <= 12, [r.body["mensaje"] for r in during]
    assert all(r.status == 500 for r in during)
    # The probes went to different conversations (each failed probe's key
    # backs off on its own): a poison head cannot hold the destination down.
    assert len({r.body["wa_id"] for r in during}) >= 2

    metrics = httpx.get(routers[0].url + "/metrics").text
    assert 'router_destination_state{destination="chatbot"} 1.0' in metrics

    failed_in_outage = len(bot.received)
    # Without the breaker, 40 conversations at least once each, then again.
    assert failed_in_outage < 40 + 16

    outage.down.clear()
    # Everything is delivered long before any conversation's own backoff
    # (60 s and more) would have let it go: the success resumed them all.
    wait_until(
        lambda: len(bot.acknowledged()) == 2 * len(conversations),
        timeout=20,
        what="every message after the recovery",
    )
    for c in conversations:
        assert bot.acked_messages(c) == [f"{c}-0", f"{c}-1"]
    assert bot.max_in_flight_per_key == 1
    assert _health(redis) == {}
    assert redis.zcard(KEYS.delayed) == 0

    # One line per transition, from whichever process made it.
    down_lines = [r for r in caplog.records if "is down" in r.getMessage()]
    up_lines = [r for r in caplog.records if "is up again" in r.getMessage()]
    assert len(down_lines) == 1 and len(up_lines) == 1, [r.getMessage() for r in caplog.records]
    assert "HTTP 500" in down_lines[0].getMessage()
    wait_until(
        lambda: (
            'router_destination_state{destination="chatbot"} 0.0'
            in httpx.get(routers[0].url + "/metrics").text
        ),
        what="the state gauge to say up",
    )


def test_one_poison_conversation_never_opens_it(start_router, bot: Bot, redis: Redis) -> None:
    """A conversation whose message always fails is one key however often it
    fails: it never marks the destination down, and others flow past it."""
    bot.decide = lambda m, n: Answer(status=500) if m["mensaje"] == "poison" else Answer()
    retry = {"initial": "20ms", "factor": 1, "max_delay": "20ms", "jitter": 0}
    router = start_router(bot.url, retry=retry, circuit_breaker={**BREAKER, "failing_keys": 2})
    assert router.post({"mensaje": "poison", "wa_id": "1"}).status_code == 200
    # Alone for a while: many failures of one key, nothing else happening.
    wait_until(lambda: len(bot.attempts_of("poison")) >= 20, what="20 attempts of poison")
    assert _health(redis) == {}
    for i in range(20):
        assert router.post({"mensaje": f"m{i}", "wa_id": str(100 + i % 5)}).status_code == 200
    wait_until(lambda: len(bot.acknowledged()) == 20, what="the other conversations")
    assert _health(redis) == {}
    # Read in one transaction: the key moves between the two every 20 ms.
    with redis.pipeline(transaction=True) as pipe:
        delayed, leased = pipe.zscore(KEYS.delayed, "1").zscore(KEYS.leases, "1").execute()
    assert delayed is not None or leased is not None


def test_a_retry_after_holds_the_whole_destination(start_router, bot: Bot, redis: Redis) -> None:
    """A 429 with Retry-After on one conversation: nothing goes to the bot
    for that long, then everything flows, in order."""
    first = threading.Event()

    def decide(message: dict[str, str], n: int) -> Answer:
        if not first.is_set():
            first.set()
            return Answer(status=429, body="slow down", headers={"Retry-After": "4"})
        return Answer()

    bot.decide = decide
    router = start_router(bot.url, workers=False, max_in_flight=1)
    assert router.post({"mensaje": "a-0", "wa_id": "a"}).status_code == 200
    worker = start_router(bot.url, max_in_flight=1)
    wait_until(lambda: len(bot.received) == 1, what="the first attempt")
    refused_at = bot.received[0].at
    # Looked at before posting more: the hold lasts 4 s, which posting on a
    # loaded machine can outlast.
    wait_until(lambda: b"hold_until" in _health(redis), what="the hold")
    status = httpx.get(worker.url + "/metrics").text
    assert 'router_destination_state{destination="chatbot"} 2.0' in status
    for i in range(5):
        for k in "bcd":
            assert router.post({"mensaje": f"{k}-{i}", "wa_id": k}).status_code == 200
    wait_until(lambda: len(bot.acknowledged()) == 16, timeout=20, what="every message")
    # The destination asked for 4 s: the next request came no sooner.
    assert bot.received[1].at - refused_at >= 3.9
    for k in "bcd":
        assert bot.acked_messages(k) == [f"{k}-{i}" for i in range(5)]
    assert bot.acked_messages("a") == ["a-0"]


async def test_router_retry_says_a_down_destination_is_up(clean_redis: str) -> None:
    """`router retry DEST` (and the admin API's retry) after fixing the
    bot: the breaker is cleared and every waiting conversation is ready,
    oldest first, without waiting for the next probe."""
    redis = connect(clean_redis)
    try:
        queues = ShardedQueue(redis, Scripts(redis), "chatbot")
        queue = queues.shards[0]
        now = int(time.time() * 1000)
        # Three conversations stored at different times, then failed while
        # the destination went down: their backoffs end far in the future.
        for key, arrival in (("late", now - 1000), ("early", now - 3000), ("mid", now - 2000)):
            env = b'{"id":"m-%s","ts":%d,"body":{}}' % (key.encode(), arrival)
            await redis.rpush(KEYS.lane(key), env)
            await redis.zadd(KEYS.heads, {key: arrival})
            await redis.zadd(KEYS.delayed, {key: now + 3_600_000})
        await redis.hset(KEYS.health, mapping={"state": "down", "since": now, "probe_at": now})
        figures = await queues.figures()
        assert figures.health == "down"
        assert await queues.retry_now() == 3
        assert await redis.lrange(KEYS.ready, 0, -1) == [b"early", b"mid", b"late"]
        assert await redis.zcard(KEYS.delayed) == 0
        assert (await queues.figures()).health == "up"
        assert await queue.reopen() == -1  # nothing left to reopen
    finally:
        await redis.aclose()


async def test_while_down_one_probe_at_a_time_and_a_probe_given_up_frees_the_slot(
    clean_redis: str,
) -> None:
    """The scripts themselves, as every process sees them: while down a claim
    leases only the probe, none while it is out; a probe given up without a
    try (max_attempts reached after a lost lease) lets the next go at once,
    and a probe that fails doubles the wait."""
    from router.queue.lanes import DOWN, Breaker, Outcome

    redis = connect(clean_redis)
    try:
        queue = ShardedQueue(redis, Scripts(redis), "chatbot").shards[0]
        for key in ("a", "b", "c"):
            await redis.rpush(KEYS.lane(key), b'{"id":"m-%s","ts":1,"body":{}}' % key.encode())
            await redis.rpush(KEYS.ready, key)
        await redis.hset(KEYS.health, mapping={"state": "down", "probe_at": 0, "probe_ms": 30_000})
        breaker = Breaker(failing_keys=3, window_ms=10_000, probe_ms=30_000, probe_max_ms=45_000)

        # The newest conversation first (none has failed yet).
        probe = await queue.claim("t1", 10, 30_000, 16, breaker=True)
        assert [c.key for c in probe.claims] == ["c"] and probe.ready_left == DOWN
        again = await queue.claim("t2", 10, 30_000, 16, breaker=True)
        assert again.claims == [] and again.ready_left == DOWN  # the probe is out

        # Given up without a try: the next probe is due now.
        failed = await queue.fail(
            probe.claims[0], 0, "gave up", Outcome.DEAD_LETTER, False, breaker
        )
        assert failed.event == ""
        second = await queue.claim("t3", 10, 30_000, 16, breaker=True)
        assert [c.key for c in second.claims] == ["b"]

        # A probe that fails: the next waits twice as long, capped (45 s).
        await queue.fail(second.claims[0], 60_000, "HTTP 500", Outcome.RETRY, True, breaker)
        health = await redis.hgetall(KEYS.health)
        assert int(health[b"probe_ms"]) == 45_000
        assert (await queue.claim("t4", 10, 30_000, 16, breaker=True)).claims == []
        # With the breaker off (routes.yaml changed), the state is ignored.
        off = await queue.claim("t5", 10, 30_000, 16, breaker=False)
        assert [c.key for c in off.claims] == ["a"] and off.ready_left == 0
    finally:
        await redis.aclose()


async def test_failures_that_are_the_messages_own_never_open_it(clean_redis: str) -> None:
    """A permanent failure (DeliveryFailed(permanent=True): e.g. a message
    without a field the body template needs) is the message's fault: any
    number of them, on any number of conversations, leave the destination
    up; the same failures from the destination open it."""
    from router.queue.lanes import Blame, Breaker, Outcome

    redis = connect(clean_redis)
    try:
        queue = ShardedQueue(redis, Scripts(redis), "chatbot").shards[0]
        breaker = Breaker(failing_keys=3, window_ms=10_000, probe_ms=100, probe_max_ms=150)

        async def fail_each(n: int, message_fault: bool) -> list[str]:
            events = []
            for i in range(n):
                key = f"k{i}"
                await redis.rpush(KEYS.lane(key), b'{"id":"m-%d","ts":1,"body":{}}' % i)
                await redis.rpush(KEYS.ready, key)
                [claim] = (await queue.claim(f"t{i}", 1, 30_000, 16, breaker=True)).claims
                failed = await queue.fail(
                    claim,
                    0,
                    "no",
                    Outcome.DEAD_LETTER,
                    True,
                    breaker,
                    blame=Blame.PERMANENT if message_fault else Blame.DESTINATION,
                )
                assert failed.attempts == 1
                events.append(failed.event)
            return events

        assert await fail_each(5, message_fault=True) == [""] * 5
        assert await redis.exists(KEYS.health, KEYS.failing) == 0
        assert await fail_each(3, message_fault=False) == ["", "", "down"]
    finally:
        await redis.aclose()


async def test_the_probe_slot_and_the_hold_report(clean_redis: str) -> None:
    """What every process relies on: while a probe's lease is renewed past
    its probe time no second probe goes out; a down destination with nothing
    to probe tells workers to wait for a nudge, not to poll; a Retry-After
    is reported (logged) when a hold begins, not when another answer
    lengthens it; turning the breaker off forgets a stale state."""
    from router.queue.lanes import DOWN, HELD, Breaker, Outcome

    redis = connect(clean_redis)
    try:
        queue = ShardedQueue(redis, Scripts(redis), "chatbot").shards[0]
        breaker = Breaker(
            failing_keys=3, window_ms=10_000, probe_ms=10, probe_max_ms=10, max_hold_ms=60_000
        )
        await redis.hset(KEYS.health, mapping={"state": "down", "probe_at": 0, "probe_ms": 10})
        idle = await queue.claim("t0", 10, 30_000, 16, breaker=True)
        assert idle.claims == [] and idle.ready_left == DOWN
        assert idle.next_deadline_ms == -1  # nothing to probe: wait for a nudge

        for key in ("a", "b"):
            await redis.rpush(KEYS.lane(key), b'{"id":"m-%s","ts":1,"body":{}}' % key.encode())
            await redis.rpush(KEYS.ready, key)
        [probe] = (await queue.claim("t1", 10, 300, 16, breaker=True)).claims
        assert await queue.renew(probe, 60_000)  # a long attempt renews its lease
        await redis.hset(KEYS.health, "probe_at", 0)  # as if its probe time had passed
        assert (await queue.claim("t2", 10, 300, 16, breaker=True)).claims == []

        # Retry-After answers on two keys: one report, at the first.
        await queue.release(probe)
        await redis.delete(KEYS.health)
        claims = (await queue.claim("t3", 10, 30_000, 16, breaker=True)).claims
        events = [
            (await queue.fail(c, 5_000, "HTTP 429", Outcome.RETRY, True, breaker, 30)).event
            for c in claims
        ]
        assert events == ["hold", ""]
        assert (await queue.claim("t4", 10, 30_000, 16, breaker=True)).ready_left == HELD

        # The breaker turned off in routes.yaml: the hold is forgotten.
        await redis.zadd(KEYS.delayed, {"a": 0})
        free = await queue.claim("t5", 10, 30_000, 16, breaker=False)
        assert [c.key for c in free.claims] == ["a"]
        assert await redis.exists(KEYS.health) == 0
    finally:
        await redis.aclose()


async def test_a_large_backlog_resumes_without_sorting_in_redis(clean_redis: str) -> None:
    """Past 5,000 waiting conversations reopen does not sort them in Lua
    (Redis would be held for a second at 200,000): every backoff ends at
    once, in the order they would have ended, and claims take them all."""
    redis = connect(clean_redis)
    try:
        queue = ShardedQueue(redis, Scripts(redis), "chatbot").shards[0]
        now = int(time.time() * 1000)
        keys = [f"k{i:05d}" for i in range(6000)]
        async with redis.pipeline(transaction=False) as pipe:
            for i, key in enumerate(keys):
                pipe.rpush(KEYS.lane(key), b'{"id":"m-%d","ts":%d,"body":{}}' % (i, now))
                pipe.zadd(KEYS.heads, {key: now})
                # Backoffs ending in an hour, the first key's first.
                pipe.zadd(KEYS.delayed, {key: now + 3_600_000 + i})
            pipe.hset(KEYS.health, mapping={"state": "down", "since": now, "probe_at": now})
            await pipe.execute()
        assert await queue.reopen() == 6000
        assert await redis.exists(KEYS.health) == 0
        due = await redis.zrange(KEYS.delayed, 0, -1, withscores=True)
        assert [k.decode() for k, _ in due] == keys  # the order they would have ended in
        assert all(score < now for _, score in due)
        claimed: list[str] = []
        while len(claimed) < len(keys):
            got = await queue.claim(f"t{len(claimed)}", 500, 30_000, 100_000, breaker=True)
            assert got.claims, "a resumed key was not claimable"
            claimed += [c.key for c in got.claims]
        assert sorted(claimed) == keys
    finally:
        await redis.aclose()


# -- sick conversations are not a sick destination (issue 18) ---------------


def _envelope(key: str, arrival: int) -> bytes:
    return b'{"id":"m-%s","ts":%d,"body":{}}' % (key.encode(), arrival)


async def _store(redis: Any, key: str, arrival: int | None = None) -> None:
    """One message of `key` as enqueue.lua stores it (lane, heads, ready)."""
    arrival = int(time.time() * 1000) if arrival is None else arrival
    await redis.rpush(KEYS.lane(key), _envelope(key, arrival))
    await redis.zadd(KEYS.heads, {key: arrival})
    await redis.rpush(KEYS.ready, key)


async def _attempt(redis: Any, queue: Any, breaker: Any, key: str, ok: bool) -> str:
    """One attempt at `key`'s head, claimed alone (its lane filled or put
    in line first): acknowledged ("ok"), or failed with a long backoff and
    the event fail.lua reports."""
    from router.queue.lanes import Outcome

    await redis.zrem(KEYS.delayed, key)
    if await redis.llen(KEYS.lane(key)) == 0:
        await _store(redis, key)
    else:
        await redis.rpush(KEYS.ready, key)
    [claim] = (await queue.claim(f"t-{key}-{time.time()}", 1, 30_000, 16, True)).claims
    assert claim.key == key
    if ok:
        await queue.ack(claim, claim.head, 30_000, keep=False)
        return "ok"
    return str((await queue.fail(claim, 60_000, "HTTP 500", Outcome.RETRY, True, breaker)).event)


async def test_a_conversation_counts_once_until_it_succeeds(clean_redis: str) -> None:
    """Two conversations that always fail, failing again after another's
    success, never count a second time: with failing_keys 3 they and one
    more failure leave the destination up (before: down), while three
    conversations failing for the first time still open it."""
    from router.queue.lanes import Breaker, Outcome

    redis = connect(clean_redis)
    try:
        queue = ShardedQueue(redis, Scripts(redis), "chatbot").shards[0]
        breaker = Breaker(failing_keys=3, window_ms=60_000, probe_ms=100, probe_max_ms=150)

        async def attempt(key: str, ok: bool) -> str:
            return await _attempt(redis, queue, breaker, key, ok)

        assert await attempt("poison-1", ok=False) == ""
        assert await attempt("poison-2", ok=False) == ""
        assert await attempt("healthy", ok=True) == "ok"  # clears the count
        # The two again (suspects since their first failure) and one newcomer.
        assert await attempt("poison-1", ok=False) == ""
        assert await attempt("poison-2", ok=False) == ""
        assert await attempt("new-1", ok=False) == ""
        assert await redis.exists(KEYS.health) == 0
        # Three more first failures with no success between them: down.
        assert await attempt("new-2", ok=False) == ""
        assert await attempt("new-3", ok=False) == "down"
        # A success takes a conversation off the suspects; one whose lane
        # empties (dead-lettered) leaves too: the set stays bounded.
        assert await redis.zscore(KEYS.suspects, "healthy") is None
        await redis.zrem(KEYS.delayed, "poison-1")
        await redis.rpush(KEYS.ready, "poison-1")
        [claim] = (await queue.claim("t-dead", 1, 30_000, 16, False)).claims
        assert claim.key == "poison-1"
        await queue.fail(claim, 0, "HTTP 500", Outcome.DEAD_LETTER, True, breaker)
        assert await redis.zscore(KEYS.suspects, "poison-1") is None
    finally:
        await redis.aclose()


async def test_the_backlog_of_an_outage_cannot_open_it_again_at_once(clean_redis: str) -> None:
    """After the recovery, failures of messages that waited through the
    outage (a poison conversation's, never tried yet) do not open it again;
    conversations that arrive afterwards and fail still do."""
    from router.queue.lanes import Breaker, Outcome

    redis = connect(clean_redis)
    try:
        queue = ShardedQueue(redis, Scripts(redis), "chatbot").shards[0]
        breaker = Breaker(failing_keys=3, window_ms=60_000, probe_ms=10, probe_max_ms=10)
        now = int(time.time() * 1000)
        for i, key in enumerate(("w1", "w2", "w3", "w4", "probe")):
            await _store(redis, key, now - 5000 + i)
        await redis.hset(KEYS.health, mapping={"state": "down", "since": now, "probe_at": 0})
        [probe] = (await queue.claim("t-probe", 16, 30_000, 16, True)).claims
        assert probe.key == "probe"  # the newest
        acked = await queue.ack(probe, probe.head, 30_000, keep=False)
        assert acked.resumed == 4  # up again
        claims = (await queue.claim("t-all", 16, 30_000, 16, True)).claims
        assert sorted(c.key for c in claims) == ["w1", "w2", "w3", "w4"]
        events = [
            (await queue.fail(c, 60_000, "HTTP 500", Outcome.RETRY, True, breaker)).event
            for c in claims
        ]
        assert events == ["", "", "", ""] and await redis.exists(KEYS.health) == 0
        # Newcomers failing after the recovery count as before.
        for key in ("n1", "n2", "n3"):
            await _store(redis, key)
        claims = (await queue.claim("t-new", 16, 30_000, 16, True)).claims
        events = [
            (await queue.fail(c, 60_000, "HTTP 500", Outcome.RETRY, True, breaker)).event
            for c in claims
        ]
        assert events == ["", "", "down"]
    finally:
        await redis.aclose()


async def test_probes_go_to_healthy_looking_conversations(clean_redis: str) -> None:
    """While down: due backoffs stay out of ready (no busy polling on them);
    the probe is the newest conversation that has not failed, else the one
    whose backoff ends first; the recovery leaves conversations that were
    failing on their own before the outage to their backoff, and an
    operator's retry resumes everyone."""
    from router.queue.lanes import DOWN

    redis = connect(clean_redis)
    try:
        queues = ShardedQueue(redis, Scripts(redis), "chatbot")
        queue = queues.shards[0]
        now = int(time.time() * 1000)
        # "old": failing since long before the outage; "p1", "p2": failed
        # when it began; "fresh-*": never tried.
        for key, first_failed, due in (
            ("old", now - 600_000, now + 600_000),
            ("p1", now - 100, now - 50),
            ("p2", now - 100, now - 40),
        ):
            await redis.rpush(KEYS.lane(key), _envelope(key, now - 700_000))
            await redis.zadd(KEYS.heads, {key: now - 700_000})
            await redis.zadd(KEYS.suspects, {key: first_failed})
            await redis.zadd(KEYS.delayed, {key: due})
        await redis.hset(
            KEYS.health,
            mapping={"state": "down", "since": now, "onset": now - 100, "probe_at": now + 60_000},
        )
        waiting = await queue.claim("t0", 16, 30_000, 16, True)
        assert waiting.claims == [] and waiting.ready_left == DOWN
        # The next deadline is the probe's, not the overdue backoffs.
        assert waiting.next_deadline_ms == now + 60_000
        assert await redis.zcard(KEYS.delayed) == 3 and await redis.llen(KEYS.ready) == 0

        await _store(redis, "fresh-1", now - 10)
        await _store(redis, "fresh-2", now - 5)
        await redis.rpush(KEYS.ready, "p1")  # a suspect handed back to ready
        await redis.zrem(KEYS.delayed, "p1")
        await redis.hset(KEYS.health, "probe_at", 0)
        [probe] = (await queue.claim("t1", 16, 30_000, 16, True)).claims
        assert probe.key == "fresh-2"
        await queue.release(probe)
        await redis.delete(KEYS.ready)
        await redis.zadd(KEYS.delayed, {"p1": now - 60, "fresh-1": now + 5, "fresh-2": now + 6})
        await redis.hset(KEYS.health, "probe_at", 0)
        [probe] = (await queue.claim("t2", 16, 30_000, 16, True)).claims
        assert probe.key == "p1"  # every key has failed: the earliest due

        # Success: all but "old" resume, oldest head first.
        acked = await queue.ack(probe, probe.head, 30_000, keep=False)
        assert acked.resumed == 3
        assert await redis.lrange(KEYS.ready, 0, -1) == [b"p2", b"fresh-1", b"fresh-2"]
        assert await redis.zrange(KEYS.delayed, 0, -1) == [b"old"]

        # An operator's retry while down resumes "old" too.
        await redis.hset(KEYS.health, mapping={"state": "down", "since": now, "onset": now})
        assert await queues.retry_now() >= 1
        assert await redis.zcard(KEYS.delayed) == 0
        assert b"old" in await redis.lrange(KEYS.ready, 0, -1)
    finally:
        await redis.aclose()


def test_a_bots_4xx_is_the_messages_fault_and_never_opens_it(
    start_router, bot: Bot, redis: Redis
) -> None:
    """A bot answering 422 ("malformed") to many conversations at once:
    each is retried, the destination stays up; a 408 or a 500 on as many
    opens it, and so does a 422 once `ignore_statuses` leaves it out."""
    status = {"code": 422}
    bot.decide = lambda m, n: Answer(status=status["code"], body="no")
    retry = {"initial": "30s", "factor": 1, "max_delay": "30s", "jitter": 0}
    router = start_router(bot.url, retry=retry, circuit_breaker=BREAKER)
    for i in range(6):
        assert router.post({"mensaje": "m", "wa_id": f"a{i}"}).status_code == 200
    wait_until(lambda: len(bot.received) >= 6, what="every conversation tried")
    time.sleep(0.3)
    assert _health(redis) == {}
    router.stop()

    status["code"] = 408
    redis.flushdb()
    router = start_router(bot.url, retry=retry, circuit_breaker=BREAKER)
    for i in range(6):
        assert router.post({"mensaje": "m", "wa_id": f"b{i}"}).status_code == 200
    wait_until(lambda: _health(redis).get(b"state") == b"down", what="a 408 to open it")
    router.stop()

    status["code"] = 422
    redis.flushdb()
    counted = {**BREAKER, "ignore_statuses": ["400-421", "423-499"]}
    router = start_router(bot.url, retry=retry, circuit_breaker=counted)
    for i in range(6):
        assert router.post({"mensaje": "m", "wa_id": f"c{i}"}).status_code == 200
    wait_until(lambda: _health(redis).get(b"state") == b"down", what="a counted 422 to open it")


@pytest.mark.serial
def test_poison_conversations_posted_together_do_not_stop_the_others(
    start_router, bot: Bot, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18's case, small: 12 conversations the bot always refuses
    (500), posted together while nothing else happens, open the breaker;
    healthy conversations posted afterwards are all delivered within a
    probe interval or two, and the breaker does not flap (before: it
    reopened and closed again on the poison backlog, and probes went to
    poison conversations)."""
    caplog.set_level(logging.WARNING, logger="router.worker")
    bot.decide = lambda m, n: (
        Answer(status=500, body="no") if m["wa_id"].startswith("p") else Answer()
    )
    quick = {"initial": "100ms", "factor": 2, "max_delay": "2s", "jitter": 0.1}
    router = start_router(bot.url, retry=quick, circuit_breaker=BREAKER, max_in_flight=4)
    for i in range(12):
        assert router.post({"mensaje": f"p{i}", "wa_id": f"p{i}"}).status_code == 200
    wait_until(lambda: _health(redis).get(b"state") == b"down", what="the breaker to open")
    posted: dict[str, float] = {}
    for i in range(30):
        posted[f"h{i}"] = time.monotonic()
        assert router.post({"mensaje": f"h{i}", "wa_id": f"h{i}"}).status_code == 200
        time.sleep(0.05)
    wait_until(
        lambda: all(bot.acked_messages(k) for k in posted), timeout=10, what="every healthy one"
    )
    delays = sorted(
        next(r.at for r in bot.received if r.body["wa_id"] == k and r.status == 200) - posted[k]
        for k in posted
    )
    # Within the probe interval (at most 400 ms) and a little.
    assert delays[-1] < 2.0, delays
    downs = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len(downs) <= 2, [r.getMessage() for r in caplog.records]


@pytest.mark.serial
async def test_failing_conversations_count_again_while_others_fail(clean_redis: str) -> None:
    """An outage that reaches conversations slowly still opens it: a
    conversation that failed before counts again while others are failing
    (before: once only, so one new failure per window/failing_keys never
    opened it). It never starts a run alone."""
    from router.queue.lanes import Breaker

    redis = connect(clean_redis)
    try:
        queue = ShardedQueue(redis, Scripts(redis), "chatbot").shards[0]
        breaker = Breaker(failing_keys=3, window_ms=2_000, probe_ms=100, probe_max_ms=150)

        async def attempt(key: str) -> str:
            return await _attempt(redis, queue, breaker, key, ok=False)

        assert await attempt("k1") == ""
        assert await attempt("k1") == ""  # alone: no run of failures starts
        assert await redis.zcard(KEYS.failing) == 1
        await asyncio.sleep(1.2)
        assert await attempt("k2") == ""
        await asyncio.sleep(1.0)  # k1's count is older than the window now
        assert await attempt("k1") == ""  # ...but k2 is failing: k1 counts again
        assert await attempt("k3") == "down"
        health = await redis.hgetall(KEYS.health)
        # The outage began with the run of failures (k1's first), not with
        # the oldest count still in the window.
        assert int(health[b"onset"]) < int(health[b"since"]) - 2_000
    finally:
        await redis.aclose()


def test_a_destination_answering_4xx_while_down_is_up_and_not_hammered(
    start_router, bot: Bot, redis: Redis
) -> None:
    """Down after 500s, the bot comes back answering 422 ("malformed") to
    everyone: its answer shows it is up, so the breaker closes and every
    conversation backs off on its own (before: each such answer made the
    next probe due at once, hundreds of requests a second)."""
    status = {"code": 500}
    bot.decide = lambda m, n: Answer(status=status["code"], body="no")
    retry = {"initial": "5s", "factor": 2, "max_delay": "60s", "jitter": 0}
    router = start_router(bot.url, retry=retry, circuit_breaker=BREAKER)
    for i in range(5):
        assert router.post({"mensaje": "m", "wa_id": f"a{i}"}).status_code == 200
    wait_until(lambda: _health(redis).get(b"state") == b"down", what="the breaker to open")
    status["code"] = 422
    wait_until(lambda: _health(redis) == {}, timeout=10, what="the breaker to close")
    time.sleep(0.2)
    before = len(bot.received)
    time.sleep(2.0)
    # Every conversation is waiting out its own 5 s+ backoff.
    assert len(bot.received) - before <= 1, [r.body for r in bot.received[before:]]
