"""The transport under the httpx client the router lends to delivery
plugins (router.plugin.client, which says why): httpx builds the request
and reads the response, aiohttp sends and receives it
(router.plugin.aiohttp_session); under the default `h1` delivery transport
the built-in sinks' deliveries go through router.plugin.h1 instead.

Its own module, imported when the first client is made; aiohttp itself
only when a sink is opened that may send through it (prepare) or at its
first request otherwise. Its import takes a tenth of a second, which every
`router` command that delivers nothing (status, check, dead list, ...)
would pay, and so would every process whose destinations all go through
h1 (the built-in http and chatbot sinks, by default).

The TLS context (httpx's defaults, certifi's CAs or SSL_CERT_FILE's) is
built when a sink is opened that may need it, not in its first delivery.
Only a process whose destinations are all built-in http/chatbot sinks on
http URLs under the default h1 transport skips both (with SSL_CERT_FILE
set, the commands that open sinks load it once at start, to refuse a bad
one: router.plugin.tls.ca_file_problem). Every other sink
loads aiohttp and the context when it is opened: a plugin's sink (amqp,
nats, mqtt, a third party's), because the router cannot know whether it
will send through `context.http` nor to what URL, and any sink sending
through aiohttp (ROUTER_DELIVERY_TRANSPORT=aiohttp, or a proxy), because
aiohttp's session takes the context when it is made.
"""

from __future__ import annotations

import functools
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import httpx

from router.plugin import h1
from router.plugin.tls import context_now, ssl_context

if TYPE_CHECKING:
    from router.plugin.aiohttp_session import Session

# A direct path's send: (body, headers, timeout, limit) -> (status, raw
# headers, at most `limit` bytes of the body).
Poster = Callable[
    [bytes, Mapping[str, str], float, int], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]
]


def _speaks_tls(url: httpx.URL) -> bool:
    """Whether a connection to `url` speaks TLS (https or wss, whatever
    the case of the scheme): it then takes the router's TLS context
    (certifi's CAs, or SSL_CERT_FILE's), so it is built for it."""
    return url.scheme.lower() in ("https", "wss")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp session (made on first use,
    inside the event loop that uses it)."""

    def __init__(self, max_connections: int, keepalive_expiry: float, lean: bool = False):
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: Session | None = None
        # The built-in sinks' direct path (poster) through router.plugin.h1
        # (ROUTER_DELIVERY_TRANSPORT=h1); None: through aiohttp too.
        self._lean = h1.Pool(max_connections, keepalive_expiry, ssl_context) if lean else None
        self._proxy_env = urllib.request.getproxies_environment()
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}
        # What the sink's deliveries will need, loaded by prepare: whether
        # it took the direct path (poster), and what that path needs.
        self._direct = False
        self._needs_aiohttp = False
        self._needs_tls = False
        if self._lean is None:
            # ROUTER_DELIVERY_TRANSPORT=aiohttp: everything goes through it.
            self._aiohttp()

    def _aiohttp(self) -> Session:
        """The aiohttp session, made (and aiohttp imported) on first need."""
        if self._session is None:
            from router.plugin.aiohttp_session import Session

            self._session = Session(self._max_connections, self._keepalive_expiry, ssl_context)
        return self._session

    def prepare(self) -> None:
        """Once the sink is built (router.config.plugins.open_sink): what
        its first delivery would otherwise wait for, now. For the direct
        path, what poster found it needs; for a sink that sends through
        the client itself (a plugin's), aiohttp and the TLS context (where
        it sends is not known here, so as for an https URL). aiohttp's
        session takes the context when it is made (Session._open), so
        whatever sends through aiohttp needs both."""
        if not self._direct or self._needs_aiohttp:
            self._aiohttp()
            context_now()
        elif self._needs_tls:
            context_now()

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
        return await self._aiohttp().request(request, self._proxy_for(request.url))

    def poster(self, request: httpx.Request) -> Poster:
        """How the built-in sinks send every delivery to `request`'s method
        and URL: through the lean client (router.plugin.h1) unless this
        transport was made without it or the environment names a proxy for
        the URL (the lean client speaks to destinations directly only);
        through aiohttp otherwise (Session.post_prefix). What that path
        needs (aiohttp, the TLS context) is noted for prepare, which loads
        it when the sink is opened, not in its first delivery."""
        self._direct = True
        proxy = self._proxy_for(request.url)
        if self._lean is not None and proxy is None:
            self._needs_tls |= _speaks_tls(request.url)
            # (Its errors carry no httpx.Request: the sinks read their type
            # and text only.)
            return self._lean.target(request.method, request.url).send
        self._needs_aiohttp = True
        return functools.partial(self._post_prefix, request, proxy)

    async def _post_prefix(
        self,
        request: httpx.Request,
        proxy: str | None,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,
        limit: int,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return await self._aiohttp().post_prefix(request, proxy, body, headers, timeout, limit)

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()
        if self._session is not None:
            await self._session.aclose()
