"""The nats sink: one connection, JetStream or core publish (docs/nats.md).
Imported when a destination is built, not when the plugin is listed.

Cost per message (issue 22's bench): the sink publishes on nats-py's
connection but waits for the answer itself. Every reply (a PubAck, a core
publish's marker, a stream list) comes back to one private inbox of the
connection, `<inbox>.<n>`, and wakes the future registered under that
subject; when the connection ends, every future still registered fails at
once (router_nats.link). So an attempt costs one future and one publish
(a core publish: its message, and a share of the one marker of its loop
turn, router_nats.link.Link.processed): no request machinery
of nats-py's (a random token, `wait_for`), no task per attempt to watch the
connection, and no timer: the router bounds every attempt by the
destination's `timeout` (router/delivery/attempt.py) and cancels it past
that, and a cancelled attempt that ran that long drops the connection, as
a timed-out one always has (NATS said nothing for `timeout` seconds)."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from router.plugin import Delivery, DeliveryFailed, DeliveryResponse, SinkContext
from router_nats import NatsOptions
from router_nats.link import Link, Lost, Refused

# How long the list of streams that may capture the destination's subjects
# is kept (jetstream: auto or true). A stream created or deleted is seen
# this late.
STREAM_CHECK_SECONDS = 10.0

# JetStream's error codes (nats-server, errors.json) that say it is off:
# not enabled for the account, not enabled on the server. Any other answer
# of a 503 (10008: "JetStream system temporarily unavailable", a leader
# election or a recovery) is an outage, not an absence.
JETSTREAM_OFF = {10039, 10076}

JS_API = "$JS.API"

# Subjects whose capturing stream a sink remembers (one per conversation):
# past this many it starts again.
ANSWERS_KEPT = 4096

# A NATS message's header block, as nats-py writes it: NATS/1.0, CRLF, each
# "name: value" and CRLF, then CRLF. The server counts it in max_payload.
_HEADER_LINE = len(b"NATS/1.0\r\n")


def header_size(name: str, value: str) -> int:
    """One header's bytes in the block: `name: value` and CRLF."""
    return len(name.encode()) + 2 + len(value.strip().encode()) + 2


def encoded_size(body: bytes, headers: dict[str, str]) -> int:
    """What the server counts against its max_payload: body and headers."""
    return len(body) + _HEADER_LINE + sum(header_size(k, v) for k, v in headers.items()) + 2


