"""uvicorn HTTP protocol classes hardened against slow clients.

uvicorn has no deadline for reading request headers: its keep-alive timeout
only runs between a response and the next byte, so a client that trickles
its headers (or connects and sends nothing) holds a connection forever.
`protocol_class()` builds a subclass of uvicorn's own h11 (or httptools)
protocol that adds:

- A header deadline. A connection is *waiting* from `connection_made`, and
  again from the completion of each response on a keep-alive connection,
  until the headers of its next request are complete. If that takes longer
  than `header_timeout` seconds, the server answers `408` with
  `{"status": "error", "error": "request headers not received within 10s"}`
  and `Connection: close`, then closes; a connection that has sent no byte
  of that request is closed silently instead. Once the headers are in, the
  request proceeds normally however slow its body or the app is (the body
  has its own deadline elsewhere). One edge: when the app answers before
  reading the whole request body, the clock starts at that answer while
  the rest of the body may still be arriving (uvicorn has no hook for the
  end of an unread body); the client already has its answer then.
- A cap on waiting connections. When a new connection arrives while
  `max_pending` connections of the same server are waiting, the one that
  has waited longest is let go to make room: it gets `503 {"status":
  "error", "error": "too many connections waiting to send request
  headers"}` with `Connection: close` and `Retry-After: 1` (even if it has
  sent nothing yet: HTTP/1.1 clients take it as the answer to the request
  they then send, and an idle keep-alive client sees its connection is
  gone) and is closed. Evicting the oldest rather than refusing the
  newcomer is what keeps the server reachable under a slow-loris attack:
  the attacker's connections are the ones that wait, while a real client
  sends its headers within milliseconds of connecting and leaves the
  waiting set long before it could become the oldest. Idle keep-alive
  connections count as waiting (they hold a file descriptor like any
  other) and, being the oldest, go first. Nothing is logged per eviction:
  under attack that would flood the log.
- JSON error bodies for uvicorn's own 400 answers to malformed HTTP:
  `{"status": "error", "error": "Invalid HTTP request received."}`
  (uvicorn's text), `application/json`, `Connection: close`; a malformed
  request pipelined behind good ones gets its 400 after their answers.
- One write per answer (httptools): the response head, which uvicorn
  writes alone, goes out with the body's first write (_HeadWithBody).

The count of waiting connections belongs to the class `protocol_class()`
returns (one per server), and only the server's event loop touches it.

uvicorn internals relied on (uvicorn 0.54, both protocol classes):
`connection_made`, `data_received`, `connection_lost`,
`on_response_complete`, `send_400_response(msg)`, `self.transport`,
`self.loop`, `self.server_state.default_headers`, `self.cycle` (replaced by
a new `RequestResponseCycle` exactly when a request's headers are parsed;
`cycle.response_started` / `cycle.response_complete` / `cycle.more_body`),
and per parser: h11's `self.conn.trailing_data`, httptools'
`on_message_begin` / `on_headers_complete` callbacks and the cycle's
`transport` attribute (what it writes the answer to).
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from uvicorn.server import ServerState

    class _UvicornProtocol(asyncio.Protocol):
        """What the mixin uses of uvicorn's protocol classes (for mypy only:
        at run time the mixin's next class in the MRO is the real one)."""

        transport: asyncio.Transport
        loop: asyncio.AbstractEventLoop
        server_state: ServerState
        cycle: Any  # h11_impl's or httptools_impl's RequestResponseCycle

        def on_response_complete(self) -> None: ...
        def send_400_response(self, msg: str) -> None: ...

else:
    _UvicornProtocol = object


