"""Items the router answered 200 for but could not route, kept per route.

An ingest format skips a malformed item of a good request (a WhatsApp
message with neither a phone nor a user id) so that the rest of the request
is stored and the service does not redeliver it for days. Answered 200, the
item would be lost if it were only logged: it is kept here, in a list per
route, with the reason, the item as it came, a request carrying only it
(to replay it once the router understands it) and the time. Kept before the
answer, in the request's Redis work: when keeping fails the answer is a 503
and the service redelivers.

Bounded: at most MAX_KEPT per route, the oldest dropped first and counted
(`trimmed`). Kept once per item: the same item in a redelivered request
(same bytes) within the route's dedup_ttl is not kept again.

Listed, replayed and purged by `router unroutable` and the admin API
(/admin/unroutable); counted in `router status` and on the dashboard.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from redis.asyncio import Redis

from router.plugin.formats import SkippedItem
from router.queue.batching import Batcher
from router.queue.keys import RouteKeys, unroutable_routes_key
from router.queue.lanes import remove_entries
from router.queue.scripts import Scripts

# Items kept per route; past it the oldest go first (counted in `trimmed`).
# 10,000 items of at most a request's max_body each: a route keeps at most
# what 10,000 requests could carry, and a burst of broken items from one
# sender still leaves room to see what happened.
MAX_KEPT = 10_000


class UnroutableItem(msgspec.Struct, frozen=True):
    """One kept item, as the list holds it (JSON), and as the admin API
    lists it: the descriptions are the API's."""

    route: str  # the route's path
    reason: Annotated[str, msgspec.Meta(description="e.g. message.from")]  # the metric label
    problem: Annotated[str, msgspec.Meta(description="What is wrong, and where.")]
    item: Annotated[Any, msgspec.Meta(description="The item as the request carried it.")]
    # None: not replayable.
    body: Annotated[
        str | None,
        msgspec.Meta(description="The request with only this item: what a replay reads."),
    ]
    at: Annotated[int, msgspec.Meta(description="When it was kept: Unix time, ms.")]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(UnroutableItem).decode


@dataclass(frozen=True, slots=True)
class RouteCount:
    route: str
    kept: int  # items in the list now
    trimmed: int  # items dropped to keep it within MAX_KEPT, ever


class UnroutableStore:
    """The kept items of one route."""

    def __init__(self, scripts: Scripts, route: str) -> None:
        self.scripts = scripts
        self.redis: Redis = scripts.redis
        self.route = route
        self.keys = RouteKeys(route)

    async def keep(
        self, skipped: list[SkippedItem], ttl: int, batcher: Batcher | None = None
    ) -> int:
        """Keep the skipped items of one request (each once within `ttl`
        seconds); how many were new. Raises on a Redis failure: the request
        must not be answered 200 then. `batcher`: ingest's, whose pipelines
        end with WAIT under ROUTER_REDIS_WAIT (raising when too few replicas
        took the write), as the messages' writes do."""
        if not skipped:
            return 0
        now = int(time.time() * 1000)
        entries: list[bytes] = []
        markers: list[str] = []
        for s in skipped:
            body = s.replay_body.decode() if s.replay_body is not None else None
            entries.append(
                _encode(UnroutableItem(self.route, s.reason, s.problem, s.item, body, now))
            )
            markers.append(self.keys.seen(_identity(s)))
        # Listed first (idempotent): a list that holds items is always found.
        await self.redis.sadd(unroutable_routes_key(), self.route)
        keys = [self.keys.unroutable, self.keys.trimmed, *markers]
        args: list[Any] = [MAX_KEPT, max(1, ttl), *entries]
        if batcher is not None:
            return int(await batcher(keys, args))
        return int(await self.scripts.keep_unroutable(keys=keys, args=args))

    async def items(self, start: int = 0, count: int = 100) -> list[tuple[bytes, UnroutableItem]]:
        """Kept items, oldest first, with each one's exact list element."""
        if count <= 0:
            return []  # (LRANGE 0 -1 would be every item)
        raw = await self.redis.lrange(self.keys.unroutable, start, start + count - 1)
        return [(_raw(r), _decode(r)) for r in raw]

    async def count(self) -> RouteCount:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(self.keys.unroutable)
            pipe.get(self.keys.trimmed)
            kept, trimmed = await pipe.execute()
        return RouteCount(self.route, int(kept), int(trimmed or 0))

    async def remove(self, raw_entries: list[bytes]) -> int:
        """Delete these exact items (what was looked at or replayed)."""
        return await remove_entries(self.redis, self.keys.unroutable, raw_entries)

    async def purge(self, count: int | None = None) -> int:
        """Delete the oldest `count` items, or all (one step, as dead letters are)."""
        if count is None:
            return int(await self.scripts.purge(keys=[self.keys.unroutable]))
        if count <= 0:
            return 0
        return await self.remove([raw for raw, _ in await self.items(0, count)])


async def counts(scripts: Scripts) -> list[RouteCount]:
    """Every route that ever kept an item, by path: what status shows (a
    route removed from routes.yaml included: its items are still there)."""
    routes = sorted(_text(r) for r in await scripts.redis.smembers(unroutable_routes_key()))
    return [await UnroutableStore(scripts, r).count() for r in routes]


def _identity(s: SkippedItem) -> str:
    """The item's identity: its one-item request (or itself), its reason and
    where it was, never the time: a redelivery is the same item. A format
    that gave neither (a plugin's `skip(reason, problem)`) gets a unique
    one: its items are never mistaken for each other, at the cost of a
    redelivery keeping them again."""
    if s.replay_body is not None:
        same = s.replay_body
    elif s.item is not None:
        same = _encode(s.item)
    else:
        return uuid.uuid4().hex
    parts = (s.reason.encode(), s.problem.encode(), same)
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def _raw(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
