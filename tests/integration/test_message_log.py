"""The message log: each message's story at its destination (every attempt,
its outcome, status, duration and the start of the answer), its state, the
search over stories, retention, and ROUTER_MESSAGE_LOG=0. Real Redis, the
router's app under uvicorn, a real HTTP destination on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis import Redis
from redis import asyncio as redis_async

from router.queue import envelope, message_log
from router.queue.enqueue import Target, enqueue
from router.queue.keys import DestinationKeys
from router.queue.scripts import Scripts
from tests.support.bot import Answer, Bot
from tests.support.queues import on_queue, story
from tests.support.servers import wait_until

FAST_RETRY = {"initial": "20ms", "factor": 1, "max_delay": "20ms", "jitter": 0}


def post(router: Any, key: str, text: str) -> str:
    """Post one message; its id."""
    r = router.post({"mensaje": text, "wa_id": key})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def search(redis_url: str, **kw: Any) -> list[message_log.Found]:
    found: list[message_log.Found] = on_queue(
        redis_url,
        lambda queue: queue.search(
            kw.get("key"), kw.get("failed", False), kw.get("since"), kw.get("limit", 100)
        ),
        kw.get("shards", 1),
    )
    return found


def delivered(redis_url: str, message_id: str, shards: int = 1) -> bool:
    found = story(redis_url, message_id, shards)
    return found is not None and found.state == "delivered"


def test_story_of_a_message_retried_then_delivered(start_router, bot: Bot, clean_redis) -> None:
    def decide(message: dict[str, Any], n: int) -> Answer:
        if n < 2:
            return Answer(status=503, body={"error": "warming up", "try": n})
        return Answer(body={"status": "ok", "reply": "hola"})

    bot.decide = decide
    router = start_router(bot.url, retry=FAST_RETRY, circuit_breaker={"enabled": False})
    before = int(time.time() * 1000)
    message_id = post(router, "4491", "Hola!")
    wait_until(lambda: delivered(clean_redis, message_id), what="delivered")

    found = story(clean_redis, message_id)
    assert found is not None
    assert (found.state, found.key, found.seq) == ("delivered", "4491", 1)
    assert found.received_at >= before
    assert [(a.attempt, a.outcome, a.status) for a in found.attempts] == [
        (1, "failed", 503),
        (2, "failed", 503),
        (3, "ok", 200),
    ]
    first, _, last = found.attempts
    assert first.error is not None and first.error.startswith("HTTP 503")
    assert first.response is not None and '"warming up"' in first.response
    assert last.response is not None and '"hola"' in last.response
    assert last.error is None
    for a in found.attempts:
        assert a.started_at is not None and a.started_at >= found.received_at
        assert a.duration_ms is not None and a.duration_ms >= 0
    assert [a.started_at for a in found.attempts] == sorted(a.started_at for a in found.attempts)


def test_a_waiting_message_has_a_story_before_its_first_attempt(
    start_router, bot: Bot, clean_redis
) -> None:
    router = start_router(bot.url, workers=False)
    message_id = post(router, "4492", "Hola!")
    found = story(clean_redis, message_id)
    assert found is not None
    assert (found.state, found.key, found.attempts, found.seq) == ("waiting", "4492", [], 1)
    assert story(clean_redis, "no-such-id") is None


def test_given_up_message_is_dead_and_a_replay_continues_its_story(
    start_router, bot: Bot, clean_redis
) -> None:
    failing = True
    bot.decide = lambda m, n: Answer(status=500, body="boom") if failing else Answer()
    retry = {**FAST_RETRY, "max_attempts": 2}
    router = start_router(bot.url, retry=retry, circuit_breaker={"enabled": False})
    message_id = post(router, "4493", "Hola!")
    wait_until(
        lambda: (s := story(clean_redis, message_id)) is not None and s.state == "dead",
        what="dead-lettered",
    )
    found = story(clean_redis, message_id)
    assert found is not None
    assert [(a.attempt, a.outcome) for a in found.attempts] == [(1, "failed"), (2, "dead")]

    failing = False
    assert on_queue(clean_redis, lambda q: q.replay_oldest()) == 1
    wait_until(lambda: delivered(clean_redis, message_id), what="delivered after the replay")
    found = story(clean_redis, message_id)
    assert found is not None
    assert [a.outcome for a in found.attempts] == ["failed", "dead", "ok"]
    assert found.seq == 1  # a replay keeps its number


def test_blocked_then_unblocked(start_router, bot: Bot, clean_redis) -> None:
    bot.decide = lambda m, n: Answer(status=500, body="no") if n == 0 else Answer()
    retry = {**FAST_RETRY, "max_attempts": 1, "on_exhausted": "block"}
    router = start_router(bot.url, retry=retry, circuit_breaker={"enabled": False})
    message_id = post(router, "4494", "Hola!")
    wait_until(
        lambda: (s := story(clean_redis, message_id)) is not None and s.state == "blocked",
        what="blocked",
    )
    found = story(clean_redis, message_id)
    assert found is not None and [a.outcome for a in found.attempts] == ["blocked"]
    assert on_queue(clean_redis, lambda q: q.unblock("4494"))
    found = story(clean_redis, message_id)
    assert found is not None and found.state in ("waiting", "delivered")  # no longer blocked
    wait_until(lambda: delivered(clean_redis, message_id), what="delivered after unblock")


def test_search_newest_first_by_key_failed_since_and_limit(
    start_router, bot: Bot, clean_redis
) -> None:
    bot.decide = lambda m, n: Answer(status=500) if m["mensaje"] == "bad" and n < 3 else Answer()
    router = start_router(
        bot.url, retry=FAST_RETRY, shards=2, max_in_flight=4, circuit_breaker={"enabled": False}
    )

    def post_alone(key: str, text: str) -> str:
        """Post, then let the clock pass the message's millisecond: two
        messages of one millisecond order by their ids' random part."""
        message_id = post(router, key, text)
        arrived = envelope.id_ms(message_id)
        assert arrived is not None
        while int(time.time() * 1000) <= arrived:
            time.sleep(0.001)
        return message_id

    ids = [post_alone(key, text) for key, text in [("a", "1"), ("b", "bad"), ("a", "2")]]
    cut = int(time.time() * 1000)  # after the third message's millisecond
    ids.append(post_alone("c", "3"))
    wait_until(lambda: all(delivered(clean_redis, i, 2) for i in ids), what="all delivered")

    everything = search(clean_redis, shards=2)
    assert [f.id for f in everything] == ids[::-1]  # newest first, over both shards
    assert [f.id for f in search(clean_redis, shards=2, key="a")] == [ids[2], ids[0]]
    failed = search(clean_redis, shards=2, failed=True)
    assert [(f.id, f.key, f.state) for f in failed] == [(ids[1], "b", "delivered")]
    assert failed[0].attempts >= 2
    assert [f.id for f in search(clean_redis, shards=2, since=cut)] == [ids[3]]
    assert [f.id for f in search(clean_redis, shards=2, limit=2)] == ids[:1:-1]


