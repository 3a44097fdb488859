"""Delivery end to end: order under concurrency, isolation of a failing key,
global order, dead letters (admin API), a plugin that raises, and the
lease/fencing rules of the queue itself. (Dead letters through the CLI and
burst mode: tests/process/test_delivery.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from router.queue import envelope
from router.queue.keys import DestinationKeys
from router.queue.lanes import Acked, DestinationQueue, Outcome
from router.queue.scripts import Scripts
from tests.support.bot import Answer, Bot, check_order
from tests.support.messages import (
    enqueue_json,
    interleaved,
    post_concurrently,
    post_message,
    post_round_robin,
)
from tests.support.plugin import recorder_registered, write_recorder_routes
from tests.support.routes import KEYS, write_routes
from tests.support.servers import serve, wait_until

FAST_RETRY = {"initial": "20ms", "factor": 1, "max_delay": "20ms", "jitter": 0}


# -- a. order under concurrency ------------------------------------------------


def test_per_key_order_kept_with_many_keys_in_parallel(start_router, bot: Bot) -> None:
    bot.latency = (0.001, 0.01)
    router = start_router(bot.url, max_in_flight=8)
    sent = interleaved([f"3460000{i:04d}" for i in range(40)], 15)  # 600 messages
    post_concurrently(router.url, sent)

    wait_until(lambda: len(bot.acknowledged()) >= 600, timeout=30, what="600 deliveries")
    lost, duplicates = check_order(sent, bot.acknowledged())
    assert (lost, duplicates) == (0, 0)
    assert len(bot.received) == 600  # nothing failed, nothing sent twice
    assert bot.max_in_flight_per_key == 1
    assert 1 < bot.max_in_flight <= 8


# -- b. a failing key does not hold up the others -------------------------------


def test_failing_key_does_not_block_other_keys(start_router, bot: Bot) -> None:
    recovered = False

    def decide(message: dict[str, Any], n: int) -> Answer:
        if message["wa_id"] == "bad" and not recovered:
            return Answer(status=500, body={"status": "error"})
        return Answer()

    bot.decide = decide
    # One slot only: if a key waiting out its backoff held it, nothing else
    # could be delivered. Everything is stored first, bad's messages oldest.
    retry = {"initial": "100ms", "factor": 1, "max_delay": "100ms", "jitter": 0}
    api = start_router(bot.url, workers=False, max_in_flight=1, retry=retry)
    for i in range(3):
        post_message(api.url, "bad", f"bad-{i}")
    others = interleaved(["a", "b", "c", "d", "e"], 10)
    post_round_robin(api.url, others)
    start_router(bot.url, routes_file=api.routes_file)  # the workers

    wait_until(lambda: len(bot.acked_messages()) >= 50, timeout=20, what="the other keys")
    wait_until(lambda: len(bot.attempts_of("bad-0")) >= 3, timeout=10, what="bad-0 retries")
    assert check_order(others, bot.acknowledged()) == (0, 0)
    assert bot.acked_messages("bad") == []
    assert bot.received[0].body["mensaje"] == "bad-0"  # it was first in line
    # The rest of the conversation waits behind its head.
    assert bot.attempts_of("bad-1") == [] and bot.attempts_of("bad-2") == []
    # The others went on while bad waited out its first backoff.
    first, second = (r.at for r in bot.attempts_of("bad-0")[:2])
    assert second - first >= 0.09
    assert any(first < r.at < second for r in bot.received if r.body["wa_id"] != "bad")

    recovered = True
    wait_until(lambda: len(bot.acked_messages("bad")) >= 3, timeout=10, what="bad recovers")
    assert bot.acked_messages("bad") == ["bad-0", "bad-1", "bad-2"]
    last_bad0 = bot.attempts_of("bad-0")[-1].at
    assert all(r.at > last_bad0 for r in bot.attempts_of("bad-1"))
    assert len(bot.attempts_of("bad-1")) == len(bot.attempts_of("bad-2")) == 1
    assert bot.max_in_flight_per_key == 1


# -- c. one global order ------------------------------------------------------


@pytest.mark.parametrize("max_in_flight", [1, 4])
def test_global_order_delivers_one_at_a_time_in_arrival_order(
    start_router, bot: Bot, max_in_flight: int
) -> None:
    bot.latency = (0.001, 0.005)
    router = start_router(bot.url, ordering_key=None, max_in_flight=max_in_flight)
    sent = interleaved([f"u{i}" for i in range(6)], 8)
    post_round_robin(router.url, sent)
    arrival = [m for i in range(8) for ms in sent.values() for m in [ms[i]]]

    wait_until(lambda: len(bot.acknowledged()) >= len(arrival), what="all deliveries")
    assert bot.acked_messages() == arrival
    assert bot.max_in_flight == 1  # one order: one at a time, whatever max_in_flight says
    assert all(r.headers["x-router-attempt"] == "1" for r in bot.received)


# -- d. dead letters --------------------------------------------------------------


def poison_bot(bot: Bot) -> dict[str, bool]:
    state = {"accept": False}

    def decide(message: dict[str, Any], n: int) -> Answer:
        if message["mensaje"] == "poison" and not state["accept"]:
            return Answer(status=500, body={"status": "error", "error": "cannot digest"})
        return Answer()

    bot.decide = decide
    return state


def test_admin_dead_letters_list_and_replay(
    start_router, bot: Bot, redis: Redis, clean_redis: str, tmp_path: Path
) -> None:
    state = poison_bot(bot)
    routes = write_routes(
        tmp_path / "admin-routes.yaml", bot.url, retry={**FAST_RETRY, "max_attempts": 2}
    )
    server = serve(clean_redis, routes, shutdown_grace=2, admin_token="s3cret", run_workers=True)
    try:
        url = server.url
        auth = {"Authorization": "Bearer s3cret"}
        post_message(url, "k", "poison")
        post_message(url, "k", "after")
        wait_until(lambda: redis.llen(KEYS.dead) == 1, timeout=10, what="a dead letter")
        wait_until(lambda: bot.acked_messages("k") == ["after"], what="the key goes on")

        dead_url = url + "/admin/destinations/chatbot/dead"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.get(dead_url, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
            assert "s3cret" not in r.text
            r = httpx.post(dead_url + "/replay", headers=headers)
            assert r.status_code == 401
        assert redis.llen(KEYS.dead) == 1  # refused calls changed nothing

        r = httpx.get(dead_url, headers=auth)
        assert r.status_code == 200, r.text
        [entry] = r.json()["dead"]
        assert entry["key"] == "k" and entry["attempts"] == 2
        assert "HTTP 500" in entry["error"]
        assert json.loads(entry["envelope"])["body"] == {"mensaje": "poison", "wa_id": "k"}
        assert httpx.get(url + "/admin/destinations/nope/dead", headers=auth).status_code == 404
        stats = httpx.get(url + "/admin/destinations", headers=auth).json()
        assert stats["chatbot"]["dead"] == 1

        state["accept"] = True
        r = httpx.post(dead_url + "/replay", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["replayed"] == 1
        wait_until(lambda: "poison" in bot.acked_messages("k"), timeout=10, what="replay")
        assert httpx.get(dead_url, headers=auth).json() == {"dead": []}
        assert len(bot.attempts_of("poison")) == 3
    finally:
        server.stop()

    # Without an admin token configured the endpoints do not exist.
    plain = start_router(bot.url, workers=False)
    assert httpx.get(plain.url + "/admin/destinations/chatbot/dead").status_code == 404
    r = httpx.get(
        plain.url + "/admin/destinations/chatbot/dead", headers={"Authorization": "Bearer s3cret"}
    )
    assert r.status_code == 404
    assert httpx.post(plain.url + "/admin/destinations/chatbot/dead/replay").status_code in (
        404,
        405,
    )


# -- e. a plugin that raises --------------------------------------------------------


def test_plugin_exception_is_a_failed_attempt(start_router, bot: Bot, tmp_path: Path) -> None:
    with recorder_registered():
        _plugin_exception_is_a_failed_attempt(start_router, bot, tmp_path)


def _plugin_exception_is_a_failed_attempt(start_router, bot: Bot, tmp_path: Path) -> None:
    routes = write_recorder_routes(
        tmp_path / "routes.yaml", url=bot.url, fail_first=1, max_in_flight=1
    )
    router = start_router(bot.url, routes_file=routes)
    for i in range(3):
        post_message(router.url, "p", f"p{i}")
    wait_until(lambda: len(bot.acknowledged()) >= 3, timeout=10, what="deliveries")
    assert bot.acked_messages() == ["p0", "p1", "p2"]
    # The first call raised before reaching the bot; its retry is attempt 2.
    assert [r.headers["x-router-attempt"] for r in bot.received] == ["2", "1", "1"]
    assert all(r.headers.get("x-recorder") == "1" for r in bot.received)
    # The worker lives on.
    ready = httpx.get(router.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] == "running"
    post_message(router.url, "q", "q0")
    wait_until(lambda: "q0" in bot.acked_messages(), what="a later delivery")


# -- f. leases and fencing tokens, at the queue level --------------------------------


@pytest.fixture()
async def aredis(clean_redis: str) -> AsyncIterator[AsyncRedis]:
    client = AsyncRedis.from_url(clean_redis)
    try:
        yield client
    finally:
        await client.aclose()


async def _store(scripts: Scripts, keys: DestinationKeys, key: str, *bodies: str) -> list[str]:
    return [await enqueue_json(scripts, keys, key, body) for body in bodies]


async def test_expired_lease_fences_out_the_first_claimer(aredis: AsyncRedis) -> None:
    scripts = Scripts(aredis)
    queue = DestinationQueue(aredis, scripts, "fence")
    ids = await _store(scripts, queue.keys, "k", "m0", "m1")

    first = await queue.claim("worker-A:1", want=5, lease_ms=100, max_in_flight=10)
    assert [c.key for c in first.claims] == ["k"]
    a = first.claims[0]
    assert envelope.decode(a.head).id == ids[0] and a.attempts == 0

    # Not expired yet: nobody else gets the key.
    assert (await queue.claim("worker-B:1", 5, 1000, 10)).claims == []
    await asyncio.sleep(0.2)
    second = await queue.claim("worker-B:2", want=5, lease_ms=5000, max_in_flight=10)
    assert [c.key for c in second.claims] == ["k"]
    b = second.claims[0]
    assert envelope.decode(b.head).id == ids[0]  # the same head, tried again
    assert b.attempts == 1  # the lost lease counts as an attempt

    # The first claimer wakes up: all its writes are refused and change nothing.
    assert await queue.ack(a, a.head, 5000, keep=True) == Acked(lease_lost=True)
    assert await queue.ack(a, a.head, 5000, keep=False) == Acked(lease_lost=True)
    assert await queue.renew(a, 5000) is False
    assert await queue.release(a) is False
    assert (await queue.fail(a, 0, "late", Outcome.RETRY)).lease_lost
    assert await queue.lane_length("k") == 2
    assert await aredis.hget(queue.keys.owner, "k") == b"worker-B:2"
    assert await aredis.zscore(queue.keys.leases, "k") is not None
    assert await aredis.hget(queue.keys.attempts, "k") == b"1"
    assert await aredis.zcard(queue.keys.delayed) == 0
    assert await aredis.llen(queue.keys.dead) == 0

    # The owner's ack works, and with keep it goes straight on to the next.
    nxt = (await queue.ack(b, b.head, 5000, keep=True)).next_head
    assert nxt is not None and envelope.decode(nxt).id == ids[1]
    assert await queue.lane_length("k") == 1
    assert await aredis.hget(queue.keys.attempts, "k") is None
    # The same ack again (its reply lost, the worker retries): a no-op that
    # hands out the same next message, never a second pop.
    assert (await queue.ack(b, b.head, 5000, keep=True)).next_head == nxt
    assert await queue.lane_length("k") == 1
    assert await queue.ack(b, nxt, 5000, keep=False) == Acked(lease_lost=False)
    assert await queue.lane_length("k") == 0
    figures = await queue.figures()
    assert (figures.messages, figures.ready, figures.in_flight, figures.delayed) == (0, 0, 0, 0)
    # Counted once each, though the first ack ran twice.
    assert (figures.acked, figures.oldest_arrival_ms) == (2, None)


async def test_claimed_key_is_not_claimable_by_anyone(aredis: AsyncRedis) -> None:
    scripts = Scripts(aredis)
    queue = DestinationQueue(aredis, scripts, "fence")
    ids = await _store(scripts, queue.keys, "k", "m0", "m1", "m2")

    a = (await queue.claim("A:1", 5, 30_000, 10)).claims
    assert [c.key for c in a] == ["k"]
    # The key's next messages are there, yet no claim gets them while k is leased.
    for token in ("A:2", "B:1", "C:1"):
        result = await queue.claim(token, 10, 30_000, 10)
        assert result.claims == [] and result.ready_left == 0
    # A new key is claimable meanwhile, and only it.
    await _store(scripts, queue.keys, "other", "o0")
    await _store(scripts, queue.keys, "k", "m3")  # k's lane grows; k stays claimed
    b = (await queue.claim("B:2", 10, 30_000, 10)).claims
    assert [c.key for c in b] == ["other"]
    assert (await queue.claim("C:2", 10, 30_000, 10)).claims == []

    # A failure puts k in backoff: still not claimable until due.
    assert (await queue.fail(a[0], 300, "boom", Outcome.RETRY)).attempts == 1
    assert (await queue.claim("C:3", 10, 30_000, 10)).claims == []
    await asyncio.sleep(0.35)
    c = (await queue.claim("C:4", 10, 30_000, 10)).claims
    assert [(x.key, envelope.decode(x.head).id, x.attempts) for x in c] == [("k", ids[0], 1)]

    # Acked without keeping it: k goes back to ready with its next message.
    assert await queue.ack(c[0], c[0].head, 30_000, keep=False) == Acked(lease_lost=False)
    d = (await queue.claim("D:1", 10, 30_000, 10)).claims
    assert [(x.key, envelope.decode(x.head).id, x.attempts) for x in d] == [("k", ids[1], 0)]


async def test_max_in_flight_caps_claims_across_claimers(aredis: AsyncRedis) -> None:
    scripts = Scripts(aredis)
    queue = DestinationQueue(aredis, scripts, "cap")
    for i in range(5):
        await _store(scripts, queue.keys, f"k{i}", "m")
    a = await queue.claim("A:1", 10, 30_000, 3)
    assert len(a.claims) == 3 and a.ready_left == 2
    assert (await queue.claim("B:1", 10, 30_000, 3)).claims == []
    assert await queue.ack(a.claims[0], a.claims[0].head, 30_000, keep=False) == Acked(False)
    b = await queue.claim("B:2", 10, 30_000, 3)
    assert [c.key for c in b.claims] == ["k3"]


async def test_message_whose_lease_keeps_expiring_is_dead_lettered_untried(
    aredis: AsyncRedis, start_router, bot: Bot
) -> None:
    """A message that kills its worker every time (here: three claims whose
    leases run out) reaches max_attempts through the expiries alone; the
    next worker dead-letters it without a fourth try, with the true count."""
    scripts = Scripts(aredis)
    keys = DestinationKeys("chatbot")
    queue = DestinationQueue(aredis, scripts, "chatbot")
    await _store(scripts, keys, "k", {"mensaje": "kills workers", "wa_id": "k"})
    await _store(scripts, keys, "k", {"mensaje": "next", "wa_id": "k"})
    for i in range(3):
        claimed = await queue.claim(f"crashing:{i}", want=1, lease_ms=50, max_in_flight=10)
        assert [c.key for c in claimed.claims] == ["k"]
        await asyncio.sleep(0.1)

    start_router(bot.url, retry={"initial": "50ms", "max_delay": "100ms", "max_attempts": 3})
    await asyncio.to_thread(wait_until, lambda: bot.acked_messages("k") == ["next"])
    assert bot.attempts_of("kills workers") == []
    dead = [json.loads(raw) for raw in await aredis.lrange(keys.dead, 0, -1)]
    assert len(dead) == 1
    assert dead[0]["attempts"] == 3
    assert "lease expired" in dead[0]["error"]
