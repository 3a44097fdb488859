"""router.http.deadline: the ingest request's two-phase deadline ends the
block as asyncio.timeout would, in either phase, and only then."""

from __future__ import annotations

import asyncio

import pytest

from router.http.deadline import TwoPhaseDeadline


async def _run(first: float, then: float, phase1: float, phase2: float) -> float:
    """Sleep `phase1`, start the second phase, sleep `phase2`; the time taken."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with TwoPhaseDeadline(loop, first, then) as deadline:
        await asyncio.sleep(phase1)
        deadline.next_phase()
        await asyncio.sleep(phase2)
    return loop.time() - started


def test_no_expiry_when_both_phases_end_in_time() -> None:
    assert asyncio.run(_run(0.5, 0.5, 0.01, 0.01)) < 0.4


@pytest.mark.parametrize(("first", "then"), [(0.1, 5.0), (0.1, 0.05)])
def test_the_first_phase_ends_at_its_own_deadline(first: float, then: float) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await _run(first, then, 5.0, 0)
        return loop.time() - started

    assert 0.09 <= asyncio.run(main()) < 1.0


@pytest.mark.parametrize(("first", "then"), [(5.0, 0.1), (0.05, 0.2)])
def test_the_second_phase_ends_then_seconds_after_it_starts(first: float, then: float) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await _run(first, then, 0.02, 5.0)
        return loop.time()

    async def timed() -> float:
        started = asyncio.get_running_loop().time()
        return await main() - started

    assert 0.02 + then - 0.01 <= asyncio.run(timed()) < 0.02 + then + 0.5


def test_a_long_first_phase_does_not_delay_a_shorter_second_one() -> None:
    # The timer re-armed for the first phase's end (10 s) is moved back.
    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await _run(10.0, 0.1, 0.3, 5.0)
        return loop.time() - started

    assert 0.35 <= asyncio.run(main()) < 1.5


def test_another_cancellation_is_not_turned_into_a_timeout() -> None:
    async def main() -> None:
        task = asyncio.create_task(_run(0.05, 0.05, 5.0, 0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_error_inside_the_block_passes_through() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with TwoPhaseDeadline(loop, 0.05, 0.05):
            raise KeyError("x")

    with pytest.raises(KeyError):
        asyncio.run(main())
