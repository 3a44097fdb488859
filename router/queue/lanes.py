"""One shard of a destination's queue in Redis: per-key lanes moved by atomic
Lua scripts (DestinationQueue), and what its transitions take and answer.

Each transition of the design in the README ("Redis layout") is one script,
so a message is never in two states or in none. Scripts use the server's
clock (TIME), so instances with skewed clocks agree on lease deadlines.
Ingest's writes are router.queue.enqueue's; all shards of a destination
together, router.queue.sharded_queue's.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis

from router.config import MessageLogSettings
from router.queue import envelope, message_log
from router.queue.inspection import DeadLetter, KeyState, PausedKey, QueueFigures, Skipped
from router.queue.keys import DestinationKeys
from router.queue.outbound_rate import NO_LIMIT_ARGS, ShardRate
from router.queue.scripts import LEASE_LOST, Scripts, keys_for

log = logging.getLogger("router.queue")

# `router retry` with no keys moves this many waiting keys per script call.
RETRY_STEP = 1000

# The error of a dead letter skipped by an operator (skip.lua adds the
# head's last error, if any).
SKIPPED = "skipped by an operator"

# Destination shards whose negative count was logged (once per process).
_drift_reported: set[str] = set()


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
class Group:
    """A coalesced request's messages (gather.lua): lane entries, oldest
    first, the first the claim's head; the same on every retry."""

    entries: list[bytes]
    ids: list[str]  # each entry's message id

    def args(self) -> list[Any]:
        """ack.lua's and fail.lua's last ARGV: the messages after the head."""
        out: list[Any] = [len(self.entries) - 1]
        for entry, message_id in zip(self.entries[1:], self.ids[1:], strict=True):
            out += [entry, message_id]
        return out


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
        log: MessageLogSettings | None = None,
    ) -> None:
        # Any: redis-py types its commands as "Awaitable[T] | T" for both
        # clients, which mypy cannot await.
        self.redis: Any = redis
        self.scripts = scripts
        self.keys = DestinationKeys(destination, shard, shards)
        # The outbound rate limit's part of claim's and ack's ARGV (last).
        self._rate_args = rate.script_args() if rate else NO_LIMIT_ARGS
        # The message log (router.queue.message_log): None while it is off.
        self.log = log
        self._log_policy = message_log.policy(log, shard, shards)
        # Acks of the deliveries that finish together share a round trip, and
        # so do claims: with every shard's and destination's on this client
        # (router.queue.scripts' Scripts.acks, Scripts.claims). Claims are
        # packed by router.redis.wire too, and on a Cluster go straight to
        # their shard's node (redis-py's per-command routing took a quarter
        # of a worker's CPU).
        self._ack = scripts.acks
        self._claim = scripts.claims

    async def claim(
        self, token: str, want: int, lease_ms: int, max_in_flight: int, breaker: bool = False
    ) -> ClaimResult:
        """Claim up to `want` keys; `breaker`: the destination's circuit
        breaker is on (off, a `health` left in Redis is ignored)."""
        k = self.keys
        keys = keys_for("claim", k)
        args: list[Any] = [k.lane_prefix, lease_ms, max_in_flight, token, want, int(breaker)]
        args += self._rate_args
        args.append(self._log_policy)
        raw = await self._claim(keys, args)
        claims = [
            Claim(key=_text(raw[i]), head=raw[i + 1], attempts=int(raw[i + 2]), token=token)
            for i in range(3, len(raw), 3)
        ]
        return ClaimResult(claims, int(raw[0]), int(raw[1]), int(raw[2]))

    async def ack(
        self,
        claim: Claim,
        head: bytes,
        lease_ms: int,
        keep: bool,
        message_id: str = "",
        logged: bytes = b"",
        group: Group | None = None,
    ) -> Acked:
        """Remove the acknowledged `head` (a no-op if a retried ack already
        did); with `keep`, the claim may go on to the key's next message.
        `logged`: the attempt's message log entry ('' none); `group`: a
        coalesced request's messages, `head` its first, removed together."""
        args = [claim.key, claim.token, lease_ms, "1" if keep else "0", head, *self._rate_args]
        args += [message_id, logged]
        if group is not None:
            args += group.args()
        raw = await self._ack(keys_for("ack", self.keys, claim.key), args)
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
        message_id: str = "",
        logged: bytes = b"",
        group: Group | None = None,
    ) -> Failed:
        """Record a failed attempt (with the destination's health: `breaker`,
        the `retry_after` seconds the destination asked for, and whose fault
        it was: `blame`). `counted` False: the worker gave up before trying.
        `logged`: its message log entry ('' none); `group`: a coalesced
        request's messages (each logged; a give-up gives up all of them)."""
        args: list[Any] = [
            claim.key,
            claim.token,
            max(0, delay_ms),
            error,
            outcome.value,
            blame.value if counted else "0",
            *breaker.args(retry_after),
            message_id,
            logged,
        ]
        if group is not None:
            args += group.args()
        raw = await self.scripts.fail(keys=keys_for("fail", self.keys, claim.key), args=args)
        if raw == LEASE_LOST:
            return Failed(lease_lost=True)
        resumed = int(raw[2])
        return Failed(False, int(raw[0]), _text(raw[1]), resumed if resumed >= 0 else None)

    async def gather(
        self, claim: Claim, window_ms: int, max_messages: int
    ) -> list[bytes] | int | None:
        """Coalescing: the lane entries the claim's next request carries,
        oldest first (the pinned group on a retry: gather.lua); or, when the
        key was handed back to wait for more (its head arrived less than
        `window_ms` ago), when it is due (ms, Redis clock); None when the
        lease was lost."""
        raw = await self.scripts.gather(
            keys=keys_for("gather", self.keys, claim.key),
            args=[claim.key, claim.token, window_ms, max_messages],
        )
        if raw == LEASE_LOST:
            return None
        if int(raw[0]) == 0:
            return int(raw[1])
        return [_bytes(e) for e in raw[1:]]

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
            pipe.hlen(k.paused_keys)
            replies = await pipe.execute()
        counts, ready, in_flight, delayed, blocked, dead, paused, oldest, health, keys = replies
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
            paused_keys=int(keys),
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
            pipe.hget(k.paused_keys, key)
            length, head, attempts, error, due, lease, blocked, paused = await pipe.execute()
        head_env = envelope.decode(head) if head is not None else None
        # A key with messages is in exactly one of ready/leases/delayed/
        # blocked, or parked: in none of those, it is in ready (no O(n) LPOS).
        parked = paused is not None and bool(msgspec.json.decode(paused).get("parked"))
        state = "empty"
        if parked and length:
            state = "paused"
        elif blocked is not None:
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
            paused=paused is not None,
        )

    async def longest_waiting(self, count: int) -> list[KeyState]:
        """The `count` ordering keys whose head message has waited longest,
        oldest first (`heads` is ordered by head arrival: one ZRANGE)."""
        keys = await self.redis.zrange(self.keys.heads, 0, count - 1)
        return [await self.key_state(_text(k)) for k in keys]

    async def set_paused(self, paused: bool) -> None:
        if paused:
            await self.redis.set(self.keys.paused, int(time.time() * 1000))
        else:
            await self.scripts.resume(keys=keys_for("resume", self.keys))

    async def pause_key(self, key: str) -> bool:
        """Pause one conversation (pause_key.lua); False when it already was."""
        k = self.keys
        return bool(await self.scripts.pause_key(keys=keys_for("pause_key", k), args=[key]))

    async def resume_key(self, key: str) -> bool:
        """Resume one paused conversation (resume_key.lua); False when it was not paused."""
        keys = keys_for("resume_key", self.keys, key)
        return bool(await self.scripts.resume_key(keys=keys, args=[key]))

    async def paused_keys(self) -> list[PausedKey]:
        """The conversations paused by an operator (an operator's list: read whole)."""
        raw = await self.redis.hgetall(self.keys.paused_keys)
        out = []
        for key, value in raw.items():
            entry = msgspec.json.decode(value)
            out.append(PausedKey(_text(key), int(entry["since"]), bool(entry.get("parked"))))
        return out

    async def skip(self, key: str) -> Skipped | None:
        """Move one conversation's head message to the dead letters, fencing
        out an attempt in flight (skip.lua); None when it has no message."""
        keys = keys_for("skip", self.keys, key)
        raw = await self.scripts.skip(keys=keys, args=[key, SKIPPED])
        if raw == 0:
            return None
        env = envelope.decode(raw[0])
        seq = int(raw[1])
        return Skipped(key, env.id, seq if seq >= 0 else None, _text(raw[2]), int(raw[3]))

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
            letter = _dead_decoder.decode(raw)
            # Back with the sequence number it was stored with (replay.lua).
            args += [raw, envelope.entry(letter.seq, letter.envelope.encode())]
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
        of ready, leases, delayed and blocked, or parked (paused_keys: a
        paused one without messages is listed too); not a hot path: reads
        them whole."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.ready, 0, -1)
            pipe.zrange(k.leases, 0, -1)
            pipe.zrange(k.delayed, 0, -1)
            pipe.hkeys(k.blocked)
            pipe.hkeys(k.paused_keys)
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
