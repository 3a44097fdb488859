"""A destination's queue as the router leaves it, built with the router's own
scripts: messages enqueued, some given up (dead letters) or blocked by a
failed attempt, the name in the registry (router.queue.orphans). Removed from
routes.yaml, such a destination is an orphan. And one shard's queue for the
tests that drive the lane scripts directly (destination_queue, store, body),
and a destination's queues acted on from a synchronous test (on_queue,
story: what the CLI and the admin API read)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis as AsyncRedis

from router.queue import envelope, message_log, orphans
from router.queue.keys import DestinationKeys
from router.queue.lanes import DestinationQueue, Outcome
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from router.redis import mode as redis_mode
from tests.support.messages import enqueue_json

ERROR = "HTTP 500 from http://127.0.0.1:9/bot: the bot was down for this one"


def build_queue(
    url: str,
    name: str,
    *,
    dead: dict[str, list[str]] | None = None,
    queued: dict[str, list[str]] | None = None,
    blocked: dict[str, list[str]] | None = None,
) -> dict[str, str]:
    """Destination `name`'s queue in the Redis at `url`: per ordering key,
    `dead` messages given up one after the other, then `blocked` ones (the
    first blocks its key), then `queued` ones; each message's body is
    {"mensaje": text, "wa_id": key}. Returns text -> message id."""
    return asyncio.run(_build(url, name, dead or {}, queued or {}, blocked or {}))


async def _build(
    url: str,
    name: str,
    dead: dict[str, list[str]],
    queued: dict[str, list[str]],
    blocked: dict[str, list[str]],
) -> dict[str, str]:
    client: Any = await redis_mode.open_client(url)  # a Cluster's client on a Cluster
    try:
        scripts = Scripts(client)
        await orphans.record(client, [name])
        queue = DestinationQueue(client, scripts, name)
        ids: dict[str, str] = {}

        async def store(key: str, text: str) -> None:
            ids[text] = await enqueue_json(
                scripts, DestinationKeys(name), key, {"mensaje": text, "wa_id": key}
            )

        async def give_up(outcome: Outcome) -> None:
            [claim] = (await queue.claim("t", 1, 30_000, 100)).claims
            await queue.fail(claim, 0, ERROR, outcome)

        for key, texts in dead.items():
            for text in texts:
                await store(key, text)
                await give_up(Outcome.DEAD_LETTER)
        for key, texts in blocked.items():
            for text in texts:
                await store(key, text)
            await give_up(Outcome.BLOCK)
        for key, texts in queued.items():
            for text in texts:
                await store(key, text)
        return ids
    finally:
        await client.aclose()


def lane(client: Any, keys: DestinationKeys, key: str) -> list[str]:
    """The `mensaje` of each message in a lane, head first."""
    out = []
    for raw in client.lrange(keys.lane(key), 0, -1):
        body = json.loads(bytes(envelope.decode(raw).body))  # an entry: <n>:<envelope>
        out.append(body["mensaje"])
    return out


@contextlib.asynccontextmanager
async def destination_queue(redis_url: str, destination: str) -> AsyncIterator[DestinationQueue]:
    """One shard's queue on a client opened for it and closed after."""
    client = AsyncRedis.from_url(redis_url)
    try:
        yield DestinationQueue(client, Scripts(client), destination)
    finally:
        await client.aclose()


async def store(queue: DestinationQueue, key: str, *names: str) -> None:
    """Each of `names` (a JSON string) stored at the end of `key`'s lane."""
    for name in names:
        await enqueue_json(queue.scripts, queue.keys, key, name)


def body(raw: bytes) -> str:
    """The message (a JSON string) of a lane entry."""
    return str(json.loads(bytes(envelope.decode(raw).body)))


def on_queue(redis_url: str, act: Any, shards: int = 1, destination: str = "chatbot") -> Any:
    """`await act(queue)` on a destination's queues (ShardedQueue), on a
    client opened for it and closed after."""

    async def run() -> Any:
        client = AsyncRedis.from_url(redis_url)
        try:
            return await act(ShardedQueue(client, Scripts(client), destination, shards))
        finally:
            await client.aclose()

    return asyncio.run(run())


def story(redis_url: str, message_id: str, shards: int = 1) -> message_log.Delivery | None:
    """The message's story at the chatbot destination (the message log)."""
    result: message_log.Delivery | None = on_queue(
        redis_url, lambda queue: queue.story(message_id), shards
    )
    return result
