"""A sink that POSTs the message to a URL: the built-in ``http`` plugin, and
the base the chatbot plugin (and any HTTP plugin) builds on."""

from __future__ import annotations

import email.utils
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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpSink:
    """POST the body as received; any 2xx acknowledges the message."""

    def __init__(self, options: HttpOptions, context: SinkContext) -> None:
        if not options.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {options.url!r}")
        self.options = options
        self.context = context
        self.http = context.http
        self._headers = {"content-type": "application/json", **options.headers}

    async def deliver(self, delivery: Delivery) -> None:
        headers = {
            **self._headers,
            self.options.id_header: delivery.id,
            "X-Router-Attempt": str(delivery.attempt),
        }
        try:
            response = await self.http.post(
                self.options.url,
                content=delivery.body,
                headers=headers,
                timeout=self.context.timeout,
            )
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"timed out after {self.context.timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        self.check(response)

    def check(self, response: httpx.Response) -> None:
        """Raise DeliveryFailed unless the response acknowledges the message."""
        if not response.is_success:
            raise DeliveryFailed(
                f"HTTP {response.status_code}: {response.text[:200]}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )

    async def aclose(self) -> None:
        """The shared HTTP client is closed by the router."""
