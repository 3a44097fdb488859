"""A sink that POSTs the message to a URL: the built-in ``http`` plugin, and
the base the chatbot plugin (and any HTTP plugin) builds on."""

from __future__ import annotations

import email.utils
import re
import time

import httpx
import msgspec

from router.sinks import Delivery, DeliveryFailed, SinkContext


class HttpOptions(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    headers: dict[str, str] = {}
    # Header carrying the message id, the same on every retry so the
    # destination can drop redeliveries (the IETF Idempotency-Key draft).
    id_header: str = "Idempotency-Key"

    def __post_init__(self) -> None:
        # Checked when routes.yaml loads (msgspec reports it as a config
        # error), not first when a worker builds the sink.
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")


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
_WIRE_HEADERS = ("content-length", "content-encoding", "transfer-encoding")


class HttpSink:
    """POST the body as received; any 2xx acknowledges the message."""

    def __init__(self, options: HttpOptions, context: SinkContext) -> None:
        if not options.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {options.url!r}")
        self.options = options
        self.context = context
        self.http = context.http
        self._headers = {
            "content-type": "application/json",
            # Uncompressed answers: a small compressed one must not expand
            # past MAX_ANSWER_BYTES in memory.
            "accept-encoding": "identity",
            **options.headers,
        }

    async def deliver(self, delivery: Delivery) -> None:
        headers = {
            **self._headers,
            self.options.id_header: delivery.id,
            "X-Router-Attempt": str(delivery.attempt),
        }
        try:
            async with self.http.stream(
                "POST",
                self.options.url,
                content=delivery.body,
                headers=headers,
                timeout=self.context.timeout,
            ) as streamed:
                prefix = await _read_prefix(streamed, MAX_ANSWER_BYTES)
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"timed out after {self.context.timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        kept = [(k, v) for k, v in streamed.headers.multi_items() if k not in _WIRE_HEADERS]
        self.check(
            httpx.Response(
                streamed.status_code, headers=kept, content=prefix, request=streamed.request
            )
        )

    def check(self, response: httpx.Response) -> None:
        """Raise DeliveryFailed unless the response acknowledges the message.

        `response.content` holds at most MAX_ANSWER_BYTES of the answer."""
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
