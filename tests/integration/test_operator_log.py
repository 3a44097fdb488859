"""The operator log's stream in a real Redis: each recorded action logged
once by one of the processes reading it, an entry left unacknowledged by a
process that died logged by another, the stream and the group bounded
(router.queue.operator_log)."""

from __future__ import annotations

import logging

import pytest
from redis.asyncio import Redis

from router.queue import operator_log
from router.queue.keys import operator_log_key
from router.queue.operator_log import GROUP, OperatorAction, OperatorLogTail

STREAM = operator_log_key()


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "router.operator"]


async def test_each_action_is_logged_by_one_of_the_readers(
    clean_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.operator")
    redis = Redis.from_url(clean_redis)
    try:
        one, two = OperatorLogTail(redis), OperatorLogTail(redis)
        two.consumer += ":2"  # two processes
        await one.step()
        await two.step()
        for n in range(3):
            done = OperatorAction(
                "retry", "chatbot", f"{n} resumed", "cli root@host", "all waiting keys"
            )
            assert await operator_log.record(redis, done)
        assert await two.step() + await one.step() == 3
        assert await one.step() == await two.step() == 0
        assert _lines(caplog) == [
            f"operator: retry chatbot (all waiting keys) from cli root@host: {n} resumed"
            for n in range(3)
        ]
    finally:
        await redis.aclose()


async def test_an_entry_a_dead_process_read_is_logged_by_another(
    clean_redis: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="router.operator")
    monkeypatch.setattr(operator_log, "CLAIM_IDLE_MS", 0)  # "a while" is now
    monkeypatch.setattr(operator_log, "HOUSEKEEPING_SECONDS", 0)
    redis = Redis.from_url(clean_redis)
    try:
        alive = OperatorLogTail(redis)
        assert await alive.step() == 0  # nothing recorded yet: no stream, no group
        assert not await redis.exists(STREAM)
        await operator_log.record(redis, OperatorAction("pause", "crm", "paused", "admin 10.0.0.7"))
        # Another process made the group, read the entry and died before
        # its log line and XACK.
        await redis.xgroup_create(STREAM, GROUP, id="0")
        await redis.xreadgroup(GROUP, "gone:1", {STREAM: ">"})
        assert await alive.step() == 1
        assert _lines(caplog) == ["operator: pause crm from admin 10.0.0.7: paused"]
        assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
    finally:
        await redis.aclose()


async def test_the_stream_and_the_group_stay_bounded(
    clean_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operator_log, "MAX_ENTRIES", 100)
    monkeypatch.setattr(operator_log, "FORGET_CONSUMER_MS", 0)
    redis = Redis.from_url(clean_redis)
    try:
        for _ in range(1000):
            await operator_log.record(redis, OperatorAction("pause", "d", "paused", "cli a@b"))
        assert await redis.xlen(STREAM) < 300  # MAXLEN ~: trimmed by whole nodes
        await redis.xgroup_create(STREAM, GROUP, id="$")
        await redis.xreadgroup(GROUP, "stopped:1", {STREAM: ">"})  # a restarted process's old name
        tail = OperatorLogTail(redis)
        await tail.step()
        names = [c["name"] for c in await redis.xinfo_consumers(STREAM, GROUP)]
        assert names == [tail.consumer.encode()]
    finally:
        await redis.aclose()
