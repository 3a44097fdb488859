"""Moving messages from one destination into another, and purging an
orphan's queue (`router dead replay SRC --into DEST`, `router orphan move`,
`router orphan purge`, and the admin API's equivalents).

A destination removed from routes.yaml keeps what it held (router.queue.orphans):
these are the ways out of it. Messages keep their ordering key and their
order per key, and join the end of that key's lane in the target (their
arrival there is the move: what the target already held for the key goes
first, and no message is put in front of one being attempted). Each takes a
new sequence number (X-Router-Sequence) from the target's counter of its
key, in the order moved (move_in.lua): its number at the source counted
that destination's messages, not the target's.

On a Redis Cluster the two destinations live in different slots, so no
script can touch both: each chunk of one key's messages is

1. copied into the target (move_in.lua), which records `<token>:<id>` of
   each in the target's `moved` hash, and skips the ones recorded;
2. removed from the source (move_out.lua), exactly the entries copied;
3. forgotten in `moved` (a plain HDEL).

A crash (or a refused write) between 1 and 2 leaves the chunk in both: run
again, the move takes the same token (kept in the source's `moving` hash
until the move finishes), step 1 skips it and step 2 removes it. Between 2 and 3 it
leaves markers of messages no longer in the source: nothing reads them again
(a later move has another token). Nothing is lost, nothing is copied twice.
The same steps run on one Redis: one path, tested everywhere.

Each operator action is one function here (replay_dead_into, move_queued,
purge_queued), so the CLI and the admin API do the same thing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from router.queue import envelope
from router.queue.inspection import DeadLetter
from router.queue.keys import move_key
from router.queue.lanes import DestinationQueue
from router.queue.scripts import LEASE_LOST, Scripts, keys_for
from router.queue.sharded_queue import ShardedQueue

# Messages of one key per step: a step's script runs for about a millisecond
# per hundred, and a crash repeats at most one step's worth of work.
CHUNK = 100


class MoveRefused(Exception):
    """A move that cannot start as asked: the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Moved:
    """What a move or purge did."""

    messages: int  # moved (or purged)
    # Keys left where they were: a process still delivering the source holds
    # them (their lease is live); run it again once none does.
    in_flight: list[str]


# What a move takes (the field of the source's `moving` hash): its dead
# letters, or its queue. Each kind has its own token, so that one kind's
# move finishing never drops the token a stopped move of the other needs.
DEAD, QUEUE = "dead", "queue"


async def _begin(redis: Any, source: str, kind: str, target: str) -> str:
    """The token of the move of `source`'s `kind` into `target`: a new one,
    or the one of such a move that did not finish (a crash), so that it
    skips what that one copied. A move into another target is refused until
    it finishes."""
    fresh = f"{target} {os.urandom(8).hex()}"
    await redis.hsetnx(move_key(source), kind, fresh)
    raw = await redis.hget(move_key(source), kind)
    current = raw.decode() if isinstance(raw, bytes) else str(raw)
    under_way, _, token = current.partition(" ")
    if under_way != target:
        what = "dead letters" if kind == DEAD else "queued messages"
        raise MoveRefused(
            f"a move of {source}'s {what} into {under_way} did not finish (interrupted): "
            f"run it again into {under_way} first, or a message could be in both"
        )
    return token


async def _finish(redis: Any, source: str, kind: str) -> None:
    await redis.hdel(move_key(source), kind)


async def _move_chunk(
    scripts: Scripts,
    source: DestinationQueue,
    target: ShardedQueue | None,
    token: str,
    mode: str,
    key: str,
    entries: list[bytes],
    envelopes: list[bytes],
) -> int:
    """Steps 1 to 3 for one chunk of one key (step 2 alone with no target:
    a purge); how many left the source, LEASE_LOST when its key is leased."""
    markers: list[str] = []
    into = target.of_key(key) if target is not None else None
    if into is not None:
        args: list[Any] = [key, token]
        for env in envelopes:
            message_id = envelope.decode(env).id
            args += [message_id, env]
            markers.append(f"{token}:{message_id}")
        await scripts.move_in(keys=keys_for("move_in", into.keys, key), args=args)
    removed = int(
        await scripts.move_out(
            keys=keys_for("move_out", source.keys, key),
            args=[mode, key, "moved" if into is not None else "purged", *entries],
        )
    )
    if into is not None:
        await into.redis.hdel(into.keys.moved, *markers)
    return removed