class _HeadWithBody:
    """The transport a request's cycle writes its answer to: the response
    head (uvicorn writes it alone) is held until the body's first write
    and goes out with it in one write, one send() instead of two (a profile
    under wrk showed each send() costs as much as the router's own work on
    a request). Held at most until the loop's next turn (call_soon), so a
    streamed answer's head is not kept waiting for its first chunk. One per
    connection; everything but write and close is the transport's own."""

    __slots__ = ("_held", "_hold_next", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._hold_next = False

    def hold_next(self) -> None:
        """Hold the next write: a new request's answer starts with its head."""
        self._hold_next = True

    def write(self, data: bytes) -> None:
        if self._hold_next:
            self._hold_next = False
            self.flush()
            self._held = data
            self._loop.call_soon(self.flush)
        elif self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held + data)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HeaderDeadlineMixin(_UvicornProtocol):
    """Header deadline, waiting-connection cap and JSON 400s for an uvicorn
    protocol class; put it before that class in the bases."""

    # Set per server by protocol_class().
    header_timeout: ClassVar[float]
    max_pending: ClassVar[int]
    # The connections waiting for request headers, longest-waiting first
    # (a dict for its insertion order; the values are unused).
    _waiting: ClassVar[dict[_HeaderDeadlineMixin, None]]

    # When the wait for the next request's headers began (loop time); None
    # when not waiting. Class defaults, so uvicorn's __init__ needs no override.
    _waiting_since: float | None = None
    # The connection's timer: armed at or before the end of the current wait
    # (never after), and left armed when a wait ends early. A keep-alive
    # connection waits again after each answer: arming and cancelling a
    # timer for each cost more than the rest of this class per request.
    _timer: asyncio.TimerHandle | None = None
    _timer_at = 0.0  # the time _timer was armed for
    # A malformed request's 400, held until the answers before it are out.
    _deferred_400: str | None = None
    # What the requests' cycles write to (httptools only; see _HeadWithBody).
    _one_write: _HeadWithBody | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvicorn's setup first: connection_lost (which asyncio calls even
        # for a connection we refuse) needs self.transport and friends.
        super().connection_made(transport)
        if len(self._waiting) >= self.max_pending:
            next(iter(self._waiting))._evict()
        self._start_waiting()

    def data_received(self, data: bytes) -> None:
        if self._waiting_since is None:
            # Headers already in: body bytes or pipelined requests, which
            # on_response_complete deals with. No extra work per chunk.
            super().data_received(data)
            return
        before = self.cycle
        super().data_received(data)
        # uvicorn makes a new cycle as soon as a request's headers are
        # parsed; a protocol switch (WebSocket upgrade) means connection_lost
        # will go to the new protocol, so stop tracking here too.
        if self.cycle is not before or self.transport.get_protocol() is not self:
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn has now started any pipelined request it had buffered (a
        # new, unfinished cycle); if not, and the connection stays open, the
        # client owes us the next request's headers within the deadline,
        # unless what it sent next was malformed.
        if (
            not self.transport.is_closing()
            and self.transport.get_protocol() is self
            and self.cycle.response_complete
        ):
            if self._deferred_400 is not None:
                self._write_json_error(400, self._deferred_400)
                self.transport.close()
                return
            self._start_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's version answers text/plain; the API promises JSON errors.
        # A malformed request pipelined behind good ones gets its 400 after
        # their answers, in order: httptools parses everything that arrived
        # at once, so the error can come while an earlier request is still
        # being answered (h11 parses the next request only after).
        # The error belongs to a later request only when the current one's
        # body is complete; an error in the current body (a bad chunk) is
        # answered at once, or its handler would wait out the body deadline.
        # Only when the current request has part of its response on the wire
        # would a second answer corrupt the stream: just close then.
        cycle = self.cycle
        if cycle and not cycle.response_complete and not cycle.more_body:
            self._deferred_400 = msg
            self.transport.pause_reading()  # the rest cannot be parsed anyway
            return
        if not cycle or not cycle.response_started or cycle.response_complete:
            self._write_json_error(400, msg)
        self.transport.close()

    # -- internals --

    def _start_waiting(self) -> None:
        self._waiting.pop(self, None)
        self._waiting[self] = None  # now the one that has waited least
        now = self.loop.time()
        self._waiting_since = now
        if self._timer is None:
            self._timer_at = now + self.header_timeout
            self._timer = self.loop.call_at(self._timer_at, self._on_timer)
        # else: armed for an earlier wait, so before this one ends: _on_timer

    def _stop_waiting(self) -> None:
        self._waiting_since = None
        self._waiting.pop(self, None)

    def _on_timer(self) -> None:
        self._timer = None
        since = self._waiting_since
        if since is None:
            return  # not waiting now: the next wait arms it again
        due = since + self.header_timeout
        # (A timer may fire a little before its time, uvloop's by up to a
        # millisecond: the time it was armed for counts as reached.)
        if max(self.loop.time(), self._timer_at) < due:  # armed for an earlier wait
            self._timer_at = due
            self._timer = self.loop.call_at(due, self._on_timer)
            return
        self._headers_overdue()

    def _headers_overdue(self) -> None:
        self._stop_waiting()
        if self.transport.is_closing():
            return
        if self._request_bytes_buffered():
            self._write_json_error(
                408, f"request headers not received within {self.header_timeout:g}s"
            )
        self.transport.close()

    def _evict(self) -> None:
        """Let this waiting connection go to make room for a newcomer."""
        self._stop_waiting()
        if not self.transport.is_closing():
            self._write_json_error(
                503, "too many connections waiting to send request headers", b"retry-after: 1\r\n"
            )
            self.transport.close()

    def _request_bytes_buffered(self) -> bool:
        """Has the client sent any byte of the request we wait for? Asked
        only when the deadline fires, so nothing is counted per chunk."""
        raise NotImplementedError

    def _write_json_error(self, status: int, message: str, extra_headers: bytes = b"") -> None:
        """Write a complete `Connection: close` JSON error response, raw:
        the caller closes the transport right after, so the parser's state
        (h11 or httptools) does not need to know about it."""
        if self._one_write is not None:  # an answer's held head goes first
            self._one_write.flush()
        body = json.dumps({"status": "error", "error": message}).encode()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
            extra_headers,
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + body)


