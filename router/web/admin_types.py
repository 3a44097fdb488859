"""The admin API's answers and request bodies (router/web/admin.py), declared
once: the handlers return these, msgspec encodes them, and Litestar derives
the OpenAPI document's schemas from them (components named after the
classes; the two request bodies, read by the handlers themselves, through
router.web.openapi.admin.admin_operation).

Field order is the JSON's order, descriptions are the document's. Dead
letters and unroutable items are answered as their lists hold them
(router.queue.inspection.DeadLetter, router.queue.unroutable.UnroutableItem).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import msgspec

from router.queue.inspection import DeadLetter, KeyState, PausedKey, QueueFigures, Skipped
from router.queue.message_log import Attempt, Delivery, Found
from router.queue.unroutable import MAX_KEPT, UnroutableItem

Count = Annotated[int, msgspec.Meta(ge=0)]
UnixMs = Annotated[int, msgspec.Meta(description="Unix time, ms.")]
Ok = Literal["ok"]

_IN_FLIGHT = (
    "Keys left where they were: a process still configured with the destination holds "
    "them (a live lease); call again once every process has reloaded routes.yaml."
)


class QueueStats(msgspec.Struct):
    """What a destination's queue holds (GET /admin/destinations, per name)."""

    messages: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="Messages stored and not yet acknowledged (in flight, waiting and "
            "blocked ones included).",
        ),
    ]
    ready: Annotated[int, msgspec.Meta(ge=0, description="Ordering keys ready to deliver.")]
    in_flight: Annotated[int, msgspec.Meta(ge=0, description="Keys with a delivery under way.")]
    delayed: Annotated[int, msgspec.Meta(ge=0, description="Keys waiting out a retry backoff.")]
    blocked: Annotated[int, msgspec.Meta(ge=0, description="Keys stopped by on_exhausted: block.")]
    dead: Annotated[int, msgspec.Meta(ge=0, description="Dead letters (messages).")]
    oldest_age_seconds: Annotated[
        float | None,
        msgspec.Meta(description="Age of the oldest message not yet acknowledged; null: none."),
    ]
    acknowledged: Annotated[int, msgspec.Meta(ge=0, description="Messages acknowledged so far.")]
    paused: bool
    health: Annotated[
        Literal["up", "down", "held"],
        msgspec.Meta(
            description="The circuit breaker (docs/destination-health.md): down since "
            "down_since_ms, or held by a Retry-After until held_until_ms."
        ),
    ]
    down_since_ms: Annotated[int | None, msgspec.Meta(description="Unix time, ms.")]
    held_until_ms: Annotated[int | None, msgspec.Meta(description="Unix time, ms.")]
    orphaned: Annotated[
        bool, msgspec.Meta(description="No longer in routes.yaml, still holding messages.")
    ]
    paused_conversations: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="Conversations (ordering keys) paused by an operator; which: "
            "GET /admin/destinations/{name}/conversations/paused.",
        ),
    ] = 0

    @classmethod
    def of(cls, figures: QueueFigures, orphaned: bool) -> QueueStats:
        health = figures.health
        return cls(
            messages=figures.messages,
            ready=figures.ready,
            in_flight=figures.in_flight,
            delayed=figures.delayed,
            blocked=figures.blocked,
            dead=figures.dead,
            oldest_age_seconds=figures.oldest_age(),
            acknowledged=figures.acked,
            paused=figures.paused,
            health=health,  # type: ignore[arg-type]  # one of the three (QueueFigures.health)
            down_since_ms=figures.down_since_ms,
            held_until_ms=figures.held_until_ms if health == "held" else None,
            orphaned=orphaned,
            paused_conversations=figures.paused_keys,
        )


class Paused(msgspec.Struct):
    status: Ok
    paused: Literal[True]


class Resumed(msgspec.Struct):
    status: Ok
    paused: Literal[False]


class DeadLetters(msgspec.Struct):
    dead: Annotated[list[DeadLetter], msgspec.Meta(description="Oldest first.")]


class Replayed(msgspec.Struct):
    status: Ok
    replayed: Count


class Purged(msgspec.Struct):
    status: Ok
    purged: Count


class Retried(msgspec.Struct):
    status: Ok
    retried: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="Waiting keys made due now (with no body: also the keys a "
            "destination that was down or held resumed).",
        ),
    ]


