"""Ingest's write path: a message appended to the lanes of every destination
its route names (enqueue.lua, enqueue_many.lua), in one atomic step on one
Redis and slot by slot on a Cluster, with its dedup id (FanOutIncomplete
when a Cluster write stopped half way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot
from redis.exceptions import RedisError

from router.queue.batching import Batcher
from router.queue.keys import DestinationKeys
from router.queue.scripts import Scripts, keys_for
from router.redis.client import command_written


@dataclass(frozen=True, slots=True)
class Target:
    """One destination a message is written to, and its ordering-key value."""

    keys: DestinationKeys
    ordering_key: str
    # The shard's message log policy (router.queue.message_log.policy): '' off.
    log: str = ""


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
    for t in targets:
        args += [t.ordering_key, t.log]
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
            args += [t.ordering_key, t.log]
    if batcher is None:
        raw = await scripts.enqueue_many(keys=keys, args=args)
    else:
        raw = await batcher(keys, args)
    return [
        EnqueueResult(id=_text(raw[j + 1]), duplicate=int(raw[j]) == 0)
        for j in range(0, len(raw), 2)
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