def test_retention_keeps_the_newest_stories(start_router, bot: Bot, clean_redis) -> None:
    router = start_router(bot.url, workers=False, message_log={"max_messages": 3})
    ids = [post(router, "k", str(i)) for i in range(10)]
    assert [story(clean_redis, i) is not None for i in ids] == [False] * 7 + [True] * 3
    keys = DestinationKeys("chatbot")
    redis = Redis.from_url(clean_redis)
    assert redis.zcard(keys.logged) == 3
    assert redis.hlen(keys.log) == 3  # no entries of a dropped story stay behind


def test_response_is_cut_and_secrets_starred(start_router, bot: Bot, clean_redis) -> None:
    secret = "s3cr3t-token-value"
    bot.decide = lambda m, n: Answer(body={"echo": secret, "pad": "x" * 500})
    router = start_router(
        bot.url,
        headers={"Authorization": f"Bearer {secret}"},
        message_log={"response_bytes": 100},
    )
    message_id = post(router, "4495", "Hola!")
    wait_until(lambda: delivered(clean_redis, message_id), what="delivered")
    found = story(clean_redis, message_id)
    assert found is not None
    response = found.attempts[0].response
    assert response is not None and len(response.encode()) <= 100
    assert secret not in response and "***" in response


def test_router_message_log_0_keeps_no_log(
    start_router, bot: Bot, clean_redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTER_MESSAGE_LOG", "0")
    router = start_router(bot.url)
    message_id = post(router, "4496", "Hola!")
    wait_until(lambda: len(bot.acknowledged()) == 1, what="delivered")
    assert story(clean_redis, message_id) is None
    redis = Redis.from_url(clean_redis)
    keys = DestinationKeys("chatbot")
    assert not redis.exists(keys.log, keys.logged)


def test_a_story_retention_dropped_while_waiting_stays_dropped(
    start_router, bot: Bot, clean_redis
) -> None:
    """Retention goes by arrival: the 2 oldest of 5 waiting messages lose
    their stories to the 3 newer ones, and get none back when delivered."""
    api = start_router(bot.url, workers=False, message_log={"max_messages": 3})
    ids = [post(api, "k", str(i)) for i in range(5)]
    start_router(bot.url, routes_file=api.routes_file)  # the workers
    wait_until(lambda: len(bot.acknowledged()) == 5, what="all delivered")
    wait_until(lambda: delivered(clean_redis, ids[-1]), what="the last story")
    assert [story(clean_redis, i) is not None for i in ids] == [False, False, True, True, True]
    assert Redis.from_url(clean_redis).zcard(DestinationKeys("chatbot").logged) == 3


def test_stories_of_one_millisecond_are_trimmed_in_the_logs_own_order(
    start_router, bot: Bot, clean_redis
) -> None:
    """Messages stored in the same millisecond tie on arrival: retention
    drops the first in the log's own order (arrival, then id), and those
    get no story back when delivered, so the log keeps `max_messages`."""
    keys = DestinationKeys("chatbot")
    api = start_router(bot.url, workers=False, message_log={"max_messages": 3})
    now = int(time.time() * 1000)
    ids = sorted(envelope.new_message_id(now) for _ in range(6))

    async def store() -> None:
        client = redis_async.Redis.from_url(clean_redis)
        try:
            scripts = Scripts(client)
            for n, message_id in enumerate(ids):  # the log's order, one key each
                data = envelope.encode(message_id, now, f'{{"wa_id": "k{n}"}}'.encode())
                await enqueue(scripts, [Target(keys, f"k{n}", "3 0")], data, message_id, None, 60)
        finally:
            await client.aclose()

    asyncio.run(store())
    start_router(bot.url, routes_file=api.routes_file)  # the workers
    wait_until(lambda: len(bot.acknowledged()) == 6, what="all delivered")
    wait_until(lambda: delivered(clean_redis, ids[-1]), what="the last story")
    assert [story(clean_redis, i) is not None for i in ids] == [False] * 3 + [True] * 3
    assert Redis.from_url(clean_redis).zcard(keys.logged) == 3
