"""aiohttp's half of the router's transport (router.plugin.aiohttp_transport,
which says when it is used): one aiohttp session that sends httpx's
requests and gives back httpx's responses and errors.

Its own module because importing aiohttp takes a tenth of a second (and
builds two SSL contexts of aiohttp's own): only a process that sends
through aiohttp imports it (router.plugin.aiohttp_transport says when).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import aiohttp
import httpx

_NO_CONTENT_TYPE = ("Content-Type",)

# aiohttp's errors as httpx's, most specific first: the first match wins.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # includes SocketTimeoutError
    (asyncio.TimeoutError, httpx.PoolTimeout),  # waiting for a free connection
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # not HTTP, bad header, ...
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),  # reset, broken pipe, ...
    (aiohttp.ClientError, httpx.NetworkError),
)


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ClientError) as exc:
        for theirs, ours in _ERRORS:
            if isinstance(exc, theirs):
                raise ours(str(exc) or type(exc).__name__, request=request) from exc
        raise  # pragma: no cover - _ERRORS ends with ClientError's base
    except ValueError as exc:
        # aiohttp refuses a header value with a newline (a secret read from a
        # file with its trailing newline) with a bare ValueError; httpx's
        # own transport calls that a LocalProtocolError.
        raise httpx.LocalProtocolError(str(exc), request=request) from exc


class _ResponseBody(httpx.AsyncByteStream):
    """The body of an aiohttp response, as httpx reads a stream."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # A body not read to its end closes the connection instead of
        # returning it to the pool (aiohttp decides; see HttpSink's cap).
        self._response.release()


class Session:
    """One aiohttp session (made on first use, inside the event loop that
    uses it), speaking TLS with the router's context (`tls`, built when the
    session is made). Each request names its proxy, which the transport
    chose."""

    def __init__(
        self,
        max_connections: int,
        keepalive_expiry: float,
        tls: Callable[[], ssl.SSLContext],
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None

    def _now(self) -> aiohttp.ClientSession:
        """The session, made on first use (inside the loop that uses it)."""
        if self._session is None:
            self._session = self._open()
        return self._session

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry,
            # The connector's, not each request's (which keep ssl=True, the
            # default): aiohttp's connection errors then read "ssl:default",
            # where a request's own context would print the object and its
            # address into error texts, logs and dead letters.
            ssl=self._tls(),
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Not trust_env: aiohttp would then read ~/.netrc in a thread on
            # every request (measured: half the worker's CPU). The proxy
            # variables are read once, by the transport (_proxy_for).
            trust_env=False,
            auto_decompress=False,  # httpx decodes (or, for aiter_raw, does not)
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def request(self, request: httpx.Request, proxy: str | None) -> httpx.Response:
        """Send an httpx request; its response, the body streamed."""
        timeout = request.extensions.get("timeout", {})
        try:
            data: bytes | AsyncIterator[bytes] | None = request.content or None
        except httpx.RequestNotRead:  # a streamed request body
            data = _chunks(request)
        headers = [(k, v) for k, v in request.headers.multi_items() if k != "transfer-encoding"]
        with _as_httpx_errors(request):
            response = await self._now().request(
                request.method,
                str(request.url),
                headers=headers,
                # aiohttp would add Content-Type: application/octet-stream to
                # a body sent without one; httpx sends none.
                skip_auto_headers=() if "content-type" in request.headers else _NO_CONTENT_TYPE,
                data=data,
                allow_redirects=False,
                compress=False,
                proxy=proxy,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseBody(response, request),
            request=request,
            extensions=extensions,
        )

    async def post_prefix(
        self,
        request: httpx.Request,
        proxy: str | None,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,
        limit: int,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send `body` with `request`'s method (POST, PUT, PATCH) to its URL
        with `headers` and read at most `limit` bytes of the answer:
        (status, raw headers, that prefix).
        Errors arrive as httpx's, as through request().

        The built-in http sink's path through aiohttp: without httpx's work
        per request (building and merging the request, cookies, the
        response object), which a profile put at a third of a delivery's
        CPU. The rest of the answer is never read: the connection is closed
        instead of reused."""
        with _as_httpx_errors(request):
            async with self._now().request(
                request.method,
                str(request.url),
                data=body,
                headers=headers,
                allow_redirects=False,
                compress=False,
                proxy=proxy,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
                ),
            ) as response:
                chunks: list[bytes] = []
                size = 0
                while size < limit:
                    chunk = await response.content.read(limit - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                return response.status, list(response.raw_headers), b"".join(chunks)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _chunks(request: httpx.Request) -> AsyncIterator[bytes]:
    assert isinstance(request.stream, httpx.AsyncByteStream)
    async for chunk in request.stream:
        yield chunk
