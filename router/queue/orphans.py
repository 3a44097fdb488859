"""Which destinations were ever configured, and which of them are orphaned.

Every process records the destination names of its routes.yaml in one Redis
set (keys.destinations_key) at start and at each reload. A destination that
is in that set, is not in the running routes.yaml, and still holds anything
(queued, in flight, waiting out a backoff, blocked, or dead letters) is
*orphaned*: its messages are kept, never deleted, but nothing delivers them
until it is configured again. `router status`, the metrics, the admin API
and the reload log show orphans through orphaned_destinations().

A name stays in the set for good: a destination removed while empty may
still receive a message from a process that has not reloaded yet, and it
must show up then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from redis.asyncio import Redis

from router.queue.keys import destinations_key, shard_count_key
from router.queue.scripts import Scripts
from router.queue.shard_layout import held_messages
from router.queue.sharded_queue import ShardedQueue


async def record(redis: Redis, names: Iterable[str]) -> None:
    """Add the configured destination names to the registry."""
    names = list(names)
    if names:
        client: Any = redis
        await client.sadd(destinations_key(), *names)


async def known_destinations(redis: Redis) -> set[str]:
    """Every destination name any process was configured with."""
    client: Any = redis
    return {
        n.decode() if isinstance(n, bytes) else str(n)
        for n in await client.smembers(destinations_key())
    }


async def stored_shards(redis: Redis, destination: str) -> int:
    """The shard count a destination's messages are stored under (absent: 1)."""
    client: Any = redis
    raw = await client.get(shard_count_key(destination))
    return int(raw) if raw is not None else 1


async def orphaned_destinations(redis: Redis, configured_names: Iterable[str]) -> list[str]:
    """Destinations known to the registry, not in `configured_names`, that
    still hold messages or dead letters; sorted by name."""
    configured = set(configured_names)
    orphans = []
    for name in sorted(await known_destinations(redis) - configured):
        if await held_messages(redis, name, await stored_shards(redis, name)):
            orphans.append(name)
    return orphans


async def queues_of(
    redis: Redis, scripts: Scripts, name: str, configured: Mapping[str, int]
) -> ShardedQueue | None:
    """The queues of destination `name`: a configured one (`configured`:
    name -> shards) with its shard count, or one no longer configured that
    a process once was (an orphan, or one emptied since) with the count its
    messages are stored under; None for a name never configured."""
    if name in configured:
        return ShardedQueue(redis, scripts, name, configured[name])
    if name in await known_destinations(redis):
        return ShardedQueue(redis, scripts, name, await stored_shards(redis, name))
    return None
