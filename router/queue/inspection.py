"""What inspecting a destination's queue answers (status, metrics, the CLI
and the admin API): its figures (QueueFigures), one ordering key's state
(KeyState) and a dead letter as its list holds it (DeadLetter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import msgspec


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """A destination's (or one shard's) queue, as status and metrics show it."""

    messages: int  # stored, not yet acknowledged (in flight, waiting, blocked included)
    ready: int  # keys whose head can be attempted now
    in_flight: int  # keys being attempted
    delayed: int  # keys waiting out a backoff
    blocked: int  # keys stopped by on_exhausted: block
    dead: int  # dead letters
    oldest_arrival_ms: int | None  # arrival of the oldest message not yet acknowledged
    acked: int  # messages acknowledged so far (rates are its change over time)
    paused: bool
    # The circuit breaker (docs/destination-health.md): since when the
    # destination is down (ms), and until when a Retry-After holds it.
    down_since_ms: int | None = None
    held_until_ms: int | None = None
    paused_keys: int = 0  # conversations paused by an operator (`router pause DEST KEY`)

    @property
    def health(self) -> str:
        """ "down" (the breaker is open), "held" (a Retry-After), or "up"."""
        if self.down_since_ms is not None:
            return "down"
        if self.held_until_ms is not None and self.held_until_ms > time.time() * 1000:
            return "held"
        return "up"

    @classmethod
    def total(cls, parts: list[QueueFigures]) -> QueueFigures:
        oldest = [p.oldest_arrival_ms for p in parts if p.oldest_arrival_ms is not None]
        down = [p.down_since_ms for p in parts if p.down_since_ms is not None]
        held = [p.held_until_ms for p in parts if p.held_until_ms is not None]
        return cls(
            messages=sum(p.messages for p in parts),
            ready=sum(p.ready for p in parts),
            in_flight=sum(p.in_flight for p in parts),
            delayed=sum(p.delayed for p in parts),
            blocked=sum(p.blocked for p in parts),
            dead=sum(p.dead for p in parts),
            oldest_arrival_ms=min(oldest) if oldest else None,
            acked=sum(p.acked for p in parts),
            paused=any(p.paused for p in parts),
            down_since_ms=min(down) if down else None,
            held_until_ms=max(held) if held else None,
            paused_keys=sum(p.paused_keys for p in parts),
        )

    def oldest_age(self, now_ms: int | None = None) -> float | None:
        """Seconds the oldest unacknowledged message has waited."""
        if self.oldest_arrival_ms is None:
            return None
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now - self.oldest_arrival_ms) / 1000)


@dataclass(frozen=True, slots=True)
class KeyState:
    """One ordering key (conversation) of a destination."""

    key: str
    # empty, ready, in flight, waiting (a backoff), blocked, paused (its turn
    # came while an operator paused it: parked until resumed)
    state: str
    messages: int
    head_id: str | None
    head_arrival_ms: int | None
    attempts: int  # failed attempts of the head message so far
    last_error: str | None
    next_try_ms: int | None  # when waiting: when it is due (ms since the epoch)
    paused: bool = False  # paused by an operator (`router pause DEST KEY`)


@dataclass(frozen=True, slots=True)
class PausedKey:
    """A conversation paused by an operator (keys.DestinationKeys.paused_keys)."""

    key: str
    since_ms: int  # when it was paused (Unix time, ms)
    parked: bool  # its turn came while paused: it waits out of line until resumed


@dataclass(frozen=True, slots=True)
class Skipped:
    """What skipping a conversation's head did (skip.lua)."""

    key: str
    message_id: str  # the skipped message, now a dead letter
    seq: int | None  # its sequence number (X-Router-Sequence); None: stored without one
    was: str  # where the key was: ready, in flight (fenced out), waiting, blocked, parked
    left: int  # the conversation's messages left (its next one goes next)


class DeadLetter(msgspec.Struct, frozen=True):
    """A dead letter as its list holds it (JSON), and as the admin API
    shows it (its error redacted): the descriptions are the API's."""

    key: Annotated[str, msgspec.Meta(description="Its ordering key.")]
    envelope: Annotated[str, msgspec.Meta(description="The stored message (its envelope).")]
    error: Annotated[str, msgspec.Meta(description="Its last attempt's error.")]
    attempts: int
    dead_at: Annotated[int, msgspec.Meta(description="Unix time, ms.")]
    # Its sequence number (X-Router-Sequence), kept apart from the envelope
    # (fail.lua): a replay puts it back with it. None: stored without one.
    seq: (
        Annotated[
            int,
            msgspec.Meta(
                description="Its sequence number (X-Router-Sequence): a replay into "
                "its destination keeps it; one --into another takes that one's next."
            ),
        ]
        | None
    ) = None
