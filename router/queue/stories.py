"""A message's story at every destination (router.queue.message_log): what
`router trace`, `GET /admin/messages/{id}` and the dashboard's message page
show. An id does not say where its message went, so every destination of
routes.yaml is asked, and every one a process was once configured with
(router.queue.orphans: a story outlives its destination's removal)."""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from router.queue import orphans
from router.queue.message_log import Delivery
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue


async def stories(
    redis: Redis, scripts: Scripts, message_id: str, configured: Mapping[str, int]
) -> dict[str, Delivery]:
    """Destination name -> the message's story there, for each destination
    that has one: those of `configured` (name -> shards) in its order, then
    the others ever configured, by name. Empty: no destination knows it."""
    layout = dict(configured)
    for name in sorted(await orphans.known_destinations(redis) - set(configured)):
        layout[name] = await orphans.stored_shards(redis, name)
    found = {}
    for name, shards in layout.items():
        story = await ShardedQueue(redis, scripts, name, shards).story(message_id)
        if story is not None:
            found[name] = story
    return found
