"""Answering a request as plain ASGI, without Litestar's layers.

A POST to an ingest route is the router's hot path. Through Litestar it
passes the exception middleware, the router, the handler's signature model,
Response and ASGIResponse: a profile under wrk put those at a fifth of the
process's CPU per request, more than the route's own work. RouterApp
(router.http.lifespan_failure) hands such a request to the route's raw
handler instead (router.web.app builds it), which uses what is here: the
body read from `receive`, the answer sent as two ASGI messages, and an
error answered by the same EXCEPTION_HANDLERS as through Litestar, so the
client cannot tell the two paths apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from litestar import Request
from litestar.datastructures import Headers

from router.http.errors import EXCEPTION_HANDLERS, ApiError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
RawHandler = Callable[[Scope, Receive, Send], Awaitable[None]]

# Answers after which the connection cannot carry another request.
CLOSE = {"connection": "close"}

_MEDIA_TYPES: dict[str, bytes] = {}


def headers_of(scope: Scope) -> Headers:
    """The request's headers, as Litestar's Request.headers gives them."""
    return Headers(scope["headers"])


def client_of(scope: Scope) -> str:
    """The client's address, as Litestar's request.client.host ("unknown": none)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


async def read_body(receive: Receive, headers: Headers, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes: up front from
    Content-Length, else while it streams in (never held whole in memory).
    A client gone mid-body is a 400 that closes the connection."""
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "incomplete request body", CLOSE)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body too large: the limit is {limit} bytes")


async def send_answer(send: Send, body: bytes, media_type: str = "application/json") -> None:
    """A 200 with `body`, the headers Litestar's Response(body, media_type=...) sends."""
    content_type = _MEDIA_TYPES.get(media_type)
    if content_type is None:
        content_type = _MEDIA_TYPES.setdefault(media_type, _content_type(media_type))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _content_type(media_type: str) -> bytes:
    # As Litestar's ASGIResponse writes it: text types get a charset.
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    return media_type.encode("latin-1")


async def send_error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """The answer Litestar's exception middleware gives `exc`: the handler
    of its nearest class in EXCEPTION_HANDLERS, sent as Litestar sends it."""
    request: Request[Any, Any, Any] = Request(scope, receive, send)  # type: ignore[arg-type]
    handler = next(
        EXCEPTION_HANDLERS[cls] for cls in type(exc).__mro__ if cls in EXCEPTION_HANDLERS
    )
    response = handler(request, exc)  # type: ignore[operator]  # its class's handler
    await response.to_asgi_response(None, request)(scope, receive, send)
