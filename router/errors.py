"""Every error the HTTP API answers, mapped to a status in one place.

Bodies are always JSON: {"status": "error", "error": "<what is wrong>"}.
"""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException
from redis.exceptions import RedisError

log = logging.getLogger("router.api")

# How long a client should wait before retrying while Redis is away.
REDIS_RETRY_AFTER = "1"


class ApiError(Exception):
    """A request the router refuses, with the status and the reason."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        {"status": "error", "error": message},
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _api_error(_: Request, exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.headers)


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
    log.warning("Redis unavailable: %s", exc)
    return error_response(
        503,
        "storage unavailable, nothing was stored; retry later",
        {"Retry-After": REDIS_RETRY_AFTER},
    )


def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal error")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    RedisError: _redis_error,
    Exception: _unexpected,
}
