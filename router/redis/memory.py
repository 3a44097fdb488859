"""What the Redis server's memory settings mean for the queue.

A Redis that evicts keys when full (`maxmemory-policy allkeys-*`) drops
queued messages and scheduling entries silently: the router refuses to run on
one unless the operator accepts the risk (ROUTER_ALLOW_EVICTION=1). The
`volatile-*` policies evict only keys with a TTL, which here are the dedup
markers and rate-limit counters: a warning. A Redis at `maxmemory` with
`noeviction` refuses every write: reported as "out of memory", not as
"unavailable". Read from `INFO memory`, which managed services allow where
they forbid CONFIG GET.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from router.redis.client import server_infos

FIX = "set `maxmemory-policy noeviction` on the Redis server"


@dataclass(frozen=True, slots=True)
class MemoryState:
    policy: str  # maxmemory-policy, "" when the server does not say
    used: int  # bytes counted against maxmemory
    limit: int  # maxmemory in bytes; 0: no limit

    @property
    def evicts_any_key(self) -> bool:
        return self.policy.startswith("allkeys-")

    @property
    def full(self) -> bool:
        """Writes are refused: at the limit with nothing it may evict."""
        return self.limit > 0 and self.used >= self.limit and not self.evicts_any_key


async def read(redis: Redis) -> MemoryState | None:
    """The server's memory state; None when INFO is not allowed. On a
    Cluster, the state of the master that matters most: one that evicts,
    else one that is full, else any (each master holds some queues)."""
    try:
        states = [_state(info) for info in await server_infos(redis, "memory")]
    except ResponseError:
        return None
    return min(states, key=lambda m: (not m.evicts_any_key, not m.full))


def _state(info: dict[str, Any]) -> MemoryState:
    used = int(info.get("used_memory", 0)) - int(info.get("mem_not_counted_for_evict", 0))
    return MemoryState(str(info.get("maxmemory_policy", "")), used, int(info.get("maxmemory", 0)))


def refusal(state: MemoryState, allow_eviction: bool) -> str | None:
    """Why the router must not run on this server, or None."""
    if state.evicts_any_key and not allow_eviction:
        return (
            f"Redis maxmemory-policy is {state.policy}: when memory runs out it evicts "
            f"queued messages without a trace; {FIX} "
            "(or set ROUTER_ALLOW_EVICTION=1 to accept losing messages)"
        )
    return None


def warning(state: MemoryState, allow_eviction: bool) -> str | None:
    """A risk worth one log line at start, or None."""
    if state.evicts_any_key and allow_eviction:
        return (
            f"Redis maxmemory-policy is {state.policy}: queued messages can be evicted "
            "when memory runs out (accepted by ROUTER_ALLOW_EVICTION=1)"
        )
    if state.policy.startswith("volatile-"):
        return (
            f"Redis maxmemory-policy is {state.policy}: when memory runs out it evicts "
            "dedup markers, so a retried POST may be stored twice; noeviction is safer"
        )
    return None


def out_of_memory(state: MemoryState) -> str:
    return (
        f"Redis is out of memory (used {state.used} of maxmemory {state.limit} bytes, "
        f"policy {state.policy}): nothing can be stored until memory is freed or "
        "maxmemory raised"
    )
