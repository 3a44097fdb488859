"""A request's deadline in two phases, for the ingest hot path.

asyncio.timeout does the same job, but a request that reads its body
under one deadline and stores under another pays for a timer armed, then
cancelled and armed again, and on Python 3.11 for about five
get_running_loop() calls, each a getpid() system call (a profile under wrk
counted 8 a request in the whole process). Here the timer is armed once,
at the earliest either phase could end, and the second phase only moves
the deadline: in the rare request still running when the timer fires, the
timer re-arms itself for the moved deadline. Expiry behaves as
asyncio.timeout's: the task is cancelled, and the cancellation leaves the
block as TimeoutError unless someone else cancelled the task too.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class TwoPhaseDeadline:
    """`with TwoPhaseDeadline(loop, first, then) as deadline:` ends the block
    with TimeoutError `first` seconds from entry, or, once
    `deadline.next_phase()` is called, `then` seconds from that call."""

    __slots__ = (
        "_armed",
        "_cancelling",
        "_expired",
        "_first",
        "_handle",
        "_loop",
        "_task",
        "_then",
        "_when",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, first: float, then: float) -> None:
        self._loop = loop
        self._first = first
        self._then = then
        self._when = 0.0  # the deadline
        self._armed = 0.0  # when the timer fires: never after the deadline
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False
        self._cancelling = 0

    def __enter__(self) -> TwoPhaseDeadline:
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("TwoPhaseDeadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        now = self._loop.time()
        self._when = now + self._first
        # No later than the second phase could end (it starts after entry).
        self._arm(now + min(self._first, self._then))
        return self

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self._loop.call_at(when, self._on_time)

    def next_phase(self) -> None:
        """The second phase starts: the deadline is `then` seconds from now."""
        self._when = self._loop.time() + self._then
        if self._armed > self._when and self._handle is not None:
            # Re-armed during a long first phase for its own end.
            self._arm(self._when)

    def _on_time(self) -> None:
        self._handle = None
        # (A timer may fire a little before its time, uvloop's by up to a
        # millisecond: the time it was armed for counts as reached.)
        if max(self._loop.time(), self._armed) < self._when:  # moved on since armed
            self._arm(self._when)
            return
        self._expired = True
        assert self._task is not None
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired:
            assert self._task is not None
            # As asyncio.timeout: ours unless the task was cancelled again since.
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
