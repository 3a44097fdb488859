"""The message log's records as stored: the scripts write a record's
changing fields first (n, failed, state) so that an entry rewrites only
that head; a record stored by an earlier version, in cjson's order, reads
the same and goes on the same after the new scripts change it. Real Redis,
the router's own scripts."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from router.config import MessageLogSettings
from router.queue import envelope, message_log
from router.queue.enqueue import Target, enqueue
from router.queue.lanes import DestinationQueue, Outcome
from tests.support.queues import destination_queue

# An ordering key JSON must escape: a quote, a backslash, a control
# character, text beyond ASCII.
AWKWARD_KEY = 'wa "7" \\ tab\t é'
POLICY = message_log.policy(MessageLogSettings(), 0, 1)


@pytest.fixture()
async def queue(clean_redis: str) -> AsyncIterator[DestinationQueue]:
    async with destination_queue(clean_redis, "layout") as opened:
        opened.log = MessageLogSettings()
        yield opened


async def store(queue: DestinationQueue, key: str) -> tuple[str, int]:
    """One message stored with the log on; its id and arrival (ms)."""
    now = int(time.time() * 1000)
    message_id = envelope.new_message_id(now)
    raw = envelope.encode(message_id, now, b'{"mensaje": "hola"}')
    await enqueue(queue.scripts, [Target(queue.keys, key, POLICY)], raw, message_id, None, 60)
    return message_id, now


async def record(queue: DestinationQueue, message_id: str) -> dict[str, object]:
    raw = await queue.redis.hget(queue.keys.log, message_id)
    assert raw is not None
    decoded: dict[str, object] = json.loads(raw)
    return decoded


async def ack_head(queue: DestinationQueue, message_id: str, attempt: int) -> None:
    (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
    logged = message_log.entry(attempt, "ok", started_at_ms=1, duration_ms=2.0, status=200)
    acked = await queue.ack(claim, claim.head, 30_000, False, message_id, logged)
    assert not acked.lease_lost


async def test_a_new_record_keeps_its_changing_fields_first(queue: DestinationQueue) -> None:
    message_id, arrival = await store(queue, AWKWARD_KEY)
    raw = await queue.redis.hget(queue.keys.log, message_id)
    assert raw.startswith(b'{"n":0,"failed":0,"state":"waiting",')
    assert await record(queue, message_id) == {
        "n": 0,
        "failed": 0,
        "state": "waiting",
        "key": AWKWARD_KEY,
        "received_at": arrival,
        "seq": 1,
    }
    await ack_head(queue, message_id, 1)
    found = await message_log.story(queue.redis, queue.keys, message_id)
    assert found is not None
    assert (found.state, found.key, found.received_at, found.seq) == (
        "delivered",
        AWKWARD_KEY,
        arrival,
        1,
    )
    assert [(a.attempt, a.outcome) for a in found.attempts] == [(1, "ok")]


async def test_a_record_stored_by_an_earlier_version_goes_on(queue: DestinationQueue) -> None:
    """The old layout (cjson's order), with one failed attempt logged: the
    ack adds its entry after it, and every reader sees the same story."""
    message_id, arrival = await store(queue, AWKWARD_KEY)
    first = message_log.entry(1, "failed", started_at_ms=1, duration_ms=3.0, error="HTTP 503")
    old = json.dumps(
        {"key": AWKWARD_KEY, "state": "waiting", "seq": 1, "failed": 1, "received_at": arrival}
        | {"n": 1},
        separators=(",", ":"),
    )
    await queue.redis.hset(queue.keys.log, mapping={message_id: old, f"{message_id}:1": first})

    await ack_head(queue, message_id, 2)

    found = await message_log.story(queue.redis, queue.keys, message_id)
    assert found is not None
    assert (found.state, found.key, found.received_at, found.seq) == (
        "delivered",
        AWKWARD_KEY,
        arrival,
        1,
    )
    assert [(a.attempt, a.outcome, a.error) for a in found.attempts] == [
        (1, "failed", "HTTP 503"),
        (2, "ok", None),
    ]
    assert await record(queue, message_id) == {
        "n": 2,
        "failed": 1,
        "state": "delivered",
        "key": AWKWARD_KEY,
        "received_at": arrival,
        "seq": 1,
    }
    (hit,) = await message_log.search(queue.redis, queue.keys, None, True, None, 10)
    assert (hit.id, hit.key, hit.state, hit.attempts) == (message_id, AWKWARD_KEY, "delivered", 2)


async def test_a_replay_changes_the_state_of_an_old_record(queue: DestinationQueue) -> None:
    """log_state (a replay) on a record in the old layout, then the next
    attempt's entry: nothing of the record is lost on the way."""
    message_id, arrival = await store(queue, "k")
    (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
    logged = message_log.entry(1, "dead", started_at_ms=1, error="gone")
    await queue.fail(claim, 0, "gone", Outcome.DEAD_LETTER, message_id=message_id, logged=logged)
    old = json.dumps(
        {"state": "dead", "n": 1, "key": "k", "received_at": arrival, "failed": 1},
        separators=(",", ":"),
    )  # and no seq: stored before sequence numbers
    await queue.redis.hset(queue.keys.log, message_id, old)
    ((dead, _),) = await queue.dead_letters()
    assert await queue.replay(dead)
    assert await record(queue, message_id) == {
        "n": 1,
        "failed": 1,
        "state": "waiting",
        "key": "k",
        "received_at": arrival,
    }
    await ack_head(queue, message_id, 2)
    found = await message_log.story(queue.redis, queue.keys, message_id)
    assert found is not None
    assert (found.state, found.seq) == ("delivered", None)
    assert [(a.attempt, a.outcome) for a in found.attempts] == [(1, "dead"), (2, "ok")]
