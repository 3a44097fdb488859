"""The aiohttp transport under the httpx client the router lends to
delivery plugins (router.plugin.client, which says why): httpx builds the
request and reads the response, aiohttp sends and receives it.

Its own module, imported when the first client is made: aiohttp takes a
tenth of a second to import, which every `router` command that delivers
nothing (status, check, dead list, ...) would pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import aiohttp
import httpx

from router.plugin import h1

# A direct path's send: (body, headers, timeout, limit) -> (status, raw
# headers, at most `limit` bytes of the body).
Poster = Callable[
    [bytes, Mapping[str, str], float, int], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]
]

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


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's defaults (certifi's CAs, verified), built once per process:
    loading the CA bundle takes tens of milliseconds, which every
    destination's first delivery would otherwise wait for."""
    return httpx.create_ssl_context()


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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp session (made on first use,
    inside the event loop that uses it)."""

    def __init__(self, max_connections: int, keepalive_expiry: float, lean: bool = False):
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        # The built-in sinks' direct path (poster) through router.plugin.h1
        # (ROUTER_DELIVERY_TRANSPORT=h1); None: through aiohttp too.
        self._lean = h1.Pool(max_connections, keepalive_expiry, _ssl_context) if lean else None
        self._proxy_env = urllib.request.getproxies_environment()
        _ssl_context()  # now, when the sink is opened, not in its first delivery
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}

    def _session_now(self) -> aiohttp.ClientSession:
        """The session, made on first use (inside the loop that uses it)."""
        if self._session is None:
            self._session = self._open()
        return self._session

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry,
            ssl=_ssl_context(),
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Not trust_env: aiohttp would then read ~/.netrc in a thread on
            # every request (measured: half the worker's CPU). The proxy
            # variables are read once, in _proxy_for.
            trust_env=False,
            auto_decompress=False,  # httpx decodes (or, for aiter_raw, does not)
            timeout=aiohttp.ClientTimeout(total=None),
        )

    def _proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy the environment names for `url` (HTTP_PROXY,
        HTTPS_PROXY, ALL_PROXY, NO_PROXY), as httpx's own transport would use."""
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            if len(self._proxies) >= 1024:  # a plugin posting to ever new hosts
                self._proxies.clear()
            env = self._proxy_env
            proxy = env.get(url.scheme) or env.get("all")
            # (proxy_bypass_environment: in urllib since 3.x, missing from typeshed)
            bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
            if proxy and bypass(url.host, env):
                proxy = None
            self._proxies[origin] = proxy
        return self._proxies[origin]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            data: bytes | AsyncIterator[bytes] | None = request.content or None
        except httpx.RequestNotRead:  # a streamed request body
            data = _chunks(request)
        headers = [(k, v) for k, v in request.headers.multi_items() if k != "transfer-encoding"]
        with _as_httpx_errors(request):
            response = await self._session_now().request(
                request.method,
                str(request.url),
                headers=headers,
                # aiohttp would add Content-Type: application/octet-stream to
                # a body sent without one; httpx sends none.
                skip_auto_headers=() if "content-type" in request.headers else _NO_CONTENT_TYPE,
                data=data,
                allow_redirects=False,
                compress=False,
                proxy=self._proxy_for(request.url),
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

    def poster(self, request: httpx.Request) -> Poster:
        """How the built-in sinks send every delivery to `request`'s method
        and URL: through the lean client (router.plugin.h1) unless this
        transport was made without it or the environment names a proxy for
        the URL (the lean client speaks to destinations directly only);
        through aiohttp otherwise (post_prefix)."""
        if self._lean is not None and self._proxy_for(request.url) is None:
            # (Its errors carry no httpx.Request: the sinks read their type
            # and text only.)
            return self._lean.target(request.method, request.url).send
        return functools.partial(self.post_prefix, request)

    async def post_prefix(
        self,
        request: httpx.Request,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,
        limit: int,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send `body` with `request`'s method (POST, PUT, PATCH) to its URL
        with `headers` and read at most `limit` bytes of the answer:
        (status, raw headers, that prefix).
        Errors arrive as httpx's, as through handle_async_request.

        The built-in http sink's path: without httpx's work per request
        (building and merging the request, cookies, the response object),
        which a profile put at a third of a delivery's CPU. The rest of the
        answer is never read: the connection is closed instead of reused."""
        with _as_httpx_errors(request):
            async with self._session_now().request(
                request.method,
                str(request.url),
                data=body,
                headers=headers,
                allow_redirects=False,
                compress=False,
                proxy=self._proxy_for(request.url),
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
        if self._lean is not None:
            await self._lean.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _chunks(request: httpx.Request) -> AsyncIterator[bytes]:
    assert isinstance(request.stream, httpx.AsyncByteStream)
    async for chunk in request.stream:
        yield chunk
