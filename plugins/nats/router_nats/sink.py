"""The nats sink: one connection, JetStream or core publish (docs/nats.md).
Imported when a destination is built, not when the plugin is listed."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import Awaitable
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from router.plugin import Delivery, DeliveryFailed, DeliveryResponse, SinkContext
from router_nats import NatsOptions

T = TypeVar("T")

# How long the answer to "which stream captures this subject?" is kept
# (jetstream: auto or true). A stream created or deleted is seen this late.
STREAM_CHECK_SECONDS = 10.0


def headers_for(delivery: Delivery) -> dict[str, str]:
    """The message's headers: Nats-Msg-Id (JetStream's dedup id), the
    router's sequence, attempt and key, and the sender's trace context."""
    headers = {
        "Nats-Msg-Id": delivery.request_id,
        "X-Router-Attempt": str(delivery.attempt),
        "X-Router-Key": urllib.parse.quote(delivery.key, safe=""),
    }
    if delivery.sequence is not None:
        headers["X-Router-Sequence"] = str(delivery.sequence)
    if len(delivery.coalesced) > 1:
        headers["X-Router-Coalesced"] = str(len(delivery.coalesced))
    if delivery.traceparent:
        headers["traceparent"] = delivery.traceparent
    if delivery.tracestate:
        headers["tracestate"] = delivery.tracestate
    return headers


class _Lost(Exception):
    """The connection closed while an attempt waited on it."""


class NatsSink:
    def __init__(self, options: NatsOptions, context: SinkContext) -> None:
        self.options = options
        self.timeout = context.timeout
        self.destination = context.destination
        self._nc: NatsClient | None = None
        self._lost: asyncio.Event | None = None  # set when self._nc's connection ends
        self._connecting = asyncio.Lock()
        self._last_error = ""
        # subject -> (stream name or None, monotonic time the answer expires)
        self._streams: dict[str, tuple[str | None, float]] = {}

    async def _connection(self) -> tuple[NatsClient, asyncio.Event]:
        async with self._connecting:
            if self._nc is not None and self._lost is not None and not self._lost.is_set():
                return self._nc, self._lost
            await self._drop()
            lost = asyncio.Event()

            async def on_error(e: Exception) -> None:
                self._last_error = f"{type(e).__name__}: {e}"

            async def on_gone() -> None:
                lost.set()

            # The router reconnects (lazily, on the next attempt): nats-py's own
            # reconnection would buffer publishes while disconnected.
            nc = await nats.connect(
                servers=[self.options.url],
                name=f"router {self.destination}",
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=max(self.timeout, 0.1),
                error_cb=on_error,
                disconnected_cb=on_gone,
                closed_cb=on_gone,
            )
            self._nc, self._lost = nc, lost
            return nc, lost

    async def _drop(self, nc: NatsClient | None = None) -> None:
        """Close the connection (only if it is still `nc`, when given)."""
        if self._nc is None or (nc is not None and nc is not self._nc):
            return
        old, self._nc, self._lost = self._nc, None, None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.close(), timeout=2)

    async def _guard(self, lost: asyncio.Event, work: Awaitable[T]) -> T:
        """`work`, cut short by the connection's end (nats-py leaves a
        request or flush waiting for its timeout when the socket closes)."""
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise _Lost(self._last_error or "connection closed")
        return task.result()

    async def _stream_of(self, nc: NatsClient, lost: asyncio.Event, subject: str) -> str | None:
        cached = self._streams.get(subject)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        js = nc.jetstream(timeout=self.timeout)
        try:
            stream: str | None = await self._guard(lost, js.find_stream_name_by_subject(subject))
        except nats.js.errors.NotFoundError:
            stream = None
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
            stream = None  # no JetStream on this server (or account)
        self._streams[subject] = (stream, now + STREAM_CHECK_SECONDS)
        return stream

    async def deliver(self, delivery: Delivery) -> DeliveryResponse:
        subject = self.options.subject_for(delivery.key)
        headers = headers_for(delivery)
        nc: NatsClient | None = None
        try:
            async with asyncio.timeout(self.timeout):
                nc, lost = await self._connection()
                mode = self.options.jetstream
                stream = None if mode is False else await self._stream_of(nc, lost, subject)
                if stream is None and mode is True:
                    raise DeliveryFailed(
                        f"no JetStream stream captures subject {subject} (jetstream: true)",
                        message_fault=False,
                    )
                if stream is not None:
                    js = nc.jetstream(timeout=self.timeout)
                    ack = await self._guard(
                        lost,
                        js.publish(subject, delivery.body, headers=headers, stream=stream),
                    )
                    answer = f"stream {ack.stream} seq {ack.seq}"
                    if ack.duplicate:
                        answer += " (duplicate: the stream had it already)"
                    return DeliveryResponse(body=answer.encode())
                await nc.publish(subject, delivery.body, headers=headers)
                await self._guard(lost, nc.flush(timeout=max(self.timeout, 0.1)))  # type: ignore[arg-type]
                return DeliveryResponse(body=f"published to {subject} (core NATS)".encode())
        except DeliveryFailed:
            self._streams.pop(subject, None)
            raise
        except nats.js.errors.NoStreamResponseError:
            # The stream went away since it was looked up: look again next time.
            self._streams.pop(subject, None)
            raise DeliveryFailed(
                f"no JetStream stream answered for subject {subject}", message_fault=False
            ) from None
        except nats.js.errors.APIError as e:
            self._streams.pop(subject, None)
            raise DeliveryFailed(
                f"JetStream refused the message: {e.description or e}", message_fault=False
            ) from None
        except (TimeoutError, _Lost, OSError, nats.errors.Error) as e:
            await self._drop(nc)
            self._streams.pop(subject, None)
            what = "timed out" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
            raise DeliveryFailed(
                f"NATS {self.options.url_shown}: {what}", message_fault=False
            ) from None

    async def aclose(self) -> None:
        async with self._connecting:
            await self._drop()
