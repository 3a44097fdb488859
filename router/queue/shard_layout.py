"""The number of shards a destination's messages are stored under.

An ordering key's shard is CRC32(key) mod N (router.queue.keys), so changing N
would move conversations to other shards while their earlier messages wait
in the old ones: two lanes of one conversation, delivered out of order. The
count in use is kept in Redis (keys.shard_count_key); a routes.yaml whose
`shards` differs is refused at start while the destination still holds
anything under the old count (queued, in flight, waiting out a backoff,
blocked, paused conversations, or dead letters). Once it holds nothing, the new count is taken.
Stop every router process before changing it: one still running with the
old count would go on writing the old layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from router.config import Destination
from router.queue.keys import all_shards, shard_count_key


async def held_messages(redis: Redis, destination: str, shards: int) -> int:
    """Entries the destination holds under `shards`: keys queued, leased,
    delayed, blocked or paused, and dead letters."""
    client: Any = redis
    total = 0
    for keys in all_shards(destination, shards):
        total += int(await client.llen(keys.ready)) + int(await client.zcard(keys.leases))
        total += int(await client.zcard(keys.delayed)) + int(await client.hlen(keys.blocked))
        # Paused conversations: a parked one holds messages, and each pause
        # is kept in its shard (a new count would put the key elsewhere).
        total += int(await client.hlen(keys.paused_keys))
        total += int(await client.llen(keys.dead))
    return total


async def refusal(
    redis: Redis, destinations: Iterable[Destination], record: bool = True
) -> str | None:
    """Why the configured shard counts cannot be used now, or None; with
    `record`, a count that changed on an empty destination is recorded
    (at start and by workers, never by a readiness probe)."""
    client: Any = redis
    for dest in destinations:
        wanted = dest.settings.shards
        raw = await client.get(shard_count_key(dest.name))
        stored = int(raw) if raw is not None else 1
        if stored == wanted:
            continue
        held = await held_messages(redis, dest.name, stored)
        if held:
            return (
                f"destination {dest.name}: routes.yaml says shards: {wanted}, but {held} "
                f"key(s) and dead letters are stored under shards: {stored}; set shards "
                f"back to {stored}, or let the destination drain first (deliver, replay "
                "or clear its dead letters, resume its paused conversations)"
            )
        if not record:
            continue
        if wanted == 1:
            await client.delete(shard_count_key(dest.name))
        else:
            await client.set(shard_count_key(dest.name), wanted)
    return None


def claim_loops_problem(
    routes_file: str, destinations: Iterable[Destination], redis_connections: int
) -> str | None:
    """Each shard's claim loop holds a Redis connection while it waits for
    work (BLPOP): why the destinations' loops would fill the pool, with the
    fix, or None (checked at start and at a reload)."""
    loops = sum(d.settings.shards for d in destinations)
    if loops <= redis_connections // 2:
        return None
    return (
        f"{routes_file}: the destinations' {loops} shards each keep a Redis connection "
        f"waiting for work, over half of ROUTER_REDIS_CONNECTIONS={redis_connections}; set "
        f"ROUTER_REDIS_CONNECTIONS to at least {2 * loops}, or use fewer shards"
    )
