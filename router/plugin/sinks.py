"""What a delivery plugin implements and receives: the sink protocol.

Plugins import these names from router.plugin (the public API), never
from here: this module may move."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import msgspec

from router.ops.redaction import NOTHING, Redactor


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt to hand one message to a destination."""

    id: str  # stable across every retry of this message
    body: bytes  # the JSON body exactly as the sender posted it
    key: str  # the ordering-key value ("*" for a global order)
    attempt: int  # 1 for the first try
    received_at_ms: int
    destination: str
    # W3C trace context the sender posted with the message (router.ingest.tracecontext);
    # with tracing on (docs/tracing.md), this attempt's span's, so the destination's
    # trace continues under it. A sink that speaks HTTP should send them as headers,
    # as the built-in one does; another should carry them as its protocol does.
    traceparent: str | None = None
    tracestate: str | None = None
    # 1, 2, 3... per destination and ordering key in arrival order, the same
    # on every retry (and after a replay from the dead letters), so the
    # receiver can tell a gap or a reorder; a sink that speaks HTTP should
    # send it as `X-Router-Sequence`, as the built-in one does. None for a
    # message stored before the router numbered them.
    sequence: int | None = None
    # Coalescing (the destination's `coalesce`): the messages of this one
    # request, oldest first, each as its own Delivery (its id, body,
    # sequence, ...). Then `body` is the JSON array of their bodies, and
    # `id`, `sequence`, `received_at_ms` and the trace context are the
    # first's. Empty: one message, as without coalescing.
    coalesced: tuple[Delivery, ...] = ()

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def request_id(self) -> str:
        """What a receiver may drop a redelivered request by (the http
        plugin's `id_header`): the message id; for a coalesced request of
        several messages, `<first id>+<count>.<digest of every id>`, so one
        value always stands for the same messages, and a retry (which sends
        the same group) repeats it."""
        if len(self.coalesced) < 2:
            return self.id
        digest = hashlib.blake2b(
            "\n".join(m.id for m in self.coalesced).encode(), digest_size=4
        ).hexdigest()
        return f"{self.id}+{len(self.coalesced)}.{digest}"


@dataclass(frozen=True, slots=True)
class DeliveryResponse:
    """What the destination answered an attempt it accepted, for the message
    log (`router trace`): a sink's ``deliver`` may return one; None (or
    nothing) logs the attempt without a status or answer. ``body`` is the
    start of the answer; the router keeps the destination's
    `message_log.response_bytes` of it, secrets starred."""

    status: int | None = None
    body: bytes = b""


class DeliveryFailed(Exception):
    """Raised by a sink when the destination did not accept the message.

    ``retry_after`` (seconds, e.g. from an HTTP ``Retry-After`` header) may
    lengthen the computed backoff, up to an hour, but never shortens it: a
    value below the backoff, 0, negative or NaN leaves the backoff as it is
    (router.delivery.retry.backoff_seconds). With ``hold_destination=True`` (the
    destination as a whole asked to wait: HTTP 429 or 503, as the built-in
    plugins say) and the destination's circuit breaker on, it also holds
    every delivery to the destination that long (up to
    `circuit_breaker.max_hold`).
    Any other exception a sink raises counts as a failed attempt too, and is
    logged with its traceback.

    ``permanent=True`` says no retry of this message can ever succeed (the
    message itself is wrong for this destination, e.g. it lacks a field the
    destination needs): the router gives it up at once, without a backoff,
    as when the retry policy is exhausted (a dead letter, or its key blocked
    with ``retry.on_exhausted: block``), and the next message of its key
    goes on. Never use it for a destination's own trouble (an outage, a 5xx,
    a timeout): that message would be given up though a retry could deliver it.

    Whether a failure says the destination is sick (it counts toward its
    circuit breaker) or only that this message is wrong for it (retried, but
    never counted): ``status``, the HTTP status the destination answered,
    lets the destination's ``circuit_breaker.ignore_statuses`` decide (by
    default every 4xx but 408, 425 and 429 is the message's fault);
    ``message_fault=True`` or ``False`` decides it outright, for a plugin
    that knows better (a broker's "no such queue" is the destination's).
    Without either, a failure counts (a timeout, a refused connection).

    ``response``: the start of the destination's answer, for the message log
    (`router trace`); the router keeps `message_log.response_bytes` of it,
    secrets starred.
    """

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        *,
        permanent: bool = False,
        hold_destination: bool = False,
        status: int | None = None,
        message_fault: bool | None = None,
        response: bytes | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.permanent = permanent
        self.hold_destination = hold_destination
        self.status = status
        self.message_fault = message_fault
        self.response = response


class OptionError(ValueError):
    """Raised by a plugin's options type (in its ``__post_init__``) to refuse
    a value in routes.yaml. ``where`` names the option below the destination,
    e.g. ``("headers", "Authorization")``: the one-line config error is then
    placed at that key and its line. Never put a secret's value in the text."""

    def __init__(self, where: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.where = where


class Sink(Protocol):
    # None, or what the destination answered (for the message log).
    async def deliver(self, delivery: Delivery) -> DeliveryResponse | None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What the router gives a sink factory."""

    destination: str
    timeout: float  # seconds one attempt may take
    max_in_flight: int
    # Shared HTTP client, sized for max_in_flight and closed by the router.
    http: httpx.AsyncClient = field(repr=False)
    # Stars the destination's secrets out of a text (router.ops.redaction): the
    # router applies it to every failure reason; a sink that cuts a text
    # short applies it first, so no secret straddles the cut.
    redactor: Redactor = field(default=NOTHING, repr=False)


class NoOptions(msgspec.Struct, forbid_unknown_fields=True):
    """Options type of a sink that takes none."""


@dataclass(frozen=True, slots=True)
class SinkType:
    name: str
    factory: Callable[[Any, SinkContext], Sink]
    options: type[msgspec.Struct] = NoOptions
    description: str = ""
    # Whether destinations of this type get the circuit breaker unless
    # routes.yaml says (`circuit_breaker.enabled`): on for a service that is
    # down for everyone at once (an HTTP API), off where failures belong to
    # single messages.
    circuit_breaker: bool = False
