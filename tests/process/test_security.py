"""Blocked keys, unblocked by the operator with `router dead unblock`."""

from __future__ import annotations

import json

from redis import Redis

from tests.integration.test_security import routes
from tests.support.bot import Answer, Bot
from tests.support.processes import run_cli
from tests.support.routes import KEYS
from tests.support.servers import wait_until


def test_block_on_exhausted_stops_only_its_own_key(
    start_router, bot: Bot, redis: Redis, tmp_path, clean_redis
):
    bot.decide = lambda m, n: Answer(status=500) if m["mensaje"] == "poison" else Answer()
    path = routes(
        tmp_path,
        bot.url,
        {},
        retry={"initial": "20ms", "max_delay": "50ms", "max_attempts": 3, "on_exhausted": "block"},
    )
    router = start_router(bot.url, routes_file=path)
    for body in [("poison", "P"), ("after", "P"), ("a1", "Q"), ("a2", "Q")]:
        assert router.post({"mensaje": body[0], "wa_id": body[1]}).status_code == 200
    wait_until(lambda: redis.hexists(KEYS.blocked, "P"), what="key P blocked")
    wait_until(lambda: bot.acked_messages("Q") == ["a1", "a2"], what="key Q flows")
    assert len(bot.attempts_of("poison")) == 3
    assert bot.attempts_of("after") == []  # blocked behind the poison message
    assert redis.llen(KEYS.lane("P")) == 2
    assert redis.llen(KEYS.dead) == 0
    info = json.loads(redis.hget(KEYS.blocked, "P"))
    assert info["attempts"] == 3 and "HTTP 500" in info["error"]

    # The operator fixes the bot and unblocks the key: the same message goes first.
    bot.decide = lambda m, n: Answer()
    done = run_cli("--routes", str(path), "dead", "unblock", "chatbot", "P", REDIS_URL=clean_redis)
    assert done.returncode == 0, done.stderr
    assert "unblocked 1" in done.stdout
    wait_until(lambda: bot.acked_messages("P") == ["poison", "after"], what="P delivered")
    assert not redis.exists(KEYS.blocked)
