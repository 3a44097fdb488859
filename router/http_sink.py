"""A sink that POSTs the message to a URL: the built-in ``http`` plugin, and
the base the chatbot plugin (and any HTTP plugin) builds on."""

from __future__ import annotations

import email.utils
import ipaddress
import re
import socket
import time
from typing import ClassVar

import httpx
import msgspec

from router.delivery_http import direct_transport
from router.sinks import Delivery, DeliveryFailed, SinkContext


class HttpOptions(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    headers: dict[str, str] = {}
    # Header carrying the message id, the same on every retry so the
    # destination can drop redeliveries (the IETF Idempotency-Key draft).
    id_header: str = "Idempotency-Key"

    # Spaces and control characters: httpx would quietly percent-encode some
    # (even in the host) and refuse others only at the first delivery.
    _UNSAFE_CHARACTERS: ClassVar[re.Pattern[str]] = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
    # Where cloud machines answer with their credentials (AWS, GCP, Azure,
    # ...): a destination there sends messages to the machine's metadata
    # service, the usual aim of server-side request forgery.
    _METADATA_HOSTS: ClassVar[frozenset[str]] = frozenset({"metadata.google.internal", "metadata"})
    _METADATA_ADDRESSES: ClassVar[frozenset[ipaddress.IPv6Address]] = frozenset(
        {ipaddress.IPv6Address("fd00:ec2::254")}  # AWS's IPv6 metadata address
    )

    def __post_init__(self) -> None:
        # Checked when routes.yaml loads (msgspec reports it as a config
        # error), not first when a worker builds the sink.
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self._UNSAFE_CHARACTERS.search(self.url):
            raise ValueError(
                f"url {self.url!r} contains a space or control character; "
                "percent-encode it (a space is %20)"
            )
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"url {self.url!r} is not a valid URL: {exc}") from None
        if not url.host:
            raise ValueError(f"url {self.url!r} names no host; write http://host[:port]/path")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise ValueError(f"url {self.url!r}: a port is a number from 1 to 65535")

    def config_warnings(self) -> list[str]:
        """What routes.yaml should know about these options: each "option: what"."""
        address = self._metadata_address(httpx.URL(self.url).host)
        if address is None:
            return []
        return [
            f"url: {self.url!r} points at {address}, a link-local or cloud metadata "
            "address (where a cloud machine serves its own credentials); "
            "make sure this destination is meant"
        ]

    @classmethod
    def _metadata_address(cls, host: str) -> str | None:
        """`host` named as it connects when it is a link-local or cloud
        metadata address (numeric forms as the resolver reads them:
        2852039166 and 0xa9fea9fe are 169.254.169.254), else None."""
        name = host.lower().rstrip(".")
        if name in cls._METADATA_HOSTS:
            return name
        try:
            ip = ipaddress.ip_address(name.partition("%")[0])  # without an IPv6 zone
        except ValueError:
            try:  # the forms inet_aton (and so getaddrinfo) accepts
                ip = ipaddress.IPv4Address(socket.inet_aton(name))
            except OSError:
                return None  # a DNS name: what it resolves to is not known here
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_link_local or ip in cls._METADATA_ADDRESSES:
            return str(ip)
        return None


# delta-seconds (RFC 9110: digits; a decimal fraction is tolerated).
_DELTA_SECONDS = re.compile(r"^\d{1,12}(?:\.\d{1,9})?$")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date);
    None when absent or unparsable (negative, NaN, words), so it is ignored.
    A date in the past gives 0."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# How much of a destination's answer is read: enough to judge it (a JSON
# status, an error text). The rest is never read, so one huge answer costs
# no memory and no time; the connection is closed instead of reused.
MAX_ANSWER_BYTES = 64 * 1024

# Headers that describe the whole body on the wire, not the prefix kept.
_WIRE_HEADERS = (b"content-length", b"content-encoding", b"transfer-encoding")

USER_AGENT = "message-router"


class HttpSink:
    """POST the body as received; any 2xx acknowledges the message."""

    def __init__(self, options: HttpOptions, context: SinkContext) -> None:
        if not options.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {options.url!r}")
        self.options = options
        self.context = context
        self.http = context.http
        # Under the router's aiohttp transport the POST goes to it directly
        # (router.delivery_http.AiohttpTransport.post_prefix).
        self._direct = direct_transport(context.http)
        self._request = httpx.Request("POST", options.url)  # what answers refer to
        self._headers = {
            "content-type": "application/json",
            # Uncompressed answers: a small compressed one must not expand
            # past MAX_ANSWER_BYTES in memory.
            "accept-encoding": "identity",
            "user-agent": USER_AGENT,
            **{k.lower(): v for k, v in options.headers.items()},
        }

    async def deliver(self, delivery: Delivery) -> None:
        headers = {
            **self._headers,
            self.options.id_header.lower(): delivery.id,  # (header names lower-cased: one of each)
            "x-router-attempt": str(delivery.attempt),
        }
        if delivery.traceparent is not None:
            headers["traceparent"] = delivery.traceparent
            if delivery.tracestate is not None:
                headers["tracestate"] = delivery.tracestate
        timeout = self.context.timeout
        try:
            if self._direct is not None:
                status, raw_headers, prefix = await self._direct.post_prefix(
                    self._request, delivery.body, headers, timeout, MAX_ANSWER_BYTES
                )
            else:
                async with self.http.stream(
                    "POST",
                    self.options.url,
                    content=delivery.body,
                    headers=headers,
                    timeout=timeout,
                ) as streamed:
                    prefix = await _read_prefix(streamed, MAX_ANSWER_BYTES)
                status, raw_headers = streamed.status_code, streamed.headers.raw
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"timed out after {timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        kept = [(k, v) for k, v in raw_headers if k.lower() not in _WIRE_HEADERS]
        self.check(httpx.Response(status, headers=kept, content=prefix, request=self._request))

    def check(self, response: httpx.Response) -> None:
        """Raise DeliveryFailed unless the response acknowledges the message.

        `response.content` holds at most MAX_ANSWER_BYTES of the answer;
        `response.request` names the method and URL only (not the headers or
        body sent: building that per delivery would cost for nothing)."""
        if not response.is_success:
            raise DeliveryFailed(
                f"HTTP {response.status_code}: {response.text[:200]}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )

    async def aclose(self) -> None:
        """The shared HTTP client is closed by the router."""


async def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of the body as sent (a compressed body stays
    compressed: the check then sees bytes it cannot parse)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)
