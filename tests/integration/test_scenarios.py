"""The three scenarios of the original spec, end to end: on one Redis, and
again on a real Redis Cluster (3 masters + 3 replicas)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from redis import Redis

from router.queue.envelope import decode
from tests.support.bot import Answer, Bot
from tests.support.cluster import sync_client
from tests.support.routes import KEYS
from tests.support.servers import wait_until


@pytest.fixture(params=["single", "cluster"])
def clean_redis(request: pytest.FixtureRequest, clean_redis: str) -> str:
    """The root fixture's emptied single Redis, or an emptied Cluster."""
    if request.param == "single":
        return clean_redis
    return str(request.getfixturevalue("cluster_url"))


@pytest.fixture()
def redis(clean_redis: str) -> Iterator[Redis]:
    client = sync_client(clean_redis)
    try:
        yield client
    finally:
        client.close()


def test_store_writes_to_the_destination_queue_before_answering(
    start_router, bot: Bot, redis: Redis
) -> None:
    """Scenario 1: the answer goes out only after Redis has the message."""
    router = start_router(bot.url, workers=False)
    answers = [router.post({"mensaje": f"m{i}", "wa_id": "44912345678"}) for i in range(3)]
    for a in answers:
        assert a.status_code == 200
        assert a.json()["status"] == "ok"
        assert a.json()["id"].startswith("msg_")
    lane = redis.lrange(KEYS.lane("44912345678"), 0, -1)
    stored = [decode(raw) for raw in lane]
    assert [e.id for e in stored] == [a.json()["id"] for a in answers]  # oldest -> newest
    assert [bytes(e.body) for e in stored] == [
        b'{"mensaje":"m0","wa_id":"44912345678"}',
        b'{"mensaje":"m1","wa_id":"44912345678"}',
        b'{"mensaje":"m2","wa_id":"44912345678"}',
    ]
    assert redis.lrange(KEYS.ready, 0, -1) == [b"44912345678"]
    assert bot.received == []  # no worker ran


def test_deliver_waits_for_each_answer_before_the_next(start_router, bot: Bot) -> None:
    """Scenario 2: oldest first, one at a time per conversation."""
    bot.latency = (0.02, 0.05)
    router = start_router(bot.url)
    for i in range(10):
        assert router.post({"mensaje": f"m{i}", "wa_id": "44912345678"}).status_code == 200
    wait_until(lambda: len(bot.received) >= 10, what="10 deliveries")
    assert bot.acked_messages() == [f"m{i}" for i in range(10)]
    assert bot.max_in_flight_per_key == 1
    first = bot.received[0]
    assert first.body == {"mensaje": "m0", "wa_id": "44912345678"}
    assert first.headers["content-type"] == "application/json"
    assert first.headers["idempotency-key"].startswith("msg_")


# lease 5s: attempts (timeout 2s) run beside a lease-renewing task;
# lease 7s: an attempt always ends before the lease needs renewing (no task).
@pytest.mark.parametrize("lease", ["5s", "7s"])
def test_bot_error_is_retried_with_backoff_and_order_kept(
    start_router, bot: Bot, redis: Redis, lease: str
) -> None:
    """Scenario 3: every kind of bot error delays and retries the same message;
    the next message of the conversation waits for it."""
    failures = {
        0: Answer(status=500, body={"status": "error"}),
        1: Answer(status=200, body={"status": "error", "error": "model overloaded"}),
        2: Answer(status=503, body="down", headers={"Retry-After": "0.3"}),
        3: Answer(status=200, delay=3.0),  # longer than the 2s timeout
    }
    bot.decide = lambda m, n: failures.get(n, Answer())
    router = start_router(bot.url, lease=lease)
    for i in range(3):
        router.post({"mensaje": f"m{i}", "wa_id": "1"})
    wait_until(lambda: "m2" in bot.acked_messages("1"), timeout=30, what="recovery")
    attempts = [r.body["mensaje"] for r in bot.received]
    assert attempts == ["m0"] * 5 + ["m1", "m2"], attempts
    # The bot counts the stalled attempt as answered (it replied after the
    # router had given up on it), so m0 shows twice there: a redelivery the
    # Idempotency-Key lets a bot drop, never a reordering.
    assert bot.acked_messages("1") == ["m0", "m0", "m1", "m2"]
    assert len({r.headers["idempotency-key"] for r in bot.attempts_of("m0")}) == 1
    # backoff: each retry waited at least the policy's delay (50ms, x2) or Retry-After
    gaps = [b.at - a.at for a, b in zip(bot.received, bot.received[1:5], strict=False)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.08
    assert gaps[2] >= 0.29  # Retry-After: 0.3 honoured
    # m1 was first tried only after m0's last attempt (the one that succeeded).
    # (The bot's own in-flight count is not used here: the attempt that timed
    # out keeps sleeping in the bot after the router gave up on it.)
    first_m1 = next(r.at for r in bot.received if r.body["mensaje"] == "m1")
    assert first_m1 > max(r.at for r in bot.received if r.body["mensaje"] == "m0")


def test_refused_connection_is_retried_until_the_bot_is_back(start_router, bot: Bot) -> None:
    """Scenario 3 with the bot gone: nothing is lost while it is away."""
    assert bot.server is not None
    port = bot.server.port
    bot.server.stop()
    router = start_router(bot.url)
    for i in range(5):
        assert router.post({"mensaje": f"m{i}", "wa_id": "7"}).status_code == 200
    time.sleep(1.0)  # several failed attempts against a closed port
    from tests.support.servers import ServerThread

    bot.server = ServerThread(bot, port=port).start()
    wait_until(lambda: len(bot.acknowledged()) >= 5, timeout=20, what="delivery after return")
    assert bot.acked_messages("7") == [f"m{i}" for i in range(5)]
    r = httpx.get(router.url + "/readyz")
    assert r.status_code == 200
