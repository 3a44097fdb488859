"""The timeouts of one delivery loop's attempts, kept on one timer.

Every attempt of a destination has the same timeout, so deadlines come due
in the order the attempts started: a queue of them, oldest first, needs one
timer, armed for the oldest, instead of asyncio.timeout's timer per
attempt (a timer handle made, scheduled and cancelled per message: a few
percent of a worker's CPU). An attempt still running at its deadline has
its task cancelled, and `Deadline.end` turns that cancellation into
TimeoutError exactly as asyncio.timeout does (3.11's rule: only when no
other cancellation was asked for meanwhile).
"""

from __future__ import annotations

import asyncio
import collections


class Deadline:
    """One attempt's deadline (loop time `at`) for the task running it."""

    __slots__ = ("at", "cancelling", "done", "expired", "task")

    def __init__(self, at: float, task: asyncio.Task[object], cancelling: int) -> None:
        self.at = at
        self.task = task
        self.cancelling = cancelling  # the task's cancel requests before this attempt
        self.done = False
        self.expired = False  # its task was cancelled for it

    def end(self, cancelled: bool) -> bool:
        """The attempt ended (`cancelled`: with CancelledError): whether
        that was its timeout, to be raised as TimeoutError instead."""
        self.done = True
        if not self.expired:
            return False
        return self.task.uncancel() <= self.cancelling and cancelled


class Deadlines:
    """Deadlines `seconds` after each start, served in start order."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._queue: collections.deque[Deadline] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def start(self) -> Deadline:
        """The deadline of the attempt the current task begins now."""
        # (Asked of the loop known: asyncio's own look-up of the running loop
        # makes a getpid() system call each time.)
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        if task is None:
            task = asyncio.current_task()
            if task is None:
                raise RuntimeError("a deadline needs a task")
        loop = task.get_loop()
        deadline = Deadline(loop.time() + self.seconds, task, task.cancelling())
        queue = self._queue
        if self._loop is not loop:  # the first start, or a loop run anew (a test's)
            queue.clear()
            self._loop, self._timer = loop, None
        while queue and queue[0].done:  # ended before their time: forgotten here
            queue.popleft()
        queue.append(deadline)
        if self._timer is None:
            self._timer = loop.call_at(queue[0].at, self._due, loop, queue[0].at)
        return deadline

    def _due(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """The timer set for `when` fired: cancel what overran, then wait
        for the next deadline still running."""
        self._timer = None
        # (A timer may fire a little before its time, as the loop's clock
        # resolution allows: what it was set for is due, as for asyncio.timeout.)
        now = max(loop.time(), when)
        queue = self._queue
        while queue and (queue[0].done or queue[0].at <= now):
            deadline = queue.popleft()
            if not deadline.done:
                deadline.expired = True
                deadline.task.cancel()
        if queue:
            self._timer = loop.call_at(queue[0].at, self._due, loop, queue[0].at)
