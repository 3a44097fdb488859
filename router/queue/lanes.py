"""A destination's queue in Redis: per-key lanes moved by atomic Lua scripts.

Each transition of the design in the README ("Redis layout") is one script,
so a message is never in two states or in none. Scripts use the server's
clock (TIME), so instances with skewed clocks agree on lease deadlines.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from router.config import Destination
from router.queue import batching, envelope
from router.queue.batching import Batcher
from router.queue.keys import DestinationKeys, shard_of
from router.queue.outbound_rate import NO_LIMIT_ARGS, ShardRate
from router.queue.scripts import LEASE_LOST, Scripts, keys_for
from router.redis.client import command_written

__all__ = ["LEASE_LOST", "Scripts"]

log = logging.getLogger("router.queue")

# `router retry` with no keys moves this many waiting keys per script call.
RETRY_STEP = 1000

# Destination shards whose negative count was logged (once per process).
_drift_reported: set[str] = set()  # re-exported: callers build queues from these


@dataclass(frozen=True, slots=True)
class Target:
    """One destination a message is written to, and its ordering-key value."""

    keys: DestinationKeys
    ordering_key: str


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    id: str
    duplicate: bool


class FanOutIncomplete(RedisError):
    """A fan-out over several Cluster slots stopped after some destinations
    had stored their copy (not a ResponseError: something was written)."""


async def enqueue(
    scripts: Scripts,
    targets: list[Target],
    envelope: bytes,
    message_id: str,
    dedup_id: str | None,
    dedup_ttl: int,
    batcher: Batcher | None = None,
    reencode: Callable[[str], bytes] | None = None,
) -> EnqueueResult:
    """Append a message to the lanes of all targets (through `batcher`, the
    enqueue script's, when given: router.queue.batching).

    On one Redis that is one atomic step. On a Cluster a script may only
    touch one slot, so targets are written slot by slot, in route order:
    with a dedup id, a retried request finds the copies an earlier try
    stored, and completes the rest under the id stored first (`reencode`
    builds the envelope for that id); copies are never stored twice."""
    if not scripts.cluster or len(targets) == 1:
        return await _enqueue_atomic(
            scripts, targets, envelope, message_id, dedup_id, dedup_ttl, batcher
        )
    groups: dict[int, list[Target]] = {}
    for t in targets:
        groups.setdefault(key_slot(t.keys.tag.encode()), []).append(t)
    held = False  # some destination holds the message (this try's or an earlier one's)
    duplicate = True
    stored_id = message_id
    for group in groups.values():
        try:
            result = await _enqueue_atomic(
                scripts, group, envelope, stored_id, dedup_id, dedup_ttl, batcher
            )
        except RedisError as exc:
            if not held:
                raise
            command_written.set(True)
            missing = ", ".join(t.keys.destination for t in group)
            raise FanOutIncomplete(
                f"stored for some destinations, not for {missing}: {exc}"
            ) from exc
        held = True
        duplicate = duplicate and result.duplicate
        if result.id != stored_id:  # stored first by an earlier try of this request
            stored_id = result.id
            if reencode is not None:
                envelope = reencode(stored_id)
    return EnqueueResult(id=stored_id, duplicate=duplicate)


async def _enqueue_atomic(
    scripts: Scripts,
    targets: list[Target],
    envelope: bytes,
    message_id: str,
    dedup_id: str | None,
    dedup_ttl: int,
    batcher: Batcher | None,
) -> EnqueueResult:
    """One enqueue script: all targets share one Cluster slot (or one Redis)."""
    keys: list[str] = []
    for t in targets:
        # Without a dedup id the script never reads `seen`; the name keeps
        # the destination's hash tag so all KEYS stay in one Cluster slot.
        seen = t.keys.seen(dedup_id) if dedup_id else t.keys.tag + ":seen:"
        keys += keys_for("enqueue", t.keys, t.ordering_key, seen=seen)
    # With ROUTER_REDIS_WAIT a duplicate writes its marker again (enqueue.lua).
    replicate = "1" if batcher is not None and batcher.replicas else "0"
    args: list[Any] = [envelope, message_id, dedup_id or "", dedup_ttl, replicate]
    args += [t.ordering_key for t in targets]
    if batcher is None:
        written, stored_id = await scripts.enqueue(keys=keys, args=args)
    else:
        written, stored_id = await batcher(keys, args)
    return EnqueueResult(id=_text(stored_id), duplicate=written == 0)


@dataclass(frozen=True, slots=True)
class Pending:
    """One message of a request to store: enqueue's arguments."""

    targets: list[Target]
    envelope: bytes
    message_id: str
    dedup_id: str | None
    reencode: Callable[[str], bytes] | None = None  # its envelope under another id


async def enqueue_many(
    scripts: Scripts,
    messages: list[Pending],
    dedup_ttl: int,
    batcher: Batcher | None = None,
    batcher_many: Batcher | None = None,
) -> list[EnqueueResult]:
    """Store the messages of one request, each in the lanes of its own
    targets, all in one atomic step on one Redis (enqueue_many.lua): all or
    none. One message takes enqueue()'s path (its script, its batcher:
    the single-message hot path is unchanged).

    On a Cluster a script touches one slot, so the writes go slot by slot
    (the messages keep their order within each), as enqueue() fans out: a
    failure after a slot stored its part is FanOutIncomplete ("stored":
    "unknown"), and a retry with the same dedup ids completes the rest
    under the ids stored first."""
    if len(messages) == 1:
        m = messages[0]
        result = await enqueue(
            scripts,
            m.targets,
            m.envelope,
            m.message_id,
            m.dedup_id,
            dedup_ttl,
            batcher,
            m.reencode,
        )
        return [result]
    if not scripts.cluster:
        return await _enqueue_many_atomic(
            scripts, [(i, m, m.targets) for i, m in enumerate(messages)], dedup_ttl, batcher_many
        )
    groups: dict[int, list[tuple[int, Pending, list[Target]]]] = {}
    for i, m in enumerate(messages):
        by_slot: dict[int, list[Target]] = {}
        for t in m.targets:
            by_slot.setdefault(key_slot(t.keys.tag.encode()), []).append(t)
        for slot, targets in by_slot.items():
            groups.setdefault(slot, []).append((i, m, targets))
    results: list[EnqueueResult | None] = [None] * len(messages)
    current = list(messages)  # each message's envelope and id as stored so far
    held = False
    for group in groups.values():
        calls = [(i, current[i], targets) for i, _, targets in group]
        try:
            stored = await _enqueue_many_atomic(scripts, calls, dedup_ttl, batcher_many)
        except RedisError as exc:
            if not held:
                raise
            command_written.set(True)
            raise FanOutIncomplete(f"stored in part, not on every Cluster slot: {exc}") from exc
        held = True
        for (i, m, _), result in zip(calls, stored, strict=True):
            earlier = results[i]
            duplicate = result.duplicate and (earlier is None or earlier.duplicate)
            results[i] = EnqueueResult(result.id, duplicate)
            if result.id != m.message_id and m.reencode is not None:
                current[i] = Pending(
                    m.targets, m.reencode(result.id), result.id, m.dedup_id, m.reencode
                )
    return [r for r in results if r is not None]


async def _enqueue_many_atomic(
    scripts: Scripts,
    calls: list[tuple[int, Pending, list[Target]]],
    dedup_ttl: int,
    batcher: Batcher | None,
) -> list[EnqueueResult]:
    """One enqueue_many script: all targets share one Cluster slot (or one Redis)."""
    keys: list[str] = []
    replicate = "1" if batcher is not None and batcher.replicas else "0"
    args: list[Any] = [dedup_ttl, replicate]
    for _, m, targets in calls:
        args += [m.envelope, m.message_id, m.dedup_id or "", len(targets)]
        for t in targets:
            seen = t.keys.seen(m.dedup_id) if m.dedup_id else t.keys.tag + ":seen:"
            keys += keys_for("enqueue_many", t.keys, t.ordering_key, seen=seen)
            args.append(t.ordering_key)
    if batcher is None:
        raw = await scripts.enqueue_many(keys=keys, args=args)
    else:
        raw = await batcher(keys, args)
    return [
        EnqueueResult(id=_text(raw[j + 1]), duplicate=int(raw[j]) == 0)
        for j in range(0, len(raw), 2)
    ]


# Claim's gates (claim.lua): why nothing, or only a probe, was claimed.
PAUSED, HELD, DOWN = -1, -2, -3


class Blame(enum.Enum):
    """Whose fault a failed attempt was, as fail.lua counts it toward the
    destination's circuit breaker (docs/destination-health.md)."""

    DESTINATION = "1"  # counts: an outage, a 5xx, a timeout, a refused connection
    PERMANENT = "2"  # the message given up for its own fault: says nothing
    MESSAGE = "3"  # the destination answered, blaming the message: it is up


class Outcome(enum.Enum):
    """What a failed attempt leads to (see fail.lua)."""

    RETRY = "0"
    DEAD_LETTER = "1"
    BLOCK = "2"


@dataclass(frozen=True, slots=True)
class Breaker:
    """A destination's circuit breaker as the scripts take it (fail.lua's
    ARGV; docs/destination-health.md). `failing_keys` 0: off."""

    failing_keys: int = 0
    window_ms: int = 0
    probe_ms: int = 0
    probe_max_ms: int = 0
    max_hold_ms: int = 0

    @property
    def on(self) -> bool:
        return self.failing_keys > 0

    def args(self, retry_after: float | None) -> list[int]:
        """The breaker's part of fail.lua's ARGV; `retry_after`: the seconds
        the destination asked all deliveries to wait, or None."""
        hold = 0
        # NaN compares false; an infinite ask is cut to max_hold like any other.
        if self.on and retry_after is not None and retry_after > 0:
            hold = int(min(float(self.max_hold_ms), retry_after * 1000))
        return [self.failing_keys, self.window_ms, self.probe_ms, self.probe_max_ms, hold]


BREAKER_OFF = Breaker()


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    head: bytes
    attempts: int
    token: str


@dataclass(frozen=True, slots=True)
class Acked:
    """What an ack did."""

    lease_lost: bool  # another claim owns the key now: nothing changed
    next_head: bytes | None = None  # the claim is kept for this next message of the key
    # This success reopened a destination that was down: the keys it resumed.
    resumed: int | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """What recording a failed attempt did (fail.lua)."""

    lease_lost: bool  # another claim owns the key now: nothing was recorded
    attempts: int = 0  # failed attempts of the head so far
    # What changed for the whole destination: "" nothing, "down" (the
    # circuit breaker opened), "up" (an answer blaming the message showed it
    # answers again), "hold" (a Retry-After holds it from now).
    event: str = ""
    resumed: int | None = None  # with "up": the waiting keys resumed


@dataclass(frozen=True, slots=True)
class ClaimResult:
    claims: list[Claim]
    # < 0 while nothing may be claimed: PAUSED, HELD or DOWN (claim.lua)
    ready_left: int
    next_deadline_ms: int  # -1: none
    now_ms: int

    @property
    def paused(self) -> bool:
        """Paused by an operator (`router pause`)."""
        return self.ready_left == PAUSED


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
    state: str  # empty, ready, in flight, waiting (a backoff), blocked
    messages: int
    head_id: str | None
    head_arrival_ms: int | None
    attempts: int  # failed attempts of the head message so far
    last_error: str | None
    next_try_ms: int | None  # when waiting: when it is due (ms since the epoch)


class DeadLetter(msgspec.Struct, frozen=True):
    """A dead letter as its list holds it (JSON), and as the admin API
    shows it (its error redacted): the descriptions are the API's."""

    key: Annotated[str, msgspec.Meta(description="Its ordering key.")]
    envelope: Annotated[str, msgspec.Meta(description="The stored message (its envelope).")]
    error: Annotated[str, msgspec.Meta(description="Its last attempt's error.")]
    attempts: int
    dead_at: Annotated[int, msgspec.Meta(description="Unix time, ms.")]


_dead_decoder = msgspec.json.Decoder(DeadLetter)


class DestinationQueue:
    """The transitions of one destination's lanes."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        destination: str,
        shard: int = 0,
        shards: int = 1,
        rate: ShardRate | None = None,
    ) -> None:
        # Any: redis-py types its commands as "Awaitable[T] | T" for both
        # clients, which mypy cannot await.
        self.redis: Any = redis
        self.scripts = scripts
        self.keys = DestinationKeys(destination, shard, shards)
        # The outbound rate limit's part of claim's and ack's ARGV (last).
        self._rate_args = rate.script_args() if rate else NO_LIMIT_ARGS
        # Acks of the deliveries that finish together share a round trip.
        self._ack = batching.batcher(redis, scripts.ack)
        # On a Cluster, claims go straight to their shard's node as acks do:
        # redis-py's per-command routing took a quarter of a worker's CPU.
        self._claim = batching.batcher(redis, scripts.claim) if scripts.cluster else None

    async def claim(
        self, token: str, want: int, lease_ms: int, max_in_flight: int, breaker: bool = False
    ) -> ClaimResult:
        """Claim up to `want` keys; `breaker`: the destination's circuit
        breaker is on (off, a `health` left in Redis is ignored)."""
        k = self.keys
        keys = keys_for("claim", k)
        args: list[Any] = [k.lane_prefix, lease_ms, max_in_flight, token, want, int(breaker)]
        args += self._rate_args
        if self._claim is not None:
            raw = await self._claim(keys, args)
        else:
            raw = await self.scripts.claim(keys=keys, args=args)
        claims = [
            Claim(key=_text(raw[i]), head=raw[i + 1], attempts=int(raw[i + 2]), token=token)
            for i in range(3, len(raw), 3)
        ]
        return ClaimResult(claims, int(raw[0]), int(raw[1]), int(raw[2]))

    async def ack(self, claim: Claim, head: bytes, lease_ms: int, keep: bool) -> Acked:
        """Remove the acknowledged `head` (a no-op if a retried ack already
        did); with `keep`, the claim may go on to the key's next message."""
        raw = await self._ack(
            keys_for("ack", self.keys, claim.key),
            [claim.key, claim.token, lease_ms, "1" if keep else "0", head, *self._rate_args],
        )
        if raw == LEASE_LOST:
            return Acked(lease_lost=True)
        resumed = int(raw[2])
        return Acked(False, raw[1] or None, resumed if resumed >= 0 else None)

    async def fail(
        self,
        claim: Claim,
        delay_ms: int,
        error: str,
        outcome: Outcome,
        counted: bool = True,
        breaker: Breaker = BREAKER_OFF,
        retry_after: float | None = None,
        blame: Blame = Blame.DESTINATION,
    ) -> Failed:
        """Record a failed attempt (with the destination's health: `breaker`,
        the `retry_after` seconds the destination asked for, and whose fault
        it was: `blame`). `counted` False: the worker gave up before trying."""
        raw = await self.scripts.fail(
            keys=keys_for("fail", self.keys, claim.key),
            args=[
                claim.key,
                claim.token,
                max(0, delay_ms),
                error,
                outcome.value,
                blame.value if counted else "0",
                *breaker.args(retry_after),
            ],
        )
        if raw == LEASE_LOST:
            return Failed(lease_lost=True)
        resumed = int(raw[2])
        return Failed(False, int(raw[0]), _text(raw[1]), resumed if resumed >= 0 else None)

    async def renew(self, claim: Claim, lease_ms: int) -> bool:
        """Extend the lease; False when it was lost."""
        raw = await self.scripts.renew(
            keys=keys_for("renew", self.keys), args=[claim.key, claim.token, lease_ms]
        )
        return int(raw) != LEASE_LOST

    async def release(self, claim: Claim) -> bool:
        """Hand the key back untried; False when the lease was already lost."""
        raw = await self.scripts.release(
            keys=keys_for("release", self.keys), args=[claim.key, claim.token]
        )
        return int(raw) != LEASE_LOST

    async def wait(self, timeout: float) -> None:
        """Block until nudged or `timeout` seconds pass."""
        await self.redis.blpop([self.keys.wake], timeout=timeout)

    # -- inspection and dead letters (CLI and admin API, not the hot path) --

    async def figures(self) -> QueueFigures:
        """The shard's sizes in one round trip of O(1) reads (the scripts
        keep `counts` and `heads` up to date: no lane is walked)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(k.counts, "messages", "acked")
            pipe.llen(k.ready)
            pipe.zcard(k.leases)
            pipe.zcard(k.delayed)
            pipe.hlen(k.blocked)
            pipe.llen(k.dead)
            pipe.exists(k.paused)
            pipe.zrange(k.heads, 0, 0, withscores=True)
            pipe.hmget(k.health, "state", "since", "hold_until")
            replies = await pipe.execute()
        counts, ready, in_flight, delayed, blocked, dead, paused, oldest, health = replies
        messages = int(counts[0] or 0)
        if messages < 0 and k.tag not in _drift_reported:
            # Only an older version's process acknowledging alongside this
            # one makes the count go below 0: say so once, with the fix.
            _drift_reported.add(k.tag)
            log.warning(
                "destination %s: its message count went below 0 (%d): a process of an "
                "older version is acknowledging messages; once none runs, "
                "`router recount %s` counts the lanes again",
                k.destination,
                messages,
                k.destination,
            )
        return QueueFigures(
            messages=max(0, messages),
            ready=ready,
            in_flight=in_flight,
            delayed=delayed,
            blocked=blocked,
            dead=dead,
            oldest_arrival_ms=int(oldest[0][1]) if oldest else None,
            acked=int(counts[1] or 0),
            paused=bool(paused),
            down_since_ms=int(health[1] or 0)
            if health[0] is not None and _text(health[0]) == "down"
            else None,
            held_until_ms=int(health[2]) if health[2] is not None else None,
        )

    async def recount(self, force: bool = False) -> int:
        """Count the shard's messages from its lanes: once for a queue stored
        by a version without counts (-2 when already counted), or always
        with `force` (`router recount`)."""
        args = [self.keys.lane_prefix, "1" if force else "0"]
        return int(await self.scripts.recount(keys=keys_for("recount", self.keys), args=args))

    async def retry_now(self, keys: list[str]) -> int:
        """Make keys waiting out a backoff due now (all when `keys` is empty,
        RETRY_STEP at a time so that no step holds Redis for long)."""
        script_keys = keys_for("retry", self.keys)
        if keys:
            return int(await self.scripts.retry(keys=script_keys, args=[0, *keys]))
        moved = 0
        # Keys failing again at once could refill `delayed` forever: as many
        # steps as it held at the start, and one more.
        steps = int(await self.redis.zcard(self.keys.delayed)) // RETRY_STEP + 1
        for _ in range(steps):
            n = int(await self.scripts.retry(keys=script_keys, args=[RETRY_STEP]))
            moved += n
            if n < RETRY_STEP:
                break
        return moved

    async def reopen(self) -> int:
        """Clear the shard's circuit breaker and Retry-After hold, and make
        every waiting key ready, oldest first (reopen.lua). How many keys
        resumed; -1 when it was neither down nor held."""
        k = self.keys
        return int(await self.scripts.reopen(keys=keys_for("reopen", k), args=[]))

    async def key_state(self, key: str) -> KeyState:
        """Where one ordering key stands (`router status DEST KEY`)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(k.lane(key))
            pipe.lindex(k.lane(key), 0)
            pipe.hget(k.attempts, key)
            pipe.hget(k.last_error, key)
            pipe.zscore(k.delayed, key)
            pipe.zscore(k.leases, key)
            pipe.hget(k.blocked, key)
            length, head, attempts, error, due, lease, blocked = await pipe.execute()
        head_env = envelope.decode(head) if head is not None else None
        # A key with messages is in exactly one of ready/leases/delayed/
        # blocked: not in the other three, it is in ready (no O(n) LPOS).
        state = "empty"
        if blocked is not None:
            state = "blocked"
        elif lease is not None:
            state = "in flight"
        elif due is not None:
            state = "waiting"
        elif length:
            state = "ready"
        return KeyState(
            key=key,
            state=state,
            messages=int(length),
            head_id=head_env.id if head_env else None,
            head_arrival_ms=head_env.ts if head_env else None,
            attempts=int(attempts or 0),
            last_error=_text(error) if error is not None else None,
            next_try_ms=int(due) if due is not None else None,
        )

    async def set_paused(self, paused: bool) -> None:
        if paused:
            await self.redis.set(self.keys.paused, int(time.time() * 1000))
        else:
            await self.scripts.resume(keys=keys_for("resume", self.keys))

    async def lane_length(self, key: str) -> int:
        return int(await self.redis.llen(self.keys.lane(key)))

    async def dead_letters(
        self, start: int = 0, count: int = 100
    ) -> list[tuple[bytes, DeadLetter]]:
        raw = await self.redis.lrange(self.keys.dead, start, start + count - 1)
        return [(_bytes(item), _dead_decoder.decode(item)) for item in raw]

    async def replay(self, raw_entry: bytes) -> bool:
        """Put one dead letter back in its key's lane, where it arrived."""
        return await self.replay_key(_dead_decoder.decode(raw_entry).key, [raw_entry]) == 1

    async def replay_key(self, key: str, raw_entries: list[bytes]) -> int:
        """Put dead letters of one key (oldest first) back in its lane, in
        one step: a worker cannot claim the first before the others are in."""
        args: list[Any] = [key]
        for raw in raw_entries:
            args += [raw, _dead_decoder.decode(raw).envelope]
        return int(await self.scripts.replay(keys=keys_for("replay", self.keys, key), args=args))

    async def purge_all(self) -> int:
        """Delete every dead letter of the shard, in one step."""
        return int(await self.scripts.purge(keys=keys_for("purge", self.keys)))

    async def purge(self, raw_entries: list[bytes]) -> int:
        """Delete these dead letters (exact list elements): what an operator
        looked at, not what arrived since. Returns how many were there."""
        return await remove_entries(self.redis, self.keys.dead, raw_entries)

    async def keys_with_messages(self) -> list[str]:
        """Every ordering key whose lane holds messages: each is in exactly one
        of ready, leases, delayed and blocked (not a hot path: reads them whole)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.ready, 0, -1)
            pipe.zrange(k.leases, 0, -1)
            pipe.zrange(k.delayed, 0, -1)
            pipe.hkeys(k.blocked)
            lists = await pipe.execute()
        return list(dict.fromkeys(_text(key) for found in lists for key in found))

    async def lease_is_live(self, key: str) -> bool:
        """The key is claimed and its lease has not run out (Redis's clock)."""
        deadline = await self.redis.zscore(self.keys.leases, key)
        if deadline is None:
            return False
        seconds, micros = await self.redis.time()
        return float(deadline) > seconds * 1000 + micros // 1000

    async def blocked_keys(self) -> dict[str, dict[str, Any]]:
        """Keys stopped by on_exhausted: block, with their last error (admin, not hot path)."""
        raw = await self.redis.hgetall(self.keys.blocked)
        return {_text(k): msgspec.json.decode(v) for k, v in raw.items()}

    async def unblock(self, key: str) -> bool:
        return bool(await self.scripts.unblock(keys=keys_for("unblock", self.keys), args=[key]))


class DestinationQueues:
    """All shards of one destination, for the CLI and the admin API: sizes
    add up, dead letters merge oldest first, a key is found in its shard."""

    def __init__(self, redis: Redis, scripts: Scripts, destination: str, shards: int = 1) -> None:
        self.shards = [
            DestinationQueue(redis, scripts, destination, i, shards) for i in range(shards)
        ]

    @classmethod
    def of(cls, redis: Redis, scripts: Scripts, destination: Destination) -> DestinationQueues:
        """The queues of a configured destination, as many shards as it has."""
        return cls(redis, scripts, destination.name, destination.settings.shards)

    def of_key(self, key: str) -> DestinationQueue:
        return self.shards[shard_of(key, len(self.shards))]

    async def figures(self) -> QueueFigures:
        """Every shard's figures added up (the oldest is the oldest of all)."""
        return QueueFigures.total([await queue.figures() for queue in self.shards])

    async def recount(self, force: bool = False) -> int:
        """Count the shards not counted yet (every shard with `force`); how
        many were counted."""
        return sum([await queue.recount(force) != -2 for queue in self.shards])

    async def retry_now(self, keys: list[str] | None = None) -> int:
        """Make waiting keys due now (all of them when `keys` is None; then
        a destination that is down or held by a Retry-After is up again:
        the operator says so)."""
        if not keys:
            resumed = [max(0, await queue.reopen()) for queue in self.shards]
            return sum(resumed) + sum([await queue.retry_now([]) for queue in self.shards])
        by_shard: dict[int, list[str]] = {}
        for key in keys:
            by_shard.setdefault(shard_of(key, len(self.shards)), []).append(key)
        return sum([await self.shards[i].retry_now(ks) for i, ks in by_shard.items()])

    async def key_state(self, key: str) -> KeyState:
        return await self.of_key(key).key_state(key)

    async def set_paused(self, paused: bool) -> None:
        """Pause (nothing new is attempted; attempts in flight finish; ingest
        goes on storing) or resume, every shard, for every process."""
        for queue in self.shards:
            await queue.set_paused(paused)

    async def oldest_dead(self, count: int) -> list[tuple[DestinationQueue, bytes, DeadLetter]]:
        """The oldest `count` dead letters over all shards, oldest first
        (each shard's list is oldest first: merged by dead_at)."""
        merged = []
        for queue in self.shards:
            merged += [(queue, raw, d) for raw, d in await queue.dead_letters(0, count)]
        merged.sort(key=lambda entry: entry[2].dead_at)  # stable: a shard's order holds on ties
        return merged[:count]

    async def dead_letters(
        self, start: int = 0, count: int = 100
    ) -> list[tuple[bytes, DeadLetter]]:
        if len(self.shards) == 1:
            return await self.shards[0].dead_letters(start, count)
        return [(raw, d) for _, raw, d in (await self.oldest_dead(start + count))[start:]]

    async def replay_oldest(self, count: int | None = None) -> int:
        """Replay the oldest `count` dead letters (all when None), each key's
        in one step, oldest first: each goes back where it arrived in its
        key's lane (replay.lua), so per key the messages come back in their
        original order."""
        if count is None:
            count = sum([int(await q.redis.llen(q.keys.dead)) for q in self.shards])
        if count <= 0:
            return 0
        by_key: dict[tuple[DestinationQueue, str], list[bytes]] = {}
        for queue, raw, letter in await self.oldest_dead(count):
            by_key.setdefault((queue, letter.key), []).append(raw)
        return sum([await q.replay_key(key, raws) for (q, key), raws in by_key.items()])

    async def purge_dead(self, count: int | None = None) -> int:
        """Delete the oldest `count` dead letters (all when None: nothing is
        read back, however many there are)."""
        if count is None:
            return sum([await queue.purge_all() for queue in self.shards])
        if count <= 0:
            return 0
        chosen: dict[DestinationQueue, list[bytes]] = {}
        for queue, raw, _ in await self.oldest_dead(count):
            chosen.setdefault(queue, []).append(raw)
        return sum([await queue.purge(raws) for queue, raws in chosen.items()])

    async def blocked_keys(self) -> dict[str, dict[str, Any]]:
        blocked: dict[str, dict[str, Any]] = {}
        for queue in self.shards:
            blocked.update(await queue.blocked_keys())
        return blocked

    async def unblock(self, key: str) -> bool:
        return await self.of_key(key).unblock(key)


async def remove_entries(redis: Any, list_key: str, raw_entries: list[bytes]) -> int:
    """Delete these exact elements of a list (dead letters, unroutable
    items): what an operator looked at, not what arrived since. Returns how
    many were there."""
    async with redis.pipeline(transaction=False) as pipe:
        for raw in raw_entries:
            pipe.lrem(list_key, 1, raw)
        return sum(int(n) for n in await pipe.execute())


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
