"""What a request is refused with, as plain exceptions: the router's ingest
and an ingest format plugin raise them, router.http.errors answers them (status,
JSON body, headers) in one place. No HTTP framework here, so that the
public plugin API (router.plugin) imports light."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the router refuses, with the status and the reason."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


class BadRequest(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class Unauthorized(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)