def captures(pattern: str, subject: str) -> bool:
    """Whether a stream subject `pattern` (with NATS wildcards: `*` one
    token, `>` one or more at the end) matches `subject`."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def stream_lookup_failure(
    error: BaseException, *, server_has_jetstream: bool, stream_seen: bool
) -> str | None:
    """What an error of the "which streams may capture these subjects?"
    lookup (jetstream: auto) means. None: no stream for it (JetStream is
    off for this server or account), a core publish is right. Otherwise
    the reason the attempt fails: JetStream is there but did not answer
    (unavailable for now, no responders on a server that has it), or it is
    gone from a subject a stream was seen on (a core publish would have no
    PubAck: the message could be lost)."""
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
    key = delivery.key
    if not (key.isascii() and key.isalnum()):  # as it is: the usual phone number
        key = urllib.parse.quote(key, safe="")
    headers = {
        "Nats-Msg-Id": delivery.request_id,
        "X-Router-Attempt": str(delivery.attempt),
        "X-Router-Key": key,
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


def _no_responders(msg: Msg) -> bool:
    return bool(msg.headers) and msg.headers.get("Status") == "503"  # type: ignore[union-attr]


# What one STREAM.LIST gave: (stream name, its subjects) for each stream
# whose subjects may capture the destination's, and the streams the server
# could not read (`missing`, in a cluster).
Listed = tuple[list[tuple[str, list[str]]], list[str]]


def capturing(listed: Listed, subject: str) -> str | None:
    """The listed stream that captures `subject`, if any."""
    for name, patterns in listed[0]:
        if any(captures(p, subject) for p in patterns):
            return name
    return None


class _Streams:
    """The streams whose subjects may capture the destination's (one
    `STREAM.LIST` filtered by the subject pattern, kept for
    STREAM_CHECK_SECONDS), and every stream seen so far: once a stream
    captured a subject, JetStream off or silent is not a reason to publish
    to core NATS. Bounded by the number of streams, not of keys."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern  # the subject template, {key} as *
        self.current: Listed = ([], [])
        self.expires = 0.0  # monotonic time `current` is to be listed again
        self.seen: dict[str, list[str]] = {}
        # capturing() of the subjects looked up in a list, kept with that
        # list (a conversation's next message costs a dict lookup, not a
        # match against every stream's patterns); bounded, as the keys are not.
        self._answers: dict[str, str | None] = {}
        self._answered: Listed | None = None

    def stream_in(self, listed: Listed, subject: str) -> str | None:
        """capturing(listed, subject), remembered for `listed`."""
        if listed is not self._answered:
            self._answers, self._answered = {}, listed
        try:
            return self._answers[subject]
        except KeyError:
            pass
        if len(self._answers) >= ANSWERS_KEPT:
            self._answers.clear()
        stream = self._answers[subject] = capturing(listed, subject)
        return stream

    def fresh(self, now: float) -> bool:
        return now < self.expires

    def keep(self, listed: Listed, now: float) -> None:
        self.current, self.expires = listed, now + STREAM_CHECK_SECONDS
        self.seen.update(listed[0])

    def forget(self) -> None:
        """List again at the next attempt (what an attempt already holds stays)."""
        self.expires = 0.0

    def seen_capturing(self, subject: str) -> bool:
        return any(captures(p, subject) for ps in self.seen.values() for p in ps)


def _subject_pattern(template: str) -> str:
    """Every subject the template can give: each token holding {key} as `*`."""
    return ".".join("*" if "{key}" in t else t for t in template.split("."))


