"""A start-up (or shutdown) that fails, reported as one readable line.

When the lifespan raises (a destination's sink refuses to start, Redis
refuses the client), Litestar sends uvicorn `lifespan.startup.failed` with
the whole traceback as its message, and uvicorn logs that text as one
record: in the router's one-line log format a wall of literal `\\n`s, an
ExceptionGroup (Litestar's lifespan runs in an anyio task group) around the
real cause. Here the cause is logged as one line instead (the exception
groups unwrapped), the traceback as a proper traceback at debug, and
uvicorn gets an empty message, so it only adds "Application startup
failed. Exiting."
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar

from router.ops.failures import one_line

log = logging.getLogger("router.api")

_FAILED = {"lifespan.startup.failed": "startup", "lifespan.shutdown.failed": "shutdown"}

Send = Callable[[Any], Awaitable[None]]


class RouterApp(Litestar):
    """The router's Litestar app: its lifespan failures in one line."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            send = _reporting(send)
        await super().__call__(scope, receive, send)


def _reporting(send: Send) -> Send:
    async def send_reported(message: Any) -> None:
        phase = _FAILED.get(message.get("type", ""))
        if phase is not None:
            # Litestar sends the failure while it handles the exception.
            exc = sys.exception()
            cause = one_line(exc) if exc is not None else _last_line(message.get("message", ""))
            log.error("%s failed: %s", phase, cause)
            if exc is not None:
                log.debug("%s failed", phase, exc_info=exc)
            message = {**message, "message": ""}
        await send(message)

    return send_reported


def _last_line(text: str) -> str:
    """The exception's line of a formatted traceback (its last line that is
    not an exception group's frame)."""
    lines = [line.strip(" |+-") for line in str(text).splitlines()]
    return next((line for line in reversed(lines) if line), "(no reason given)")
