"""Edge cases found in review, through `router` as a process."""

from __future__ import annotations

from router.queue.keys import DestinationKeys
from tests.support.bot import Answer
from tests.support.processes import run_cli


def test_burst_exits_while_a_key_waits_out_a_backoff(start_router, bot, clean_redis, redis):
    """`router worker --burst` delivers what it can now and leaves a failing
    key queued for the next run instead of waiting for it forever."""
    bot.decide = lambda m, n: Answer(status=500) if m["wa_id"] == "bad" else Answer()
    router = start_router(bot.url, workers=False, retry={"initial": "30s", "max_delay": "60s"})
    for key in ("bad", "good"):
        assert router.post({"mensaje": "m", "wa_id": key}).status_code == 200
    done = run_cli("--routes", str(router.routes_file), "worker", "--burst", REDIS_URL=clean_redis)
    assert done.returncode == 0, done.stderr
    assert bot.acked_messages("good") == ["m"]
    assert redis.llen(DestinationKeys("chatbot").lane("bad")) == 1  # still queued
    assert redis.zcard(DestinationKeys("chatbot").delayed) == 1
