"""The HTTP client the router lends to delivery plugins.

Plugins get an `httpx.AsyncClient` (SinkContext.http), so a plugin written
against httpx works unchanged. What moves the bytes under it is chosen by
measurement (docs/benchmarks.md): httpx's own transport (httpcore) spends
several times more CPU per request than aiohttp's connection pool, which
on a delivery worker is most of the cost of a message. So the client's
transport is `AiohttpTransport` (router.plugin.aiohttp_transport): httpx
builds the request and reads the response, aiohttp sends and receives it.

The built-in http and chatbot sinks go further (direct_transport): they
hand their requests to the transport directly, without httpx's request and
response objects, and by default (`ROUTER_DELIVERY_TRANSPORT=h1`) the
transport sends them through router.plugin.h1, a lean HTTP/1.1 client
measured about 3 times cheaper per request than aiohttp's session.
`ROUTER_DELIVERY_TRANSPORT=aiohttp` sends them through aiohttp too (if a
destination's server ever disagrees with the lean client);
`=httpx` puts httpx's own transport back under everything.

Written here rather than taken from httpx-aiohttp (whose transport this
follows) for the behaviours the router relies on: a failed connection is
reported as what it was (httpx-aiohttp 0.2 reports a refused or reset
connection as a `ConnectTimeout`, which a delivery would log as "timed
out"), and the proxy variables (`HTTPS_PROXY`, `NO_PROXY`, ...) are
honoured as httpx honours them. Cookies are never kept between deliveries
(each message stands alone, as a fresh request would), whatever the
transport.

Differences from httpx's transport a plugin may notice: HTTP/1.1 only (so
is httpx without its `http2` extra), and no separate write timeout (the
worker bounds each attempt by the destination's `timeout` anyway).
"""

from __future__ import annotations

import http.cookiejar
import ssl
import sys
from typing import TYPE_CHECKING, Literal

import httpx

from router.plugin.tls import CaBundleError, ssl_context

# Which transport is under the client (ROUTER_DELIVERY_TRANSPORT, router.config.settings).
DeliveryTransport = Literal["h1", "aiohttp", "httpx"]


if TYPE_CHECKING:
    from router.plugin.aiohttp_transport import AiohttpTransport

# How long an idle connection to a destination is kept for reuse. Shorter
# than the keep-alive timeout of common servers (uvicorn, Node and Apache
# close idle connections after 5 s; httpx's own default is also 5 s): with
# equal timeouts a delivery can go out on a connection the destination is
# closing at that moment, a failed attempt for nothing.
IDLE_CONNECTION_EXPIRY = 2.0

# What every request of the router says it is: the built-in sinks' and,
# as the client's default, a plugin's (httpx would say python-httpx/x.y).
USER_AGENT = "message-router"


def direct_transport(client: httpx.AsyncClient) -> AiohttpTransport | None:
    """The aiohttp transport under a client delivery_client() made, for the
    built-in sinks' direct path; None under httpx's own transport."""
    made = sys.modules.get("router.plugin.aiohttp_transport")
    if made is None:  # imported with the first one: none was ever made
        return None
    transport = getattr(client, "_transport", None)  # httpx keeps the one it was given there
    return transport if isinstance(transport, made.AiohttpTransport) else None


def prepare(client: httpx.AsyncClient) -> None:
    """Once a sink is built on `client` (a delivery_client): load now what
    its first delivery would otherwise wait for (AiohttpTransport.prepare)."""
    transport = direct_transport(client)
    if transport is not None:
        transport.prepare()


def delivery_client(
    max_in_flight: int, timeout: float, transport: DeliveryTransport = "h1"
) -> httpx.AsyncClient:
    """The client one destination's sink delivers with: at most
    `max_in_flight` connections, idle ones dropped after
    IDLE_CONNECTION_EXPIRY, `timeout` per request."""
    limits = httpx.Limits(
        max_connections=max_in_flight,
        max_keepalive_connections=max_in_flight,
        keepalive_expiry=IDLE_CONNECTION_EXPIRY,
    )
    # httpx keeps the cookies of every answer and sends them with every later
    # request, whatever the transport: a jar that accepts none keeps each
    # delivery standing alone (a plugin may still pass cookies= per request).
    cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    headers = {"user-agent": USER_AGENT}  # a plugin's own per request still wins
    if transport == "httpx":
        # httpx would build a TLS context of its own for every client (its
        # CA bundle loaded again: about 20 ms and a context each); the
        # process's is the same defaults, built once (router.plugin.tls).
        # (httpcore sets ALPN on it at each TLS connect: http/1.1 alone, as
        # every client here speaks.)
        try:
            verify = ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise CaBundleError.of(exc) from exc
        return httpx.AsyncClient(
            limits=limits, timeout=timeout, cookies=cookies, headers=headers, verify=verify
        )
    from router.plugin.aiohttp_transport import AiohttpTransport

    return httpx.AsyncClient(
        transport=AiohttpTransport(max_in_flight, IDLE_CONNECTION_EXPIRY, lean=transport == "h1"),
        timeout=timeout,
        cookies=cookies,
        headers=headers,
    )
