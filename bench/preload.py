"""Messages stored for a delivery run, the way ingest stores them: used by
every part of the bench that drains a queue (bench/delivery.py,
bench/paired.py, bench/growth.py, ...)."""

from __future__ import annotations

import asyncio
import time

from procs import DESTINATION


async def _preload(url: str, n: int, keys: int, shards: int, log: bool) -> None:
    """Store N messages over `keys` wa_ids the way ingest does (the enqueue
    script through router.queue.batching, each wa_id in its shard, with the
    default message log unless `log` is False), in order:
    calls made in order are stored in order, and a million take seconds
    rather than minutes. On a Redis Cluster node, through the cluster client
    the router itself opens (router.redis.mode)."""
    from router.config import MessageLogSettings
    from router.queue import envelope
    from router.queue.batching import batcher as make_batcher
    from router.queue.enqueue import Target, enqueue
    from router.queue.keys import all_shards, shard_of
    from router.queue.message_log import policy
    from router.queue.scripts import Scripts
    from router.redis import mode as redis_mode

    redis = await redis_mode.open_client(url)
    try:
        scripts = Scripts(redis)
        batcher = make_batcher(redis, scripts.enqueue)
        dests = all_shards(DESTINATION, shards)

        async def one(i: int) -> None:
            wa_id = str(i % keys)
            body = f'{{"mensaje":"m{i}","wa_id":"{wa_id}"}}'.encode()
            now_ms = int(time.time() * 1000)
            mid = envelope.new_message_id(now_ms)
            raw = envelope.encode(mid, now_ms, body)
            shard = shard_of(wa_id, shards)
            logged = policy(MessageLogSettings() if log else None, shard, shards)
            target = Target(dests[shard], wa_id, logged)
            await enqueue(scripts, [target], raw, mid, None, 60, batcher)

        step = 2_000
        for start in range(0, n, step):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + step))))
    finally:
        await redis.aclose()


def preload(url: str, n: int, keys: int, shards: int = 1, log: bool = True) -> None:
    asyncio.run(_preload(url, n, keys, shards, log))
