"""Delivery through the `router` command as a process: dead letters listed
and replayed with `router dead`, `router worker --burst`. (The rest of
delivery, in-process: tests/integration/test_delivery.py.)"""

from __future__ import annotations

import json
import time

from redis import Redis

from router.queue import envelope
from tests.integration.test_delivery import FAST_RETRY, poison_bot
from tests.support.bot import Bot, check_order
from tests.support.messages import interleaved, post_message, post_round_robin
from tests.support.processes import run_cli
from tests.support.routes import KEYS
from tests.support.servers import wait_until

# -- dead letters ----------------------------------------------------------------


def test_dead_letter_after_max_attempts_then_cli_replay(
    start_router, bot: Bot, redis: Redis, clean_redis: str
) -> None:
    state = poison_bot(bot)
    router = start_router(bot.url, retry={**FAST_RETRY, "max_attempts": 3})
    post_message(router.url, "k", "poison")
    post_message(router.url, "k", "k-1")
    post_message(router.url, "k", "k-2")

    wait_until(lambda: redis.llen(KEYS.dead) == 1, timeout=10, what="a dead letter")
    wait_until(lambda: bot.acked_messages("k") == ["k-1", "k-2"], what="the key goes on")
    time.sleep(0.2)  # no late 4th attempt
    assert len(bot.attempts_of("poison")) == 3
    assert [r.headers["x-router-attempt"] for r in bot.attempts_of("poison")] == ["1", "2", "3"]
    dead = json.loads(redis.lindex(KEYS.dead, 0))
    assert dead["key"] == "k"
    assert dead["attempts"] == 3
    assert "HTTP 500" in dead["error"]
    stored = envelope.decode(dead["envelope"].encode())
    assert json.loads(bytes(stored.body)) == {"mensaje": "poison", "wa_id": "k"}
    assert redis.hget(KEYS.attempts, "k") is None  # the counter left with the message

    routes = str(router.routes_file)
    listed = run_cli("--routes", routes, "dead", "list", "chatbot", "--json", REDIS_URL=clean_redis)
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(lines) == 1
    assert lines[0]["key"] == "k" and lines[0]["attempts"] == 3
    assert lines[0]["envelope"]["id"] == stored.id
    assert lines[0]["envelope"]["body"] == {"mensaje": "poison", "wa_id": "k"}

    state["accept"] = True
    replayed = run_cli("--routes", routes, "dead", "replay", "chatbot", REDIS_URL=clean_redis)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 " in replayed.stdout
    wait_until(lambda: "poison" in bot.acked_messages(), timeout=10, what="replayed delivery")
    assert redis.llen(KEYS.dead) == 0
    poison = bot.attempts_of("poison")
    assert len(poison) == 4
    assert poison[-1].headers["idempotency-key"] == stored.id  # same message, same id
    listed = run_cli("--routes", routes, "dead", "list", "chatbot", "--json", REDIS_URL=clean_redis)
    assert listed.returncode == 0 and listed.stdout.strip() == ""


def test_dead_letter_unknown_destination_in_cli(start_router, bot: Bot, clean_redis: str) -> None:
    router = start_router(bot.url, workers=False)
    done = run_cli(
        "--routes", str(router.routes_file), "dead", "list", "nope", REDIS_URL=clean_redis
    )
    assert done.returncode == 2
    assert "no destination named 'nope'" in done.stderr


# -- burst mode ----------------------------------------------------------------


def test_worker_burst_drains_and_exits(start_router, bot: Bot, clean_redis: str) -> None:
    router = start_router(bot.url, workers=False)
    sent = interleaved(["x", "y", "z"], 10)
    post_round_robin(router.url, sent)
    assert bot.received == []

    def burst() -> None:
        done = run_cli(
            "--routes",
            str(router.routes_file),
            "worker",
            "--burst",
            REDIS_URL=clean_redis,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr

    burst()
    assert check_order(sent, bot.acknowledged()) == (0, 0)
    assert len(bot.received) == 30

    # Nothing left: a second burst exits at once without delivering anything.
    burst()
    assert len(bot.received) == 30
