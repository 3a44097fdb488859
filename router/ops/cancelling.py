"""Ending the router's background tasks for sure.

A cancellation can be lost below the router's code: redis-py 8.2 often
finishes a command whose task was cancelled meanwhile and returns its
answer, the CancelledError gone (in a probe, 335 of 500 cancels landing
during a command). A loop polling Redis then goes on to its next sleep
"cancelling" but never cancelled, and a shutdown that cancelled it once
and awaits it waits forever: a `ROUTER_PROCESSES=2` server process stuck
in its lifespan's exit was this (its operator-log tail asleep in its loop,
the delivery workers behind it never told to stop).

So a task is cancelled again until it has ended; each new cancel lands in
whatever it awaits next (a sleep, which never loses one).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from router.ops.failures import one_line

log = logging.getLogger("router.cancelling")

# How long a cancelled task may take to end before it is cancelled again.
AGAIN_AFTER = 0.5


async def outlast(task: asyncio.Task[Any]) -> None:
    """Return once `task` has ended, however often the caller is cancelled
    meanwhile (the cancellation is raised then): a task's cleanup is never
    cut loose by a repeated cancel (cancel_and_wait) to run on unwatched."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def cancel_and_wait(
    *tasks: asyncio.Task[Any], again_after: float = AGAIN_AFTER, log_errors: bool = True
) -> None:
    """Cancel `tasks` and return once every one has ended. An exception
    other than the cancellation is logged (shutdown goes on), unless
    `log_errors` is False: tasks whose own done callback reports it."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after)
    if not log_errors:
        return
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning("%s ended with an error: %s", task.get_name(), one_line(error))