class KeyStateAnswer(msgspec.Struct):
    """One conversation (router.queue.inspection.KeyState), its error redacted."""

    key: str
    state: Annotated[
        Literal["empty", "ready", "in flight", "waiting", "blocked", "paused"],
        msgspec.Meta(
            description="waiting: out a retry backoff, until next_try_ms; paused: its turn "
            "came while an operator paused it (held until resumed)."
        ),
    ]
    messages: Count
    head_id: str | None
    head_arrival_ms: Annotated[int | None, msgspec.Meta(description="Unix time, ms.")]
    attempts: Annotated[int, msgspec.Meta(ge=0, description="Failed attempts of the head message.")]
    last_error: str | None
    next_try_ms: Annotated[int | None, msgspec.Meta(description="Unix time, ms.")]
    paused: Annotated[
        bool,
        msgspec.Meta(
            description="Paused by an operator (conversations/pause), whatever its state."
        ),
    ] = False

    @classmethod
    def of(cls, found: KeyState, last_error: str | None) -> KeyStateAnswer:
        return cls(
            key=found.key,
            state=found.state,  # type: ignore[arg-type]  # one of the five (queue.py)
            messages=found.messages,
            head_id=found.head_id,
            head_arrival_ms=found.head_arrival_ms,
            attempts=found.attempts,
            last_error=last_error,
            next_try_ms=found.next_try_ms,
            paused=found.paused,
        )


class BlockedKey(msgspec.Struct):
    """A key stopped by on_exhausted: block (written by fail.lua)."""

    error: Annotated[str, msgspec.Meta(description="Its last attempt's error.")]
    attempts: Count
    blocked_at: UnixMs


class BlockedKeys(msgspec.Struct):
    blocked: Annotated[dict[str, BlockedKey], msgspec.Meta(description="Per blocked key.")]


class Done(msgspec.Struct):
    status: Ok


class OrphanMoved(msgspec.Struct):
    status: Ok
    moved: Count
    in_flight: Annotated[list[str], msgspec.Meta(description=_IN_FLIGHT)]


class OrphanPurged(msgspec.Struct):
    status: Ok
    purged: Count
    in_flight: Annotated[list[str], msgspec.Meta(description=_IN_FLIGHT)]


class UnroutableCount(msgspec.Struct):
    """A route path's unroutable items (GET /admin/unroutable, per path)."""

    kept: Annotated[int, msgspec.Meta(ge=0, description="Items listed now.")]
    trimmed: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description=f"Items dropped, oldest first, past the cap of {MAX_KEPT:,} per route.",
        ),
    ]


class UnroutableItems(msgspec.Struct):
    items: list[UnroutableItem]


class UnroutableReplayed(msgspec.Struct):
    status: Ok
    replayed: Annotated[
        int, msgspec.Meta(ge=0, description="Routed and stored now: removed from the list.")
    ]
    still_unroutable: Annotated[int, msgspec.Meta(ge=0, description="Still not routable: kept.")]


State = Annotated[
    Literal["waiting", "delivered", "dead", "blocked"],
    msgspec.Meta(
        description="waiting: not yet acknowledged (never tried, waiting out a backoff, or "
        "in flight); delivered: acknowledged; dead: given up, a dead letter; blocked: its "
        "conversation is stopped (on_exhausted: block)."
    ),
]
Seq = Annotated[
    int | None, msgspec.Meta(description="Its sequence number (X-Router-Sequence); null: none.")
]


class AttemptAnswer(msgspec.Struct):
    """One entry of a message's story (docs/message-log.md), oldest first."""

    attempt: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="1 for the first try; a skip's entry says how many were made "
            "(0: skipped before any).",
        ),
    ]
    outcome: Annotated[
        Literal["ok", "failed", "dead", "blocked", "skipped"],
        msgspec.Meta(
            description="ok: acknowledged; failed: retried later; dead: given up (a dead "
            "letter); blocked: given up, its conversation blocked; skipped: by an operator."
        ),
    ]
    status: Annotated[int | None, msgspec.Meta(description="The HTTP status answered; null: none.")]
    duration_ms: Annotated[float | None, msgspec.Meta(description="How long it took.")]
    started_at: Annotated[
        int | None,
        msgspec.Meta(
            description="Unix time, ms; null for an attempt nobody finished (its lease ran "
            "out) and for a give-up decided without a new try."
        ),
    ]
    error: Annotated[str | None, msgspec.Meta(description="Why it failed, secrets starred.")]
    response: Annotated[
        str | None,
        msgspec.Meta(
            description="The start of the destination's answer (message_log.response_bytes), "
            "secrets starred."
        ),
    ]

    @classmethod
    def of(cls, a: Attempt, shown: Callable[[str], str]) -> AttemptAnswer:
        return cls(
            attempt=a.attempt,
            outcome=a.outcome,  # type: ignore[arg-type]  # one of message_log.OUTCOMES
            status=a.status,
            duration_ms=a.duration_ms,
            started_at=a.started_at,
            error=None if a.error is None else shown(a.error),
            response=None if a.response is None else shown(a.response),
        )


