"""router.delivery.deadlines: the attempts' timeouts on one timer behave as
asyncio.timeout would, each attempt on its own."""

from __future__ import annotations

import asyncio

import pytest

from router.delivery.deadlines import Deadlines


async def _attempt(deadlines: Deadlines, seconds: float) -> str:
    """What asyncio.timeout around a sink's call is in the worker."""
    deadline = deadlines.start()
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if deadline.end(cancelled=True):
            raise TimeoutError from None
        raise
    deadline.end(cancelled=False)
    return "answered"


def test_only_the_attempts_past_their_deadline_time_out() -> None:
    async def main() -> list[object]:
        deadlines = Deadlines(0.2)
        slow = asyncio.create_task(_attempt(deadlines, 5))
        fast = [asyncio.create_task(_attempt(deadlines, 0.01)) for _ in range(3)]
        await asyncio.sleep(0.1)
        later = asyncio.create_task(_attempt(deadlines, 0.15))  # ends before its own deadline
        later_slow = asyncio.create_task(_attempt(deadlines, 5))  # due 0.1 s after `slow`
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(slow, *fast, later, return_exceptions=True)
        with pytest.raises(TimeoutError):
            await later_slow
        took = asyncio.get_running_loop().time() - started
        assert 0.15 <= took < 1.0, took  # at its own deadline, not the first one's
        return results

    results = asyncio.run(main())
    assert isinstance(results[0], TimeoutError)
    assert results[1:] == ["answered"] * 4


def test_a_cancellation_from_outside_stays_one() -> None:
    async def main() -> None:
        deadlines = Deadlines(5)
        task = asyncio.create_task(_attempt(deadlines, 5))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_task_goes_on_after_its_attempt_timed_out() -> None:
    """The worker's task delivers the key's next message after a timeout:
    no cancellation is left pending on it."""

    async def main() -> list[str]:
        deadlines = Deadlines(0.05)
        outcomes = []
        for seconds in (5, 0.1, 0.01):  # the second outlives the first's deadline
            try:
                outcomes.append(await _attempt(deadlines, seconds))
            except TimeoutError:
                outcomes.append("timed out")
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return outcomes

    assert asyncio.run(main()) == ["timed out", "timed out", "answered"]


def test_deadlines_serve_a_loop_run_anew() -> None:
    deadlines = Deadlines(0.05)
    for _ in range(2):

        async def main() -> None:
            with pytest.raises(TimeoutError):
                await _attempt(deadlines, 5)

        asyncio.run(main())
