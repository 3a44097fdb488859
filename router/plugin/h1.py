"""A lean HTTP/1.1 client for the built-in sinks' deliveries (the `h1`
delivery transport, the default: router.plugin.client says how it is
chosen).

A delivery is one small request and one small answer on a kept-alive
connection to the same destination, over and over. aiohttp's
`ClientSession.request` does far more per request than that needs
(URL and header objects, cookie and trace hooks, timers per read, a
response object with a stream): measured on this project's bench, the
same POSTs to the same sink go about 3 times as fast at 64 in flight and
twice as fast one at a time through this module (docs/benchmarks.md). So
the built-in http and chatbot sinks send through it, and plugins keep the
full httpx client over aiohttp (router.plugin.aiohttp_transport).

What it does: a pool of connections per origin (at most `max_connections`
open at once, idle ones reused most recent first and never after
`keepalive_expiry` idle), TLS with httpx's verified defaults, the request
written in one piece, the answer parsed by httptools (llhttp, as uvicorn
uses on the server side) with chunked and close-delimited bodies, 1xx
answers skipped. At most `limit` bytes of the body are kept; an answer
longer than that is cut there and its connection closed, not read on.

Addresses are tried in the order the resolver gives them, one after the
other (uvloop, the default loop, has no Happy Eyeballs): a destination whose
host name has an IPv6 address that silently drops packets spends the
attempt's timeout on it, where aiohttp would fall back to IPv4 after 250 ms.
Such a destination takes its IPv4 address in the URL, or
ROUTER_DELIVERY_TRANSPORT=aiohttp.

What it does not do, because a delivery needs none of it: redirects (a 3xx
is the destination's answer), cookies, compression, proxies (a proxy in the
environment sends the sink through aiohttp instead:
AiohttpTransport.poster), HTTP/2, request streaming. A POST is never sent
twice: a connection that fails after the request was written fails the
attempt, which the worker retries as any failure.

Errors are httpx's, as from httpx's own transport: ConnectError /
ConnectTimeout / PoolTimeout / ReadTimeout / ReadError /
RemoteProtocolError / LocalProtocolError (a header value with a newline).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ssl
from collections.abc import Callable, Mapping
from typing import cast

import httptools
import httpx

Origin = tuple[str, str, int]  # scheme, host, port

# Raw response headers, as httpx keeps them: (name, value) bytes.
RawHeaders = list[tuple[bytes, bytes]]


class _Connection(asyncio.Protocol):
    """One connection to an origin: one exchange at a time."""

    def __init__(self, pool: Pool, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        # The loop it runs on, kept: on Python 3.11 every
        # asyncio.get_running_loop() is a getpid() system call, and an
        # exchange would otherwise ask for it at each step.
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.holds_slot = False  # counted in the pool's open connections
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, RawHeaders, bytes]] | None = None
        self._reset(0)

    def _reset(self, limit: int) -> None:
        self._limit = limit
        self._headers: RawHeaders = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._status = 0
        self._headers_done = False
        self._until_close = False  # a body that ends when the connection does
        self.reusable = False

    # -- one exchange ---------------------------------------------------------

    async def exchange(
        self, data: bytes, limit: int, deadline: float
    ) -> tuple[int, RawHeaders, bytes]:
        """Write `data` (a whole request) and wait for the answer: status,
        raw headers and at most `limit` bytes of the body."""
        assert self.transport is not None
        loop = self.loop
        self._reset(limit)
        waiter = self._waiter = loop.create_future()
        self.transport.write(data)
        # One timer for the whole answer (the attempt as a whole is bounded
        # by the destination's timeout anyway: router.delivery.attempt).
        timer = loop.call_at(deadline, self._timed_out)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None
            if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
                # Cancelled, timed out or failed mid-answer: what is left of
                # it on the wire would be read as the next one's. Aborted,
                # not closed: a close waits for the unsent rest of the
                # request (or a TLS close_notify answer, up to 30 s), holding
                # the pool's slot, from a server that may read nothing.
                self._abort()

    def _timed_out(self) -> None:
        self._fail(httpx.ReadTimeout("timed out waiting for the answer"))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _finish(self, reusable: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self.reusable = reusable
            waiter.set_result((self._status, self._headers, b"".join(self._chunks)))

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses.)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for (a server talking past its answer):
            # the connection can no longer be trusted.
            self._close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP answer: {exc}"))
            self._close()
        except httptools.HttpParserUpgrade:  # (not an HttpParserError)
            self._fail(httpx.RemoteProtocolError("the server switched protocols (101)"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._headers_done and self._until_close and exc is None:
            self._finish(False)  # the body was everything up to the close
        elif exc is not None:
            self._fail(httpx.ReadError(str(exc) or type(exc).__name__))
        else:
            self._fail(httpx.RemoteProtocolError("Server disconnected without a complete answer"))
        self.pool._lost(self)

    def _close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def _abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    # -- httptools callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            # A second answer to one request (in the same read as the
            # first): the connection can no longer be trusted.
            self._close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True
        if self._status >= 200 and self._status not in (204, 304):
            names = {name.lower() for name, _ in self._headers}
            self._until_close = b"content-length" not in names and (
                b"transfer-encoding" not in names
            )

    def on_body(self, body: bytes) -> None:
        room = self._limit - self._size
        if room <= 0:
            return
        if len(body) >= room:
            self._chunks.append(body[:room])
            self._size = self._limit
            # Enough: the rest is not read (nor waited for: aborted), and
            # the connection not reused.
            self._finish(False)
            self._abort()
            return
        self._chunks.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real
            # one follows on the same connection.
            self._reset(self._limit)
            return
        self._finish(self._parser.should_keep_alive())


class Pool:
    """The connections of one destination's client, per origin; at most
    `max_connections` open (or opening) at once."""

    def __init__(
        self,
        max_connections: int,
        keepalive_expiry: float,
        ssl_context: Callable[[], ssl.SSLContext],
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    def target(self, method: str, url: httpx.URL) -> Target:
        return Target(self, method, url)

    async def acquire(self, origin: Origin, deadline: float) -> _Connection:
        """A connection to `origin`: an idle one kept alive, or a new one."""
        while True:
            conn = self._idle_one(origin)
            if conn is not None:
                return conn
            if self._open < self.max_connections:
                break
            # Full: close another origin's idle connection if there is one
            # (its slot is freed when the close lands), and wait for a slot
            # or for a connection to come back idle.
            self._close_one_idle()
            await self._wait_for_room(deadline)
        self._open += 1
        try:
            conn = await self._connect(origin, deadline)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        conn.holds_slot = True
        return conn

    def _idle_one(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection to `origin` still fit
        for reuse; expired ones met on the way are closed."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = idle[-1].loop.time()
        while idle:
            conn = idle.pop()
            # (closing: the server's close seen, connection_lost not yet run)
            closing = conn.transport is None or conn.transport.is_closing()
            if not conn.closed and not closing and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn._close()  # expired: the server may be closing it right now
        return None

    async def _wait_for_room(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Woken, but leaving (cancelled or timed out at that moment):
                # the room it was woken for goes to the next waiter.
                self._wake_one()
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("timed out waiting for a free connection") from None
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _connect(self, origin: Origin, deadline: float) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin, loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    def release(self, conn: _Connection) -> None:
        """Back to the pool after an exchange: kept alive if the answer
        allows it, closed otherwise."""
        if conn.reusable and not conn.closed and not self._closed:
            conn.idle_since = conn.loop.time()
            self._idle.setdefault(conn.origin, []).append(conn)
            self._wake_one()  # a waiter for this origin takes it
        else:
            conn._close()

    def _lost(self, conn: _Connection) -> None:
        """A connection closed (by either side): its slot is free."""
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)
        if conn.holds_slot:
            conn.holds_slot = False
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_one_idle(self) -> bool:
        """Close the longest idle connection of any origin, to make room."""
        oldest: _Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        self._idle[oldest.origin].remove(oldest)
        oldest._close()  # its slot is freed when the close lands (_lost)
        return True

    async def aclose(self) -> None:
        self._closed = True
        idle = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        for conn in idle:
            conn._close()
        if idle:
            await asyncio.sleep(0)  # let the transports' close callbacks run


class Target:
    """One method and URL, prepared once: what a sink sends every delivery
    to."""

    def __init__(self, pool: Pool, method: str, url: httpx.URL) -> None:
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"not an http(s) URL: {url}")
        self.pool = pool
        port = url.port or (443 if url.scheme == "https" else 80)
        self.origin: Origin = (url.scheme, url.raw_host.decode("ascii"), port)  # IDNA-encoded
        target = url.raw_path.decode("ascii")
        self._head = f"{method} {target} HTTP/1.1\r\n"
        self._host = url.netloc.decode("ascii")  # (without the userinfo)
        # Credentials in the URL (https://user:pass@host/) go as Basic
        # auth, unless the destination's headers set an Authorization of
        # their own: the one configured explicitly wins. (httpx would send
        # Basic and drop the header; aiohttp refuses the combination.)
        self._basic = None
        if url.userinfo:
            pair = f"{url.username}:{url.password}".encode()
            self._basic = "Basic " + base64.b64encode(pair).decode("ascii")

    async def send(
        self, body: bytes, headers: Mapping[str, str], timeout: float, limit: int
    ) -> tuple[int, RawHeaders, bytes]:
        """Send `body` with `headers`; the answer's status, raw headers and
        at most `limit` bytes of its body. `timeout` bounds getting a
        connection and, from there, getting the answer."""
        data = self._request(body, headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self.pool.acquire(self.origin, deadline)
        try:
            return await conn.exchange(data, limit, deadline)
        finally:
            self.pool.release(conn)

    def _request(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [self._head]
        if "host" not in headers:
            lines.append(f"host: {self._host}\r\n")
        if self._basic is not None and "authorization" not in headers:
            lines.append(f"authorization: {self._basic}\r\n")
        if "accept" not in headers:
            lines.append("accept: */*\r\n")  # as httpx and aiohttp send by default
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise httpx.LocalProtocolError(f"a newline in the value of header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"content-length: {len(body)}\r\n\r\n")
        return "".join(lines).encode() + body
