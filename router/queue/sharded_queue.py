"""A destination's queue over all its shards (ShardedQueue): what the
CLI, the admin API, status, moving and purging act on. One shard's queue is
router.queue.lanes' DestinationQueue.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from router.config import Destination
from router.queue import message_log
from router.queue.inspection import DeadLetter, KeyState, PausedKey, QueueFigures, Skipped
from router.queue.keys import shard_of
from router.queue.lanes import DestinationQueue
from router.queue.scripts import Scripts


class ShardedQueue:
    """All shards of one destination, for the CLI and the admin API: sizes
    add up, dead letters merge oldest first, a key is found in its shard."""

    def __init__(self, redis: Redis, scripts: Scripts, destination: str, shards: int = 1) -> None:
        self.shards = [
            DestinationQueue(redis, scripts, destination, i, shards) for i in range(shards)
        ]

    @classmethod
    def of(cls, redis: Redis, scripts: Scripts, destination: Destination) -> ShardedQueue:
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

    async def longest_waiting(self, count: int) -> list[KeyState]:
        """The `count` conversations whose head message has waited longest
        over all shards, oldest first (`router status DEST`)."""
        merged = [s for queue in self.shards for s in await queue.longest_waiting(count)]
        merged.sort(key=lambda s: s.head_arrival_ms or 0)
        return merged[:count]

    async def story(self, message_id: str) -> message_log.Delivery | None:
        """The message's story at this destination (the message log): looked
        up in every shard (an id does not say which); None when it has none."""
        for queue in self.shards:
            found = await message_log.story(queue.redis, queue.keys, message_id)
            if found is not None:
                return found
        return None

    async def search(
        self, key: str | None, failed: bool, since_ms: int | None, limit: int
    ) -> list[message_log.Found]:
        """The destination's logged messages that match, newest first (a key
        is searched in its own shard only)."""
        shards = [self.of_key(key)] if key is not None else self.shards
        merged = [
            found
            for queue in shards
            for found in await message_log.search(
                queue.redis, queue.keys, key, failed, since_ms, limit
            )
        ]
        merged.sort(key=lambda f: f.received_at, reverse=True)
        return merged[:limit]

    async def set_paused(self, paused: bool) -> None:
        """Pause (nothing new is attempted; attempts in flight finish; ingest
        goes on storing) or resume, every shard, for every process."""
        for queue in self.shards:
            await queue.set_paused(paused)

    async def pause_key(self, key: str) -> bool:
        """Pause one conversation in its shard, for every process: none of
        its messages is attempted (an attempt in flight finishes), ingest
        goes on storing; False when it already was paused."""
        return await self.of_key(key).pause_key(key)

    async def resume_key(self, key: str) -> bool:
        """Resume one paused conversation: its messages go on, oldest first;
        False when it was not paused."""
        return await self.of_key(key).resume_key(key)

    async def paused_keys(self) -> list[PausedKey]:
        """Every paused conversation over all shards, paused longest first."""
        merged = [p for queue in self.shards for p in await queue.paused_keys()]
        merged.sort(key=lambda p: (p.since_ms, p.key))
        return merged

    async def skip(self, key: str) -> Skipped | None:
        """Dead-letter one conversation's head message (skip.lua); None when
        the conversation has no message."""
        return await self.of_key(key).skip(key)

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