async def replay_dead_into(
    scripts: Scripts,
    source: ShardedQueue,
    source_name: str,
    target: ShardedQueue,
    target_name: str,
    count: int | None,
) -> int:
    """Replay the oldest `count` dead letters of `source` (all when None)
    into `target`: each key's in their order, at the end of its lane there.
    How many were moved."""
    redis = source.shards[0].redis
    if count is None:
        count = sum([int(await q.redis.llen(q.keys.dead)) for q in source.shards])
    if count <= 0:
        return 0
    token = await _begin(redis, source_name, DEAD, target_name)
    by_key: dict[tuple[DestinationQueue, str], list[tuple[bytes, DeadLetter]]] = {}
    for queue, raw, letter in await source.oldest_dead(count):
        by_key.setdefault((queue, letter.key), []).append((raw, letter))
    moved = 0
    for (queue, key), letters in by_key.items():
        for i in range(0, len(letters), CHUNK):
            chunk = letters[i : i + CHUNK]
            moved += await _move_chunk(
                scripts,
                queue,
                target,
                token,
                "dead",
                key,
                [raw for raw, _ in chunk],
                [letter.envelope.encode() for _, letter in chunk],
            )
    await _finish(redis, source_name, DEAD)
    return moved


async def move_queued(
    scripts: Scripts,
    source: ShardedQueue,
    source_name: str,
    target: ShardedQueue,
    target_name: str,
) -> Moved:
    """Move every queued message of `source` (an orphan: nothing delivers
    it) into `target`, key by key, in order. Dead letters stay (replay
    them with replay_dead_into)."""
    redis = source.shards[0].redis
    token = await _begin(redis, source_name, QUEUE, target_name)
    done = await _drain(scripts, source, target, token)
    if not done.in_flight:  # else the next run must take the same token
        await _finish(redis, source_name, QUEUE)
    return done


async def purge_queued(scripts: Scripts, source: ShardedQueue) -> Moved:
    """Delete every queued message of `source` (an orphan) for good. Dead
    letters stay (`router dead purge`), and so do its sequence counters
    (keys.seq): its dead letters keep their numbers, a process not yet
    reloaded may still store a message there, and the destination may be
    added back; restarting its keys at 1 would repeat numbers a receiver
    has seen."""
    return await _drain(scripts, source, None, "")


async def _drain(
    scripts: Scripts, source: ShardedQueue, target: ShardedQueue | None, token: str
) -> Moved:
    # Paused first: a process that still delivers the source (one not yet
    # reloaded) then starts nothing new, so no key is leased between the
    # copy and the removal. Keys leased before are left for a second run.
    first = source.shards[0]
    was_paused = bool(await first.redis.exists(first.keys.paused))
    await source.set_paused(True)
    moved = 0
    in_flight: list[str] = []
    for queue in source.shards:
        for key in await queue.keys_with_messages():
            if await queue.lease_is_live(key):
                in_flight.append(key)
                continue
            lane = queue.keys.lane(key)
            changed = 0  # reads in a row that were stale by the removal
            while True:
                raw = await queue.redis.lrange(lane, 0, CHUNK - 1)
                if not raw:
                    break
                n = await _move_chunk(scripts, queue, target, token, "lane", key, raw, raw)
                if n == LEASE_LOST or changed == 3:  # someone delivers it after all
                    in_flight.append(key)
                    break
                # 0: its head changed meanwhile (read again; what was copied
                # is skipped next time, by its marker).
                changed = changed + 1 if n == 0 else 0
                moved += n
    if not in_flight and not was_paused:
        # As it was: were it added back to routes.yaml, it delivers at once.
        await source.set_paused(False)
    return Moved(messages=moved, in_flight=in_flight)
