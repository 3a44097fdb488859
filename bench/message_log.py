"""Memory of the message log: Redis bytes per story kept, measured with
`MEMORY USAGE` (every element counted: SAMPLES 0) on the log's two keys of
one destination shard, through the router's own scripts.

Stores N messages over 1,000 conversations (the enqueue script, as ingest
does), reads the size (a record per message, state waiting), then
delivers each (claim and ack with the entry a worker writes for an HTTP 200
`{"status":"ok"}` answer) and reads it again, then a story with three
failed attempts whose answers are 200 bytes each and a final ok.

    .venv/bin/python bench/message_log.py [N]      # default 10,000; Redis db 15
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from redis.asyncio import Redis

from router.config import MessageLogSettings
from router.queue import envelope, message_log
from router.queue.enqueue import Target, enqueue
from router.queue.keys import DestinationKeys
from router.queue.lanes import DestinationQueue, Outcome
from router.queue.scripts import Scripts

KEYS = 1_000
DESTINATION = "memory-bench"


async def size(redis: Redis, keys: DestinationKeys) -> int:
    total = 0
    for key in (keys.log, keys.logged):
        total += int(await redis.memory_usage(key, samples=0) or 0)
    return total


async def store(scripts: Scripts, keys: DestinationKeys, n: int, policy: str) -> list[str]:
    ids = []
    for i in range(n):
        wa_id = str(i % KEYS)
        body = f'{{"mensaje":"Hola! mensaje {i}","wa_id":"{wa_id}"}}'.encode()
        now = int(time.time() * 1000)
        mid = envelope.new_message_id(now)
        await enqueue(
            scripts, [Target(keys, wa_id, policy)], envelope.encode(mid, now, body), mid, None, 60
        )
        ids.append(mid)
    return ids


async def deliver_all(queue: DestinationQueue, failures: int = 0, answer: bytes = b"") -> None:
    """Claim every key and ack its messages, each after `failures` failed
    attempts answered with `answer`."""
    log = MessageLogSettings()
    while True:
        result = await queue.claim("bench", 1000, 30_000, 10_000)
        if not result.claims:
            return
        for claim in result.claims:
            head: bytes | None = claim.head
            while head is not None:
                env = envelope.decode(head)
                for attempt in range(1, failures + 1):
                    entry = message_log.entry(
                        attempt,
                        "failed",
                        started_at_ms=int(time.time() * 1000),
                        duration_ms=12.3,
                        status=503,
                        error="HTTP 503: " + answer[:200].decode(),
                        response=answer,
                        response_bytes=log.response_bytes,
                    )
                    await queue.fail(
                        claim, 0, "HTTP 503", Outcome.RETRY, message_id=env.id, logged=entry
                    )
                    again = await queue.claim("bench", 1, 30_000, 10_000)
                    claim = next(c for c in again.claims if c.key == claim.key)
                entry = message_log.entry(
                    failures + 1,
                    "ok",
                    started_at_ms=int(time.time() * 1000),
                    duration_ms=4.2,
                    status=200,
                    response=b'{"status":"ok"}',
                    response_bytes=log.response_bytes,
                )
                acked = await queue.ack(claim, head, 30_000, True, env.id, entry)
                head = acked.next_head


async def main(n: int) -> None:
    db = int(os.environ.get("BENCH_REDIS_DB", "15"))
    redis = Redis.from_url(f"redis://127.0.0.1:6379/{db}")
    try:
        await redis.flushdb()
        scripts = Scripts(redis)
        keys = DestinationKeys(DESTINATION)
        settings = MessageLogSettings(max_messages=10 * n)
        queue = DestinationQueue(redis, scripts, DESTINATION, log=settings)
        policy = message_log.policy(settings, 0, 1)
        await store(scripts, keys, n, policy)
        waiting = await size(redis, keys)
        await deliver_all(queue)
        delivered = await size(redis, keys)
        await redis.flushdb()
        m = n // 10
        await store(scripts, keys, m, policy)
        await deliver_all(queue, failures=3, answer=b'{"error":"' + b"x" * 186 + b'"}')
        retried = await size(redis, keys)
        print(f"{n:,} messages over {KEYS:,} conversations, Redis bytes per story (MEMORY USAGE):")
        print(f"  stored, no attempt yet:            {waiting / n:6.0f} B")
        print(
            f"  delivered at the first attempt:    {delivered / n:6.0f} B"
            f"  (the attempt's entry: {(delivered - waiting) / n:.0f} B)"
        )
        print(f"  3 failed attempts (200 B answers), then ok: {retried / m:6.0f} B")
        default = MessageLogSettings().max_messages
        print(
            f"  so {default:,} delivered stories (the default max_messages) "
            f"take about {delivered / n * default / 1e6:.1f} MB per destination"
        )
    finally:
        await redis.flushdb()
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
