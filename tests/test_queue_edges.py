"""Edge cases of the lane scripts found in review: each a real server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis as AsyncRedis

from router import envelope
from router.keys import DestinationKeys
from router.queue import DestinationQueue, Outcome, Scripts, Target, enqueue, replay_oldest


@pytest.fixture()
async def queue(clean_redis: str) -> AsyncIterator[DestinationQueue]:
    client = AsyncRedis.from_url(clean_redis)
    try:
        yield DestinationQueue(client, Scripts(client), "edge")
    finally:
        await client.aclose()


async def store(queue: DestinationQueue, key: str, *names: str) -> None:
    for name in names:
        message_id = envelope.new_message_id()
        raw = envelope.encode(message_id, int(time.time() * 1000), json.dumps(name).encode())
        await enqueue(queue.scripts, [Target(queue.keys, key)], raw, message_id, None, 60)


def body(raw: bytes) -> str:
    return str(json.loads(bytes(envelope.decode(raw).body)))


async def test_replayed_dead_letters_keep_their_order(queue: DestinationQueue) -> None:
    await store(queue, "k", "m0", "m1", "m2")
    for _ in range(2):  # m0 then m1 die
        (claim,) = (await queue.claim("t", 1, 30_000, 10)).claims
        assert await queue.fail(claim, 0, "boom", Outcome.DEAD_LETTER) == 1
    assert await replay_oldest(queue) == 2
    lane = await queue.redis.lrange(DestinationKeys("edge").lane("k"), 0, -1)
    assert [body(raw) for raw in lane] == ["m0", "m1", "m2"]


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


async def test_enqueue_with_short_dedup_ttl_is_refused_by_config(tmp_path) -> None:
    from router.config import ConfigError
    from router.loading import load

    path = tmp_path / "routes.yaml"
    path.write_text(
        json.dumps(
            {
                "routes": [{"path": "/x", "destinations": ["d"], "dedup_ttl": "500ms"}],
                "destinations": {"d": {"plugin": "http", "url": "http://127.0.0.1:9/"}},
            }
        )
    )
    with pytest.raises(ConfigError, match="dedup_ttl: must be at least 1s"):
        load(str(path))


def test_absurd_standard_webhooks_timestamp_is_401_not_500() -> None:
    from router.auth import Authenticator, Unauthorized
    from router.config import AuthSettings

    auth = Authenticator(AuthSettings(type="standard-webhooks", secret="whsec_c2VjcmV0"))
    headers = {"webhook-id": "1", "webhook-timestamp": "9" * 400, "webhook-signature": "v1,x"}
    with pytest.raises(Unauthorized):
        auth.check(headers, b"{}")


def test_float_error_status_fails_the_attempt() -> None:
    from router_chatbot import error_in_body

    assert error_in_body({"status": 500.0}) == "bot answered status 500"
    assert error_in_body({"status": 200.0}) is None


async def test_max_age_gives_an_unblocked_message_its_try(
    queue: DestinationQueue, start_router, bot
) -> None:
    """A message older than max_age is still tried once, and again after an
    operator unblocks it, instead of being blocked again untried."""
    from tests.support import Answer, wait_until

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


def test_burst_exits_while_a_key_waits_out_a_backoff(start_router, bot, clean_redis, redis):
    """`router worker --burst` delivers what it can now and leaves a failing
    key queued for the next run instead of waiting for it forever."""
    import subprocess
    import sys

    from tests.support import Answer

    bot.decide = lambda m, n: Answer(status=500) if m["wa_id"] == "bad" else Answer()
    router = start_router(bot.url, workers=False, retry={"initial": "30s", "max_delay": "60s"})
    for key in ("bad", "good"):
        assert router.post({"mensaje": "m", "wa_id": key}).status_code == 200
    done = subprocess.run(
        [sys.executable, "-m", "router", "--routes", str(router.routes_file), "worker", "--burst"],
        env={"REDIS_URL": clean_redis, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert bot.acked_messages("good") == ["m"]
    assert redis.llen(DestinationKeys("chatbot").lane("bad")) == 1  # still queued
    assert redis.zcard(DestinationKeys("chatbot").delayed) == 1