class _H11(_HeaderDeadlineMixin, H11Protocol):
    def _request_bytes_buffered(self) -> bool:
        # h11 keeps an incomplete request head in its receive buffer
        # unparsed, so while we wait that buffer holds exactly what the
        # client sent of the next request.
        return bool(self.conn.trailing_data[0])


_BASES: dict[str, type[_HeaderDeadlineMixin]] = {"h11": _H11}

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed (uvicorn without [standard])
    pass
else:

    class _HttpTools(_HeaderDeadlineMixin, HttpToolsProtocol):
        # httptools parses eagerly and keeps no buffer we can look at: a
        # message has begun (first byte parsed) but its headers are not done.
        _message_begun = False

        def on_message_begin(self) -> None:
            self._message_begun = True
            super().on_message_begin()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._one_write = _HeadWithBody(self.transport, self.loop)

        def on_headers_complete(self) -> None:
            self._message_begun = False
            before = self.cycle
            super().on_headers_complete()
            # uvicorn has just made the request's cycle (its task starts on
            # the loop's next turn; none for an upgrade): it answers
            # through _HeadWithBody.
            one_write = self._one_write
            if one_write is not None and self.cycle is not before:
                one_write.hold_next()
                self.cycle.transport = one_write

        def _request_bytes_buffered(self) -> bool:
            return self._message_begun

    _BASES["httptools"] = _HttpTools


def protocol_class(
    header_timeout: float, max_pending: int, http: str = "auto"
) -> type[asyncio.Protocol]:
    """An uvicorn HTTP protocol class (pass as uvicorn.Config(http=...)) with
    the header deadline, the pending-connection cap and JSON error bodies.
    `http`: "httptools" (C parser, measured faster: docs/benchmarks.md),
    "h11", or "auto" (httptools when installed, as uvicorn's own "auto")."""
    if http == "auto":
        http = "httptools" if "httptools" in _BASES else "h11"
    if header_timeout <= 0:
        raise ValueError(f"header_timeout must be > 0, got {header_timeout}")
    if max_pending < 1:
        raise ValueError(f"max_pending must be >= 1, got {max_pending}")
    base = _BASES.get(http)
    if base is None:
        if http == "httptools":
            raise ValueError("http='httptools' needs the httptools package (uvicorn[standard])")
        raise ValueError(f"http must be 'auto', 'h11' or 'httptools', got {http!r}")
    # A fresh class per server: its own settings and its own waiting set.
    namespace = {
        "header_timeout": float(header_timeout),
        "max_pending": max_pending,
        "_waiting": {},
    }
    name = f"Guarded{base.__name__.strip('_')}Protocol"
    return cast("type[asyncio.Protocol]", type(name, (base,), namespace))


def __getattr__(name: str) -> type[asyncio.Protocol]:
    """`router.http.server:FromEnvironment`: the protocol class with the
    settings of this process's environment, for uvicorn's import string.
    `router serve --reload` and ROUTER_PROCESSES > 1 need one: the server
    runs in spawned children, which import the protocol by name (the class
    `protocol_class()` builds cannot be pickled). Built on first use, so
    importing this module never reads the environment."""
    if name != "FromEnvironment":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from router.config.settings import Settings

    settings = Settings.from_env()
    cls = protocol_class(
        settings.header_timeout, settings.max_pending_connections, settings.http_parser
    )
    globals()[name] = cls  # one class (one waiting set) per process
    return cls