class NatsSink:
    def __init__(self, options: NatsOptions, context: SinkContext) -> None:
        self.options = options
        self.timeout = context.timeout
        self.destination = context.destination
        self._link: Link | None = None
        self._connecting = asyncio.Lock()
        self._streams = _Streams(_subject_pattern(options.subject))
        self._closing: set[asyncio.Task[None]] = set()

    async def _connection(self) -> Link:
        link = self._link
        if link is not None and link.lost is None:
            return link
        async with self._connecting:
            if self._link is not None and self._link.lost is None:
                return self._link
            await self._drop()
            link = Link()

            async def on_error(e: Exception) -> None:
                link.on_error(e)

            async def on_gone() -> None:
                link.lose(link.error)

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
                await nc.subscribe(f"{link.inbox}.*", cb=link.on_reply)
            except BaseException:
                await _close(nc)
                raise
            self._link = link
            return link

    async def _drop(self, link: Link | None = None) -> None:
        """Close the connection (only if it is still `link`'s, when given)."""
        old = self._link
        if old is None or (link is not None and link is not old):
            return
        self._link = None
        old.lose(old.error or "connection closed by the router")
        if old.listing is not None:
            old.listing.cancel()
        if old.nc is not None:
            await _close(old.nc)

    async def _ask(
        self, link: Link, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> Msg:
        """Publish with a reply subject of the link's inbox; the reply. A
        publish the server refuses fails at once (no reply would come)."""
        reply, waiter = link.new_reply(subject)
        try:
            await link.publish(subject, body, reply, headers)
            return await waiter
        except Refused as e:
            fix = ""
            if subject.startswith(JS_API + "."):
                # The stream lookup of jetstream: auto or true.
                fix = (
                    f"; allow this user to publish to {JS_API}.STREAM.LIST (the JetStream "
                    "stream lookup), or set jetstream: false to publish to core NATS"
                )
            raise DeliveryFailed(
                f"NATS refused the publish to {subject}: {e}{fix}", message_fault=False
            ) from None
        finally:
            link.done_with(reply, waiter)

    async def _list_streams(self, link: Link) -> Listed:
        """STREAM.LIST filtered by the destination's subject pattern, every
        page; raises what stream_lookup_failure reads."""
        streams: list[tuple[str, list[str]]] = []
        missing: list[str] = []
        offset = 0
        while True:
            request = {"offset": offset, "subject": self._streams.pattern}
            msg = await self._ask(link, f"{JS_API}.STREAM.LIST", msgspec.json.encode(request))
            if _no_responders(msg):
                raise nats.errors.NoRespondersError
            answer = _json(msg, "the stream list")
            if "error" in answer:
                nats.js.errors.APIError.from_error(answer["error"])  # raises
            page = answer.get("streams") or []
            page_missing = answer.get("missing") or []
            for info in page:
                config = info.get("config") or {}
                streams.append((config.get("name", "?"), list(config.get("subjects") or ())))
            missing += page_missing
            offset += len(page) + len(page_missing)
            if not page or offset >= int(answer.get("total", 0)):
                break
        listed: Listed = (streams, missing)
        self._streams.keep(listed, time.monotonic())
        return listed

    async def _stream_of(self, link: Link, subject: str) -> str | None:
        streams = self._streams
        listed = streams.current
        if not streams.fresh(time.monotonic()):
            if link.listing is None or link.listing.done():
                # One list for every attempt waiting on it.
                link.listing = asyncio.ensure_future(self._list_streams(link))
                # Read even when every attempt waiting on it was cancelled.
                link.listing.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                # What this list gave, not streams.current: another attempt
                # may have called forget() since.
                listed = await asyncio.shield(link.listing)
            except (nats.errors.NoRespondersError, nats.js.errors.APIError) as e:
                assert link.nc is not None
                reason = stream_lookup_failure(
                    e,
                    # The server's INFO says whether it runs JetStream.
                    server_has_jetstream=bool(
                        getattr(link.nc, "_server_info", {}).get("jetstream")
                    ),
                    stream_seen=streams.seen_capturing(subject),
                )
                if reason is not None:
                    raise DeliveryFailed(
                        f"subject {subject}: {reason}", message_fault=False
                    ) from None
                # JetStream is off: core NATS, asked again in a while.
                streams.keep(([], []), time.monotonic())
                return None
        stream = streams.stream_in(listed, subject)
        if stream is None and listed[1]:
            raise DeliveryFailed(
                f"subject {subject}: JetStream could not list stream(s) "
                f"{', '.join(listed[1])}: not publishing to core NATS",
                message_fault=False,
            )
        return stream

    async def _publish_core(
        self, link: Link, subject: str, body: bytes, headers: dict[str, str]
    ) -> None:
        """Publish, then wait for a marker published after it to come back
        (Link.processed: one for every core publish of a loop turn). A flush
        would not do: nats-py writes its PING straight to the socket, ahead
        of a message still in its buffer."""
        mark = link.denials
        await link.publish(subject, body, headers=headers)
        await link.processed()
        # A refused publish: -ERR before the marker, the connection open.
        denied = link.denied_since(mark, subject)
        if denied is not None:
            raise DeliveryFailed(f"NATS refused the publish: {denied}", message_fault=False)

    async def _publish_jetstream(
        self, link: Link, subject: str, body: bytes, headers: dict[str, str]
    ) -> DeliveryResponse:
        msg = await self._ask(link, subject, body, headers)
        if _no_responders(msg):
            # The stream went away since it was listed: look again next time.
            self._streams.forget()
            raise DeliveryFailed(
                f"no JetStream stream answered for subject {subject}", message_fault=False
            )
        ack = _json(msg, "the PubAck")
        error = ack.get("error")
        if error is not None:
            self._streams.forget()
            description = error.get("description") or error
            raise DeliveryFailed(
                f"JetStream refused the message: {description}", message_fault=False
            )
        answer = f"stream {ack.get('stream')} seq {ack.get('seq')}"
        if ack.get("duplicate"):
            answer += " (duplicate: the stream had it already)"
        return DeliveryResponse(body=answer.encode())

    async def deliver(self, delivery: Delivery) -> DeliveryResponse:
        subject = self.options.subject_for(delivery.key)
        headers = headers_for(delivery)
        started = time.monotonic()
        link: Link | None = None
        try:
            link = await self._connection()
            assert link.nc is not None
            limit = link.nc.max_payload
            if (size := encoded_size(delivery.body, headers)) > limit:
                raise _too_big(size, limit)  # whatever JetStream says
            mode = self.options.jetstream
            stream = None if mode is False else await self._stream_of(link, subject)
            if stream is not None:
                headers["Nats-Expected-Stream"] = stream
                if (size := size + header_size("Nats-Expected-Stream", stream)) > limit:
                    raise _too_big(size, limit)
            if stream is not None:
                return await self._publish_jetstream(link, subject, delivery.body, headers)
            if mode is True:
                raise DeliveryFailed(
                    f"no JetStream stream captures subject {subject} (jetstream: true)",
                    message_fault=False,
                )
            await self._publish_core(link, subject, delivery.body, headers)
            return DeliveryResponse(body=f"published to {subject} (core NATS)".encode())
        except DeliveryFailed:
            raise
        except nats.errors.MaxPayloadError:
            nc = link.nc if link is not None else None
            raise _too_big(len(delivery.body), nc.max_payload if nc else 0) from None
        except asyncio.CancelledError:
            if link is not None and time.monotonic() - started >= 0.9 * self.timeout:
                # The router's deadline: NATS said nothing for `timeout` seconds.
                self._drop_soon(link)
            raise
        except (TimeoutError, Lost, OSError, nats.errors.Error) as e:
            if link is not None:
                await self._drop(link)
            self._streams.forget()
            what = "timed out" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
            raise DeliveryFailed(
                f"NATS {self.options.url_shown}: {what}", message_fault=False
            ) from None

    def _drop_soon(self, link: Link) -> None:
        link.lose("timed out")
        task = asyncio.get_running_loop().create_task(self._drop(link))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        async with self._connecting:
            await self._drop()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=5)


