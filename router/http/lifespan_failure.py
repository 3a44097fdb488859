"""The router's Litestar app: a start-up (or shutdown) that fails, reported
as one readable line; and the ingest routes' POSTs answered as plain ASGI.

When the lifespan raises (a destination's sink refuses to start, Redis
refuses the client), Litestar sends uvicorn `lifespan.startup.failed` with
the whole traceback as its message, and uvicorn logs that text as one
record: in the router's one-line log format a wall of literal `\\n`s, an
ExceptionGroup (Litestar's lifespan runs in an anyio task group) around the
real cause. Here the cause is logged as one line instead (the exception
groups unwrapped), the traceback as a proper traceback at debug, and
uvicorn gets an empty message, so it only adds "Application startup
failed. Exiting."

A handler registered with opt RAW_POST (an ingest route's POST, router.web.app)
is documented and routed by Litestar as any other, but a POST to its exact
path is given to that raw ASGI handler before Litestar sees it
(router.http.raw says why). Anything else, a trailing slash or a Host
header Litestar refuses included, goes through Litestar as before.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from litestar import Litestar
from litestar._asgi.utils import is_valid_host
from litestar.handlers import HTTPRouteHandler

from router.http.raw import RawHandler
from router.ops.failures import one_line

log = logging.getLogger("router.api")

_FAILED = {"lifespan.startup.failed": "startup", "lifespan.shutdown.failed": "shutdown"}

Send = Callable[[Any], Awaitable[None]]

# A handler's opt key holding its raw ASGI twin for POSTs (router.http.raw).
RAW_POST = "router_raw_post"


class RouterApp(Litestar):
    """The router's Litestar app: its lifespan failures in one line, and
    the POSTs of handlers with opt RAW_POST answered by their raw twin."""

    # Path -> raw handler; the instance gets its own at the first one
    # (Litestar's __init__ registers the handlers it is given).
    raw_posts: Mapping[str, RawHandler] = MappingProxyType({})

    def register(self, value: Any) -> None:  # type: ignore[override]  # as Litestar's
        # At construction and on a reload's new routes (router.runtime.reload).
        super().register(value)
        raw = value.opt.get(RAW_POST) if isinstance(value, HTTPRouteHandler) else None
        if raw is not None:
            posts = vars(self).setdefault("raw_posts", {})
            for path in value.paths:
                posts[path] = raw

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST" and not scope.get("root_path"):
                raw = self.raw_posts.get(scope["path"])
                if raw is not None and _host_ok(scope["headers"]):
                    await raw(scope, receive, send)
                    return
        elif scope["type"] == "lifespan":
            send = _reporting(send)
        await super().__call__(scope, receive, send)


def _host_ok(headers: list[tuple[bytes, bytes]]) -> bool:
    """No Host header Litestar would refuse (it answers that 400 itself)."""
    for name, value in headers:
        if name == b"host":
            return is_valid_host(value)
    return True


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
