"""What every destination's queue holds now: for `router status`, the
dashboard, the admin API and the Prometheus gauges.

Each figure is an O(1) read (the scripts keep the counts: router.queue.lanes
DestinationQueue.figures), and a StatusReader reads Redis at most once a second however
often it is asked, so scrapes and dashboards cost Redis nothing that grows
with the queue or the number of viewers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.config import Destination
from router.queue import orphans
from router.queue.inspection import QueueFigures
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue

log = logging.getLogger("router.status")

# How old a reading may be before it is read again.
MAX_AGE = 1.0


HEALTH_CODES = {"up": 0, "down": 1, "held": 2}


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    name: str
    messages: int  # stored, not yet acknowledged (in flight, waiting and blocked included)
    ready: int  # keys whose head message can be attempted now
    in_flight: int  # keys being attempted now
    delayed: int  # keys waiting out a backoff
    blocked: int  # keys stopped by on_exhausted: block
    dead: int  # dead letters
    oldest_age_seconds: float | None  # age of the oldest unacknowledged message
    delivered_total: int  # messages acknowledged so far (monotonic: rates are its change)
    paused: bool
    orphaned: bool  # no longer in routes.yaml but still holding messages
    read_at: float  # time.time() of the reading
    # The circuit breaker (docs/destination-health.md): "up", "down" (since
    # down_since_ms) or "held" by a Retry-After (until held_until_ms).
    health: str = "up"
    down_since_ms: int | None = None
    held_until_ms: int | None = None
    paused_keys: int = 0  # conversations paused by an operator (`router pause DEST KEY`)

    @property
    def health_code(self) -> int:
        """`router_destination_state`: 0 up, 1 down, 2 held."""
        return HEALTH_CODES[self.health]

    @classmethod
    def of(cls, name: str, figures: QueueFigures, orphaned: bool = False) -> DestinationStatus:
        now = time.time()
        return cls(
            name=name,
            messages=figures.messages,
            ready=figures.ready,
            in_flight=figures.in_flight,
            delayed=figures.delayed,
            blocked=figures.blocked,
            dead=figures.dead,
            oldest_age_seconds=figures.oldest_age(int(now * 1000)),
            delivered_total=figures.acked,
            paused=figures.paused,
            orphaned=orphaned,
            read_at=now,
            health=figures.health,
            down_since_ms=figures.down_since_ms,
            held_until_ms=figures.held_until_ms if figures.health == "held" else None,
            paused_keys=figures.paused_keys,
        )


def rate(before: DestinationStatus, after: DestinationStatus) -> float | None:
    """Messages acknowledged per second between two readings."""
    seconds = after.read_at - before.read_at
    if seconds <= 0:
        return None
    return max(0, after.delivered_total - before.delivered_total) / seconds


# Destination name -> its shard count: what finding a queue takes.
Layout = dict[str, int]


def layout_of(destinations: Iterable[Destination]) -> Layout:
    return {d.name: d.settings.shards for d in destinations}


async def read_status(
    redis: Redis, scripts: Scripts, layout: Layout, configured: Collection[str] | None = None
) -> list[DestinationStatus]:
    """Every destination's status, in the order given; with `configured`
    (every destination routes.yaml names), then the orphaned ones
    (router.queue.orphans: known, not configured, still holding messages)."""
    out = []
    for name, shards in layout.items():
        figures = await ShardedQueue(redis, scripts, name, shards).figures()
        out.append(DestinationStatus.of(name, figures))
    for name in (
        [] if configured is None else await orphans.orphaned_destinations(redis, configured)
    ):
        shards = await orphans.stored_shards(redis, name)
        figures = await ShardedQueue(redis, scripts, name, shards).figures()
        out.append(DestinationStatus.of(name, figures, orphaned=True))
    return out


class StatusReader:
    """Status of the configured destinations, read from Redis at most once
    per `max_age` seconds; callers at the same moment share one read."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        layout: Callable[[], Layout],
        max_age: float = MAX_AGE,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._layout = layout  # a callable: the config may be reloaded
        self._max_age = max_age
        self._lock = asyncio.Lock()
        self._reading: list[DestinationStatus] | None = None
        self._read_at = 0.0

    async def read(self) -> list[DestinationStatus]:
        async with self._lock:
            now = time.monotonic()
            if self._reading is None or now - self._read_at >= self._max_age:
                layout = self._layout()
                self._reading = await read_status(self._redis, self._scripts, layout, layout)
                self._read_at = time.monotonic()
            return self._reading

    async def read_or_none(self, deadline: float) -> list[DestinationStatus] | None:
        """The reading, or None when Redis does not answer within `deadline`
        seconds (a scrape still answers: counters, and router_redis_up 0)."""
        try:
            async with asyncio.timeout(deadline):
                return await self.read()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("queue status not read from Redis: %s", exc or "timeout")
            return None