async def _close(nc: NatsClient) -> None:
    """Close a connection, within 2 s whatever its state. nats-py's close()
    first writes what is still queued: on a stalled connection it waits
    forever (and swallows a cancellation while it does), so past 2 s the
    socket is aborted under it, which ends that wait."""
    closing = asyncio.ensure_future(nc.close())
    closing.add_done_callback(lambda f: f.cancelled() or f.exception())
    _, waiting = await asyncio.wait({closing}, timeout=2)
    if waiting:
        # nats-py 2.x's TcpTransport keeps its asyncio StreamWriter here.
        writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
        if writer is not None:
            writer.transport.abort()
        _, waiting = await asyncio.wait({closing}, timeout=2)
        for task in waiting:
            task.cancel()


def _json(msg: Msg, what: str) -> dict[str, Any]:
    """A JetStream answer's JSON; anything else (a core responder on the
    subject?) fails the attempt."""
    try:
        answer = msgspec.json.decode(msg.data)
    except msgspec.DecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise DeliveryFailed(
            f"{what} from {msg.subject} is not JetStream's JSON: {msg.data[:80]!r}",
            message_fault=False,
        )
    return answer


def _too_big(size: int, limit: int) -> DeliveryFailed:
    # The server would refuse it and close the connection every key shares:
    # no retry can publish it.
    return DeliveryFailed(
        f"message too big for NATS: {size} bytes with headers, over the server's "
        f"max_payload of {limit}",
        permanent=True,
        message_fault=True,
    )
