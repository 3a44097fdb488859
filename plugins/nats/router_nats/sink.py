"""The nats sink: one connection, JetStream or core publish (docs/nats.md).
Imported when a destination is built, not when the plugin is listed."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import urllib.parse
from collections.abc import Awaitable
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from router.plugin import Delivery, DeliveryFailed, DeliveryResponse, SinkContext
from router_nats import NatsOptions

T = TypeVar("T")

# How long the answer to "which stream captures this subject?" is kept
# (jetstream: auto or true). A stream created or deleted is seen this late.
STREAM_CHECK_SECONDS = 10.0

# JetStream's error codes (nats-server, errors.json) that say it is off:
# not enabled for the account, not enabled on the server. Any other answer
# of a 503 (10008: "JetStream system temporarily unavailable", a leader
# election or a recovery) is an outage, not an absence.
JETSTREAM_OFF = {10039, 10076}

# A NATS message's header block, as nats-py writes it: NATS/1.0, CRLF, each
# "name: value" and CRLF, then CRLF. The server counts it in max_payload.
_HEADER_LINE = len(b"NATS/1.0\r\n")


def encoded_size(body: bytes, headers: dict[str, str]) -> int:
    """What the server counts against its max_payload: body and headers."""
    return (
        len(body)
        + _HEADER_LINE
        + sum(len(k.encode()) + 2 + len(v.strip().encode()) + 2 for k, v in headers.items())
        + 2
    )


def stream_lookup_failure(
    error: BaseException, *, server_has_jetstream: bool, stream_seen: bool
) -> str | None:
    """What an error of the "which stream captures this subject?" lookup
    (jetstream: auto) means. None: no stream for it (the lookup found none,
    or JetStream is off for this server or account), a core publish is
    right. Otherwise the reason the attempt fails: JetStream is there but
    did not answer (unavailable for now, no responders on a server that
    has it), or it is gone from a subject a stream was seen on (a core
    publish would have no PubAck: the message could be lost)."""
    if isinstance(error, nats.js.errors.NotFoundError):
        return None
    if isinstance(error, nats.errors.NoRespondersError) or (
        isinstance(error, nats.js.errors.ServiceUnavailableError)
        and error.code is None
        and error.err_code is None
    ):
        # nats-py's answer to "no responders": nothing serves JetStream's API.
        if server_has_jetstream:
            return "JetStream did not answer (no responders; starting or recovering?)"
        off = "no JetStream on the server (no responders)"
    elif isinstance(error, nats.js.errors.APIError) and error.err_code in JETSTREAM_OFF:
        off = error.description or f"JetStream not enabled (err_code {error.err_code})"
    elif isinstance(error, nats.js.errors.APIError):
        return (
            f"JetStream stream lookup failed: {error.description or 'no description'} "
            f"(code {error.code}, err_code {error.err_code})"
        )
    else:
        return f"JetStream stream lookup failed: {type(error).__name__}: {error}"
    if stream_seen:
        return f"{off}, though a stream captured the subject before: not publishing to core NATS"
    return None


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


class _Link:
    """One connection, its end (`lost`), and what confirms a core publish
    on it: a subscription on a private inbox (`inbox`.*) that gets back
    each marker the sink publishes after a message, and the server's
    publish permission errors (nats-py hands them to error_cb only)."""

    def __init__(self) -> None:
        self.nc: NatsClient | None = None
        self.lost = asyncio.Event()
        self.inbox = ""
        self.markers: dict[str, asyncio.Future[None]] = {}
        self._next_marker = 0
        self.denials = 0  # permission errors so far
        self._denied: collections.deque[tuple[int, str]] = collections.deque(maxlen=256)

    async def on_marker(self, msg: Msg) -> None:
        waiter = self.markers.get(msg.subject)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_error(self, e: Exception) -> None:
        text = str(e)  # nats-py lowercases the server's -ERR text
        if "permissions violation" not in text.lower():
            return
        self.denials += 1
        self._denied.append((self.denials, text))
        if self.inbox and self.inbox.lower() in text.lower():
            # The markers cannot come back: no core publish can be confirmed.
            self.lost.set()

    def denied_since(self, mark: int, subject: str) -> str | None:
        """The server's permission error for a publish to `subject` after
        the `mark`-th, if any."""
        quoted = f'"{subject}"'.lower()
        for n, text in self._denied:
            if n > mark and "publish" in text.lower() and quoted in text.lower():
                return text
        return None

    def new_marker(self) -> tuple[str, asyncio.Future[None]]:
        self._next_marker += 1
        subject = f"{self.inbox}.{self._next_marker}"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.markers[subject] = waiter
        return subject, waiter


class NatsSink:
    def __init__(self, options: NatsOptions, context: SinkContext) -> None:
        self.options = options
        self.timeout = context.timeout
        self.destination = context.destination
        self._nc: NatsClient | None = None
        self._link: _Link | None = None  # self._nc's
        self._connecting = asyncio.Lock()
        self._last_error = ""
        # subject -> (stream name or None, monotonic time the answer expires)
        self._streams: dict[str, tuple[str | None, float]] = {}
        self._seen_streams: set[str] = set()  # subjects a stream captured once

    async def _connection(self) -> tuple[NatsClient, _Link]:
        async with self._connecting:
            if self._nc is not None and self._link is not None and not self._link.lost.is_set():
                return self._nc, self._link
            await self._drop()
            link = _Link()

            async def on_error(e: Exception) -> None:
                self._last_error = f"{type(e).__name__}: {e}"
                link.on_error(e)

            async def on_gone() -> None:
                link.lost.set()

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
            link.nc = nc
            try:
                link.inbox = nc.new_inbox()
                await nc.subscribe(f"{link.inbox}.*", cb=link.on_marker)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), timeout=2)
                raise
            self._nc, self._link = nc, link
            return nc, link

    async def _drop(self, nc: NatsClient | None = None) -> None:
        """Close the connection (only if it is still `nc`, when given)."""
        if self._nc is None or (nc is not None and nc is not self._nc):
            return
        old, self._nc, self._link = self._nc, None, None
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
        except (nats.errors.NoRespondersError, nats.js.errors.APIError) as e:
            reason = stream_lookup_failure(
                e,
                # The server's INFO says whether it runs JetStream.
                server_has_jetstream=bool(getattr(nc, "_server_info", {}).get("jetstream")),
                stream_seen=subject in self._seen_streams,
            )
            if reason is not None:
                raise DeliveryFailed(f"subject {subject}: {reason}", message_fault=False) from None
            stream = None
        if stream is not None:
            self._seen_streams.add(subject)
        self._streams[subject] = (stream, now + STREAM_CHECK_SECONDS)
        return stream

    async def _publish_core(
        self, nc: NatsClient, link: _Link, subject: str, body: bytes, headers: dict[str, str]
    ) -> None:
        """Publish, then a marker to the link's inbox; the marker back means
        the server processed the message (it handles a connection's
        messages in order). A flush would not: nats-py writes its PING
        straight to the socket, ahead of a message still in its buffer."""
        mark = link.denials
        marker, back = link.new_marker()
        try:
            await nc.publish(subject, body, headers=headers)
            await nc.publish(marker)
            await self._guard(link.lost, back)
        finally:
            link.markers.pop(marker, None)
        # A refused publish: -ERR before the marker, the connection open.
        denied = link.denied_since(mark, subject)
        if denied is not None:
            raise DeliveryFailed(f"NATS refused the publish: {denied}", message_fault=False)

    async def deliver(self, delivery: Delivery) -> DeliveryResponse:
        subject = self.options.subject_for(delivery.key)
        headers = headers_for(delivery)
        nc: NatsClient | None = None
        try:
            async with asyncio.timeout(self.timeout):
                nc, link = await self._connection()
                lost = link.lost
                size = encoded_size(delivery.body, headers)
                if size > nc.max_payload:
                    raise _too_big(size, nc.max_payload)
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
                await self._publish_core(nc, link, subject, delivery.body, headers)
                return DeliveryResponse(body=f"published to {subject} (core NATS)".encode())
        except DeliveryFailed:
            self._streams.pop(subject, None)
            raise
        except nats.errors.MaxPayloadError:
            raise _too_big(len(delivery.body), nc.max_payload if nc else 0) from None
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


def _too_big(size: int, limit: int) -> DeliveryFailed:
    # The server would refuse it and close the connection every key shares:
    # no retry can publish it.
    return DeliveryFailed(
        f"message too big for NATS: {size} bytes with headers, over the server's "
        f"max_payload of {limit}",
        permanent=True,
        message_fault=True,
    )
