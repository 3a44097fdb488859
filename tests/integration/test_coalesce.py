"""Coalescing (a destination's `coalesce:`): the messages of one
conversation waiting together go as ONE request, a JSON array in arrival
order, acknowledged, retried and logged together. Real Redis, the router's
app under uvicorn, a real HTTP bot on loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from router.config import MessageLogSettings
from router.queue import envelope
from router.queue.lanes import DestinationQueue, Group, Outcome
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from tests.support.bot import Answer, Bot, Received
from tests.support.messages import enqueue_json
from tests.support.queues import story
from tests.support.routes import KEYS
from tests.support.servers import wait_until

FAST_RETRY = {"initial": "20ms", "factor": 1, "max_delay": "20ms", "jitter": 0}
NO_BREAKER = {"enabled": False}


def post(router: Any, key: str, text: str) -> str:
    r = router.post({"mensaje": text, "wa_id": key})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def texts(r: Received) -> list[str]:
    """The messages of one request (a coalesced request is an array)."""
    assert isinstance(r.body, list), r.body
    return [m["mensaje"] for m in r.body]


def requests_of(bot: Bot, key: str, acked: bool = True) -> list[list[str]]:
    received = bot.acknowledged() if acked else list(bot.received)
    return [texts(r) for r in received if r.body and r.body[0]["wa_id"] == key]


def delivered(bot: Bot, key: str) -> list[str]:
    return [m for group in requests_of(bot, key) for m in group]


def test_messages_typed_within_the_window_arrive_as_one_request(start_router, bot: Bot) -> None:
    """The WhatsApp case: three messages within the window, one turn."""
    router = start_router(bot.url, coalesce={"window": "3s"})
    for text in ("hi", "I have a question", "about my order"):
        post(router, "5511", text)
    wait_until(lambda: bot.acknowledged(), what="the coalesced request")
    assert requests_of(bot, "5511") == [["hi", "I have a question", "about my order"]]
    (r,) = bot.received
    assert (r.headers["x-router-sequence"], r.headers["x-router-coalesced"]) == ("1", "3")
    assert r.headers["idempotency-key"].startswith(r.headers["idempotency-key"].split("+")[0])
    assert "+3." in r.headers["idempotency-key"]

    # A message after the window (the first request went) is the next request.
    post(router, "5511", "hello again")
    wait_until(lambda: len(bot.acknowledged()) == 2, what="the next request")
    assert requests_of(bot, "5511")[1] == ["hello again"]
    second = bot.received[1]
    assert (second.headers["x-router-sequence"], second.headers["x-router-coalesced"]) == (
        "4",
        "1",
    )
    # A request of one message keeps that message's id as its key.
    assert "+" not in second.headers["idempotency-key"]


def test_max_messages_caps_a_group_and_order_holds_across_groups(
    start_router, bot: Bot, clean_redis: str
) -> None:
    # Stored before any worker runs: what waits together, deterministically.
    stored = start_router(bot.url, workers=False)
    sent = {key: [f"{key}-{i}" for i in range(7)] for key in ("a", "b")}
    for i in range(7):
        for key in sent:
            post(stored, key, sent[key][i])
    stored.stop()
    start_router(bot.url, coalesce={"window": "200ms", "max_messages": 3})
    wait_until(lambda: sum(len(texts(r)) for r in bot.acknowledged()) == 14, what="every message")
    for key, messages in sent.items():
        groups = requests_of(bot, key)
        assert groups[:2] == [messages[0:3], messages[3:6]]
        assert delivered(bot, key) == messages
        # Each request's sequence number is its first message's.
        numbers = [
            (int(r.headers["x-router-sequence"]), int(r.headers["x-router-coalesced"]))
            for r in bot.acknowledged()
            if r.body[0]["wa_id"] == key
        ]
        assert numbers[:2] == [(1, 3), (4, 3)]
    assert bot.max_in_flight_per_key == 1


def test_a_failed_group_is_retried_as_the_same_group(start_router, bot: Bot) -> None:
    stored = start_router(bot.url, workers=False)
    for text in ("m1", "m2"):
        post(stored, "77", text)
    stored.stop()
    failing = True

    def decide(message: Any, n: int) -> Answer:
        return Answer(status=500, body={"status": "error"}) if failing else Answer()

    bot.decide = decide
    retry = {"initial": "300ms", "factor": 1, "max_delay": "300ms", "jitter": 0}
    router = start_router(
        bot.url, coalesce={"window": "100ms"}, retry=retry, circuit_breaker=NO_BREAKER
    )
    wait_until(lambda: bot.received, what="the first attempt")
    # Arrives while the group waits out its backoff: not in the retry.
    post(router, "77", "m3")
    wait_until(lambda: len(bot.received) >= 2, what="a retry")
    failing = False
    wait_until(lambda: delivered(bot, "77") == ["m1", "m2", "m3"], what="every message")
    tries = [r for r in bot.received if texts(r)[0] == "m1"]
    assert len(tries) >= 2
    assert {tuple(texts(r)) for r in tries} == {("m1", "m2")}
    assert len({r.headers["idempotency-key"] for r in tries}) == 1
    assert [r.headers["x-router-attempt"] for r in tries] == [
        str(i) for i in range(1, len(tries) + 1)
    ]
    assert requests_of(bot, "77")[-1] == ["m3"]


def test_a_given_up_group_goes_to_the_dead_letters_whole(
    start_router, bot: Bot, clean_redis: str, redis: Redis
) -> None:
    stored = start_router(bot.url, workers=False)
    ids = [post(stored, "78", text) for text in ("m1", "m2", "m3")]
    stored.stop()
    bot.decide = lambda m, n: Answer(status=500, body="boom")
    start_router(
        bot.url,
        coalesce={"window": "100ms"},
        retry={**FAST_RETRY, "max_attempts": 2},
        circuit_breaker=NO_BREAKER,
    )
    wait_until(lambda: redis.llen(KEYS.dead) == 3, what="three dead letters")
    assert redis.llen(KEYS.lane("78")) == 0
    for message_id in ids:
        found = story(clean_redis, message_id)
        assert found is not None and found.state == "dead"
        assert [a.outcome for a in found.attempts] == ["failed", "dead"]
    assert int(redis.hget(KEYS.counts, "messages") or 0) == 0


def test_each_message_of_a_group_has_its_entry_in_the_log(
    start_router, bot: Bot, clean_redis: str, redis: Redis
) -> None:
    stored = start_router(bot.url, workers=False)
    ids = [post(stored, "79", text) for text in ("m1", "m2", "m3")]
    stored.stop()
    bot.decide = lambda m, n: Answer(body={"status": "ok", "reply": "got them"})
    start_router(bot.url, coalesce={"window": "100ms"})
    wait_until(lambda: bot.acknowledged(), what="the request")
    wait_until(
        lambda: all((s := story(clean_redis, i)) and s.state == "delivered" for i in ids),
        what="every story delivered",
    )
    entries = []
    for message_id in ids:
        found = story(clean_redis, message_id)
        assert found is not None and len(found.attempts) == 1
        entries.append(found.attempts[0])
    assert {(a.attempt, a.outcome, a.status, a.response) for a in entries} == {
        (1, "ok", 200, '{"status": "ok", "reply": "got them"}')
    }
    assert [story(clean_redis, i).seq for i in ids] == [1, 2, 3]  # type: ignore[union-attr]
    counts = redis.hmget(KEYS.counts, "messages", "acked")
    assert [int(c or 0) for c in counts] == [0, 3]
    # Nothing of the group is left behind (its pin is dropped with it).
    assert redis.hlen(KEYS.attempts) == 0


def test_the_body_template_applies_to_each_message(start_router, bot: Bot) -> None:
    stored = start_router(bot.url, workers=False)
    for text in ("m1", "m2"):
        post(stored, "80", text)
    stored.stop()
    start_router(
        bot.url,
        plugin="http",
        body={"wa_id": "wa_id", "text": "mensaje", "source": "const:router"},
        coalesce={"window": "100ms"},
    )
    wait_until(lambda: bot.acknowledged(), what="the request")
    assert [r.body for r in bot.received] == [
        [
            {"wa_id": "80", "text": "m1", "source": "router"},
            {"wa_id": "80", "text": "m2", "source": "router"},
        ]
    ]


def test_without_coalesce_each_message_is_its_own_request(start_router, bot: Bot) -> None:
    stored = start_router(bot.url, workers=False)
    for text in ("m1", "m2", "m3"):
        post(stored, "81", text)
    stored.stop()
    start_router(bot.url)
    wait_until(lambda: len(bot.acknowledged()) == 3, what="three requests")
    assert [r.body["mensaje"] for r in bot.received] == ["m1", "m2", "m3"]
    assert not any("x-router-coalesced" in r.headers for r in bot.received)


def test_a_restart_mid_window_loses_nothing(start_router, bot: Bot, redis: Redis) -> None:
    router = start_router(bot.url, coalesce={"window": "3s"})
    post(router, "82", "m1")
    # Claimed, then handed back to wait out its window.
    wait_until(lambda: redis.zscore(KEYS.delayed, "82") is not None, what="waiting")
    post(router, "82", "m2")
    router.stop()
    assert bot.received == []
    start_router(bot.url, coalesce={"window": "3s"})
    wait_until(lambda: bot.acknowledged(), what="the request after the restart")
    assert requests_of(bot, "82") == [["m1", "m2"]]


async def test_a_lease_that_ran_out_keeps_the_group_and_is_in_each_story(
    clean_redis: str,
) -> None:
    """A worker that died mid-request: the next claim sends the same group
    (not the message that arrived since), and each story has the entry."""
    client = AsyncRedis.from_url(clean_redis)
    try:
        scripts = Scripts(client)
        queue = DestinationQueue(client, scripts, "chatbot", log=MessageLogSettings())

        async def store(text: str) -> str:
            return await enqueue_json(scripts, KEYS, "k", {"mensaje": text, "wa_id": "k"})

        ids = [await store("m1"), await store("m2")]
        [claim] = (await queue.claim("dies", 1, 1, 10)).claims  # a 1 ms lease
        first = await queue.gather(claim, 0, 10)
        assert isinstance(first, list) and len(first) == 2
        await store("m3")
        await asyncio.sleep(0.01)  # past the lease (not an assertion: the sweep needs it)
        [again] = (await queue.claim("next", 1, 30_000, 10)).claims
        assert again.attempts == 1
        assert await queue.gather(again, 0, 10) == first
        for message_id in ids:
            found = await ShardedQueue(client, scripts, "chatbot", 1).story(message_id)
            assert found is not None
            assert [(a.attempt, a.outcome) for a in found.attempts] == [(1, "failed")]
            assert "lease ran out" in (found.attempts[0].error or "")
    finally:
        await client.aclose()


async def _a_letter_replayed_while_a_group_is_out(clean_redis: str, give_up: bool) -> None:
    """m0 died; m1..m3 went out as one group; m0 is replayed meanwhile. The
    replay lands behind the group (never inside it), so the group's ack
    removes exactly its messages, and its give-up dead-letters exactly them;
    m0 is next either way, never tried under the group's id."""
    client = AsyncRedis.from_url(clean_redis)
    try:
        scripts = Scripts(client)
        queue = DestinationQueue(client, scripts, "chatbot", log=MessageLogSettings())
        shards = ShardedQueue(client, scripts, "chatbot", 1)

        async def store(text: str) -> str:
            return await enqueue_json(scripts, KEYS, "k", {"mensaje": text, "wa_id": "k"})

        await store("m0")
        [claim] = (await queue.claim("a", 1, 30_000, 10)).claims
        failed = await queue.fail(claim, 0, "HTTP 500", Outcome.DEAD_LETTER)
        assert not failed.lease_lost
        for text in ("m1", "m2", "m3"):
            await store(text)
        [claim] = (await queue.claim("b", 1, 30_000, 10)).claims
        entries = await queue.gather(claim, 0, 10)
        assert isinstance(entries, list) and len(entries) == 3
        group = Group(entries, [envelope.decode_entry(e)[1].id for e in entries])
        assert await shards.replay_oldest() == 1  # while the group is out

        def lane_texts(raw: list[bytes]) -> list[str]:
            return [json.loads(bytes(envelope.decode_entry(e)[1].body))["mensaje"] for e in raw]

        assert lane_texts(await client.lrange(KEYS.lane("k"), 0, -1)) == ["m1", "m2", "m3", "m0"]
        if give_up:
            done = await queue.fail(claim, 0, "HTTP 500", Outcome.DEAD_LETTER, group=group)
            assert not done.lease_lost
            letters = await shards.dead_letters(0, 10)
            assert [json.loads(d.envelope)["body"]["mensaje"] for _, d in letters] == [
                "m1",
                "m2",
                "m3",
            ]
        else:
            acked = await queue.ack(claim, entries[0], 30_000, False, group=group)
            assert not acked.lease_lost
            assert int(await client.hget(KEYS.counts, "acked") or 0) == 3
        assert lane_texts(await client.lrange(KEYS.lane("k"), 0, -1)) == ["m0"]
        [claim] = (await queue.claim("c", 1, 30_000, 10)).claims
        assert lane_texts(await queue.gather(claim, 0, 10)) == ["m0"]  # a group of its own
    finally:
        await client.aclose()


async def test_a_replay_never_lands_inside_a_group_being_acked(clean_redis: str) -> None:
    await _a_letter_replayed_while_a_group_is_out(clean_redis, give_up=False)


async def test_a_replay_never_lands_inside_a_group_given_up(clean_redis: str) -> None:
    await _a_letter_replayed_while_a_group_is_out(clean_redis, give_up=True)
