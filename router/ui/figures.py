"""The figures the dashboard shows: per destination, what `router status`
prints.

TEMPORARY ADAPTER. `router/status.py` (`DestinationStatus`, `StatusReader`
on `RouterState.status`, and `DestinationQueues.purge_dead`) is being
written on main. Until it lands, this module stands in for it with the same
interface, built on `DestinationQueues.stats()`: `delivered_total` is 0
(nothing counts acknowledgements yet, so the rate reads 0), orphaned
destinations are not found, and `oldest_age_seconds` reads every lane's
head. Once main has router/status.py, `status_reader` returns
`state.status`, and this file shrinks to that function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from router import envelope
from router.queue import DestinationQueues
from router.state import RouterState


@dataclass(frozen=True)
class DestinationStatus:
    """The contract of router.status.DestinationStatus (see the module doc)."""

    name: str
    messages: int  # stored, not yet acknowledged (in flight, delayed and blocked included)
    ready: int  # keys whose head message can be attempted now
    in_flight: int  # keys being attempted now
    delayed: int  # keys waiting out a backoff
    blocked: int  # keys stopped by on_exhausted: block
    dead: int  # dead letters
    oldest_age_seconds: float | None  # age of the oldest unacknowledged message
    delivered_total: int  # messages acknowledged so far (monotonic)
    paused: bool
    orphaned: bool  # no longer in routes.yaml but still holding messages


class StatusSource(Protocol):
    async def read(self) -> list[DestinationStatus]: ...


class _StatsAdapter:
    """router.status.StatusReader's interface over DestinationQueues.stats()."""

    MIN_INTERVAL = 1.0  # Redis is read at most once a second, however often called

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self._last: tuple[float, list[DestinationStatus]] | None = None

    async def read(self) -> list[DestinationStatus]:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.MIN_INTERVAL:
            return self._last[1]
        redis, scripts = self.state.require_redis()
        client: Any = redis
        out = []
        for destination in self.state.config.destinations.values():
            queues = DestinationQueues.of(redis, scripts, destination)
            stats = await queues.stats()
            messages = 0
            oldest: int | None = None
            for shard in queues.shards:
                async for lane in client.scan_iter(match=shard.keys.lane_prefix + "*", count=500):
                    messages += int(await client.llen(lane))
                    head = await client.lindex(lane, 0)
                    if head is not None:
                        ts = envelope.decode(head).ts
                        oldest = ts if oldest is None else min(oldest, ts)
            out.append(
                DestinationStatus(
                    name=destination.name,
                    messages=messages,
                    ready=stats["ready"],
                    in_flight=stats["in_flight"],
                    delayed=stats["delayed"],
                    blocked=len(await queues.blocked_keys()),
                    dead=stats["dead"],
                    oldest_age_seconds=None
                    if oldest is None
                    else max(0.0, time.time() - oldest / 1000),
                    delivered_total=0,
                    paused=bool(stats["paused"]),
                    orphaned=False,
                )
            )
        self._last = (time.monotonic(), out)
        return out


def status_reader(state: RouterState) -> StatusSource:
    """The app's status reader: state.status once router/status.py lands
    (looked up at each read: the app may set it in its lifespan)."""
    adapter = _StatsAdapter(state)

    class Reader:
        async def read(self) -> list[DestinationStatus]:
            real: StatusSource | None = getattr(state, "status", None)
            return await (real or adapter).read()

    return Reader()


async def purge_dead(queues: DestinationQueues, count: int | None) -> int:
    """DestinationQueues.purge_dead until it lands on main: drop the oldest
    `count` dead letters (all when None)."""
    real = getattr(queues, "purge_dead", None)
    if real is not None:
        return int(await real(count))
    purged = 0
    if count is None:
        for shard in queues.shards:
            client: Any = shard.redis
            # Only what is there now: a letter dead-lettered meanwhile (pushed
            # at the tail) was not seen by whoever asked, and stays.
            n = int(await client.llen(shard.keys.dead))
            await client.ltrim(shard.keys.dead, n, -1)
            purged += n
        return purged
    # The oldest `count` over all shards (as replay_oldest picks them).
    for queue, raw, _ in await queues._dead(count):
        purged += int(await queue.redis.lrem(queue.keys.dead, 1, raw))
    return purged
