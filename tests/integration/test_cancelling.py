"""Background tasks that poll a real Redis end when the shutdown cancels
them, even where redis-py loses a cancellation (it finishes the command
and returns its answer): router.ops.cancelling. A server process once hung in
its shutdown this way, its operator-log tail asleep in its loop."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine
from typing import Any

import pytest
from redis.asyncio import Redis

from router.ops.cancelling import cancel_and_wait, outlast
from router.queue import operator_log
from router.queue.operator_log import OperatorAction
from router.redis.mode import open_client

# Each trial cancels a task in the middle of a Redis command.
TRIALS = 6
# Blocks of the operator-log tail left while it logs.
TAIL_TRIALS = 10
# Far beyond an ending task's time: only a task that outlives its cancel
# comes near it.
HANG = 10.0


async def _ends_in_time(block: Coroutine[Any, Any, None]) -> bool:
    """Whether `block` returns within HANG seconds, only watched (a
    deadline that cancelled it would be lost the same way)."""
    task = asyncio.create_task(block)
    done, _ = await asyncio.wait({task}, timeout=HANG)
    if not done:
        await cancel_and_wait(task)  # leave nothing running
    return bool(done)


async def _polling(redis: Redis, looping: asyncio.Event) -> None:
    """A loop like the router's pollers, without the sleep that would
    usually take the cancel: always inside a command."""
    for n in itertools.count():
        await redis.ping()
        if n == 3:  # well inside its loop
            looping.set()


async def test_a_task_inside_a_redis_command_ends_when_cancelled(clean_redis: str) -> None:
    redis = await open_client(clean_redis, 4)
    try:
        for _ in range(TRIALS):
            looping = asyncio.Event()
            task = asyncio.create_task(_polling(redis, looping), name="poller")
            await looping.wait()
            assert await _ends_in_time(cancel_and_wait(task, again_after=0.05))
            assert task.cancelled()
    finally:
        await redis.aclose()


async def _tailing_until_it_logs(redis: Redis) -> None:
    async with operator_log.tailing(redis) as tail:
        while tail.logged == 0:  # noqa: ASYNC110 (the tail has no event to wait on)
            await asyncio.sleep(0)


async def test_the_operator_log_tail_ends_with_its_block_while_it_logs(
    clean_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The tail busy reading and acknowledging entries (Redis commands back
    to back) when the block ends, as when a server stops while operators
    act: leaving the block returns."""
    caplog.set_level(logging.INFO, logger="router.operator")
    redis = await open_client(clean_redis, 4)
    try:
        for trial in range(TAIL_TRIALS):
            for n in range(200):
                action = OperatorAction("retry", "chatbot", f"{trial}.{n}", "cli root@host", "k")
                assert await operator_log.record(redis, action)
            assert await _ends_in_time(_tailing_until_it_logs(redis))
    finally:
        await redis.aclose()


async def test_a_cleanup_that_takes_longer_than_a_cancel_is_not_cut_loose() -> None:
    """A task that outlasts its attempt (as a delivery outlasts its sink's
    call) has ended only once the attempt's cleanup has, though cancelled
    again meanwhile: nothing of it runs on after the claim is handed back."""
    cleaned = asyncio.Event()

    async def attempt() -> None:
        try:
            await asyncio.sleep(HANG)
        finally:
            await asyncio.shield(asyncio.sleep(0.3))  # a plugin's slow abort
            cleaned.set()

    async def delivery() -> None:
        task = asyncio.create_task(attempt())
        try:
            await asyncio.sleep(HANG)
        finally:
            task.cancel()
            await outlast(task)

    outer = asyncio.create_task(delivery())
    await asyncio.sleep(0.01)
    await cancel_and_wait(outer, again_after=0.05)  # several cancels meanwhile
    assert outer.cancelled() and cleaned.is_set()


async def test_an_error_a_cancelled_task_ends_with_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing_on_cancel() -> None:
        try:
            await asyncio.sleep(HANG)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(failing_on_cancel(), name="sampler")
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert "sampler ended with an error: RuntimeError: cleanup failed" in caplog.text
