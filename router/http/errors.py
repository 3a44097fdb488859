"""Every error the HTTP API answers, mapped to a status in one place.

Bodies are always JSON: {"status": "error", "error": "<what is wrong>"},
plus "stored" on a 503 of an ingest route.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from litestar import Request, Response
from litestar.exceptions import HTTPException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# The refusals themselves (plain exceptions a plugin may raise): router.plugin.refusal.
from router.plugin.refusal import ApiError as ApiError
from router.plugin.refusal import BadRequest as BadRequest
from router.redis.client import PoolExhausted, pool_busy_cause, waiting_for_connection

log = logging.getLogger("router.api")

# How long a client should wait before retrying while Redis is away.
REDIS_RETRY_AFTER = "1"

# During an outage every request fails the same way: one log line per cause
# at most this often (with how many were not logged), not one per request.
OUTAGE_LOG_INTERVAL = 10.0


Stored = Literal["no", "unknown"]


class StorageUnavailable(ApiError):
    """Redis did not store the message. `stored` says whether that is certain
    ("no": the write never reached Redis, or Redis refused it whole) or not
    ("unknown": Redis may have run it and the answer was lost)."""

    def __init__(self, cause: str, stored: Stored, same: str = "Idempotency-Key header") -> None:
        # `same`: what a retry must repeat to be recognised as a duplicate.
        if stored == "no":
            advice = "the message was not stored; retry later"
        else:
            advice = (
                f"the message may have been stored; retry with the same {same} "
                "so that it is not stored twice"
            )
        super().__init__(
            503, f"{cause}: {advice}", {"Retry-After": REDIS_RETRY_AFTER}, {"stored": stored}
        )
        self.cause = cause


def redis_cause(exc: BaseException, deadline: float | None = None) -> str:
    """What went wrong with Redis, in words an operator can act on."""
    if isinstance(exc, PoolExhausted):
        return str(exc)
    if isinstance(exc, TimeoutError) and waiting_for_connection.get():
        return pool_busy_cause(waiting_for_connection.get(), deadline or 0)
    if isinstance(exc, OutOfMemoryError):
        return "Redis is out of memory (maxmemory reached, policy noeviction)"
    if isinstance(exc, RedisTimeoutError):  # the client's socket timeout
        return "Redis did not answer in time"
    if isinstance(exc, TimeoutError):  # the request's own deadline
        return f"Redis did not answer within {deadline:g}s" if deadline else "Redis timed out"
    if isinstance(exc, RedisConnectionError):
        return f"Redis unreachable ({_one_line(exc)})"
    if isinstance(exc, ResponseError):
        return f"Redis refused the write ({_one_line(exc)})"
    return f"Redis error ({_one_line(exc)})"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


class OutageLog:
    """Logs each cause at once, then at most every OUTAGE_LOG_INTERVAL s."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._last: dict[str, tuple[float, int]] = {}  # cause -> (logged at, not logged since)

    def warning(self, cause: str, what: str) -> None:
        now = time.monotonic()
        logged_at, skipped = self._last.get(cause, (-OUTAGE_LOG_INTERVAL, 0))
        if now - logged_at < OUTAGE_LOG_INTERVAL:
            self._last[cause] = (logged_at, skipped + 1)
            return
        more = f" ({skipped} more like it in the last {now - logged_at:.0f}s)" if skipped else ""
        self.logger.warning("%s: %s%s", what, cause, more)
        if len(self._last) > 100:  # causes carry exception texts: keep it bounded
            self._last.clear()
        self._last[cause] = (now, 0)


outage_log = OutageLog(log)


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    return Response(
        {"status": "error", "error": message, **(extra or {})},
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _api_error(_: Request, exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.headers, exc.extra)


def _http_error(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status >= 500:
        log.error("internal error: %s", exc.detail)
        return error_response(status, "internal error")
    message = {
        404: "no route for this path",
        405: "method not allowed for this path",
        413: "request body too large",
    }.get(status, str(exc.detail))
    return error_response(status, message, dict(exc.headers or {}))


def _redis_error(_: Request, exc: RedisError) -> Response:
    # Ingest turns its own Redis errors into StorageUnavailable; this is
    # every other endpoint (admin), which only reads or changes queues.
    cause = redis_cause(exc)
    outage_log.warning(cause, "request failed")
    return error_response(503, f"{cause}; retry later", {"Retry-After": REDIS_RETRY_AFTER})


def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal error")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    RedisError: _redis_error,
    Exception: _unexpected,
}
