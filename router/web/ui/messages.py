"""The dashboard's view of the message log (router.queue.message_log): a
message's page (its story at each destination, every attempt), a
destination's recent messages, and the search box, which takes a message
id or a conversation key. What the pages show, not how they are routed
(router.web.ui.handlers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from router.config.durations import age
from router.queue.message_log import Delivery
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from router.queue.stories import stories

RECENT = 20  # messages a destination's page lists, newest first
FOUND_PER_DESTINATION = 20  # messages of one key the search lists per destination
QUERY_CHARS = 500  # of a search: more is no id and no key worth a lookup


def when(ms: Any, now: float) -> dict[str, str] | None:
    """A time (ms since the epoch) for a page: the UTC time, and how long ago."""
    if not isinstance(ms, int | float):
        return None
    at = ms / 1000
    return {
        "iso": datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "ago": age(max(0.0, now - at)),
    }


def story_rows(
    found: dict[str, Delivery], shown: Callable[[str], str], now: float
) -> list[dict[str, Any]]:
    """Each destination's story as the message page shows it; errors and
    answers without the config's secrets (as the admin API shows them)."""
    return [
        {
            "destination": name,
            "state": d.state,
            "key": d.key,
            "seq": d.seq,
            "received": when(d.received_at, now),
            "attempts": [
                {
                    "attempt": a.attempt,
                    "outcome": a.outcome,
                    "status": a.status,
                    "took": None if a.duration_ms is None else age(a.duration_ms / 1000),
                    "started": when(a.started_at, now),
                    "error": None if a.error is None else shown(a.error),
                    "response": None if a.response is None else shown(a.response),
                }
                for a in d.attempts
            ],
        }
        for name, d in found.items()
    ]


async def story_of(
    redis: Redis, scripts: Scripts, message_id: str, layout: Mapping[str, int]
) -> dict[str, Delivery]:
    """The message's story at every destination that has one (none for an
    id too long to be one)."""
    if not message_id or len(message_id) > QUERY_CHARS:
        return {}
    return await stories(redis, scripts, message_id, layout)


async def recent(
    queues: ShardedQueue, key: str | None, failed: bool, now: float, limit: int = RECENT
) -> list[dict[str, Any]]:
    """A destination's logged messages, newest first: of one key, or with a
    failed attempt, when asked."""
    return [
        {
            "id": f.id,
            "key": f.key,
            "state": f.state,
            "received": when(f.received_at, now),
            "attempts": f.attempts,
        }
        for f in await queues.search(key, failed, None, limit)
    ]