class DeliveryAnswer(msgspec.Struct):
    """A message's story at one destination."""

    state: State
    key: Annotated[str, msgspec.Meta(description="Its ordering key (conversation).")]
    received_at: UnixMs
    seq: Seq
    attempts: Annotated[list[AttemptAnswer], msgspec.Meta(description="Oldest first.")]

    @classmethod
    def of(cls, d: Delivery, shown: Callable[[str], str]) -> DeliveryAnswer:
        return cls(
            state=d.state,  # type: ignore[arg-type]  # one of message_log.STATES
            key=d.key,
            received_at=d.received_at,
            seq=d.seq,
            attempts=[AttemptAnswer.of(a, shown) for a in d.attempts],
        )


class MessageStory(msgspec.Struct):
    """GET /admin/messages/{id}: the message's story at each destination
    that has one (routes.yaml's, and ones removed from it)."""

    id: str
    deliveries: Annotated[dict[str, DeliveryAnswer], msgspec.Meta(description="Per destination.")]

    @classmethod
    def of(
        cls, message_id: str, found: dict[str, Delivery], shown: Callable[[str], str]
    ) -> MessageStory:
        return cls(message_id, {name: DeliveryAnswer.of(d, shown) for name, d in found.items()})


class FoundMessage(msgspec.Struct):
    """A message of a destination's log (GET /admin/destinations/{name}/messages)."""

    id: str
    key: Annotated[str, msgspec.Meta(description="Its ordering key (conversation).")]
    state: State
    received_at: UnixMs
    attempts: Annotated[int, msgspec.Meta(ge=0, description="Entries of its story.")]
    seq: Seq

    @classmethod
    def of(cls, f: Found) -> FoundMessage:
        state = f.state  # one of message_log.STATES
        return cls(f.id, f.key, state, f.received_at, f.attempts, f.seq)  # type: ignore[arg-type]


class FoundMessages(msgspec.Struct):
    messages: Annotated[list[FoundMessage], msgspec.Meta(description="Newest first.")]


class UnblockRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The key to unblock."""

    key: Annotated[
        str,
        msgspec.Meta(
            description="The blocked ordering key, any characters.", examples=["44912345678"]
        ),
    ]


class RetryRequest(msgspec.Struct, forbid_unknown_fields=True):
    """No body: every waiting key. Else the keys to retry now."""

    keys: Annotated[
        list[
            Annotated[
                str,
                msgspec.Meta(
                    description="An ordering key, any characters.", examples=["44912345678"]
                ),
            ]
        ],
        # Documented, not enforced by decoding: an empty list gets its own 400.
        msgspec.Meta(extra_json_schema={"minItems": 1}),
    ]


_KEY = msgspec.Meta(description="The ordering key, any characters.", examples=["44912345678"])


class ConversationRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The conversation (ordering key) to pause, resume or skip."""

    key: Annotated[str, _KEY]


class ConversationPaused(msgspec.Struct):
    status: Ok
    key: str
    paused: Literal[True]
    changed: Annotated[bool, msgspec.Meta(description="false: it was already paused.")]


class ConversationResumed(msgspec.Struct):
    status: Ok
    key: str
    paused: Literal[False]
    changed: Annotated[bool, msgspec.Meta(description="false: it was not paused.")]


class PausedConversation(msgspec.Struct):
    """A conversation paused by an operator."""

    key: str
    since_ms: UnixMs
    parked: Annotated[
        bool,
        msgspec.Meta(
            description="Its turn came while paused: it is held out of line until resumed "
            "(false: no message was due yet, or one was in flight)."
        ),
    ]

    @classmethod
    def of(cls, found: PausedKey) -> PausedConversation:
        return cls(found.key, found.since_ms, found.parked)


class PausedConversations(msgspec.Struct):
    paused: Annotated[list[PausedConversation], msgspec.Meta(description="Paused longest first.")]


class ConversationSkipped(msgspec.Struct):
    """A conversation's head message moved to the dead letters."""

    status: Ok
    key: str
    skipped_id: Annotated[str, msgspec.Meta(description="The skipped message's id.")]
    seq: Annotated[
        int | None,
        msgspec.Meta(
            description="Its sequence number (X-Router-Sequence), kept in its dead letter; "
            "null: stored without one."
        ),
    ]
    was: Annotated[
        Literal["ready", "in flight", "waiting", "blocked", "parked"],
        msgspec.Meta(
            description="Where the conversation was. in flight: that attempt was fenced out "
            "(its outcome is ignored), though the destination may still receive it."
        ),
    ]
    left: Annotated[
        int, msgspec.Meta(ge=0, description="Its messages left; the next one goes next.")
    ]

    @classmethod
    def of(cls, done: Skipped) -> ConversationSkipped:
        return cls(
            "ok",
            done.key,
            done.message_id,
            done.seq,
            done.was,  # type: ignore[arg-type]  # one of the five (skip.lua)
            done.left,
        )
