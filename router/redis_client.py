"""The Redis client the router uses, with bounded waits.

Timeouts are short so that ingest answers 503 quickly when Redis is away
instead of hanging. The client never retries a command by itself: a script
whose reply was lost may have run, and running enqueue or claim twice would
store a message twice or lease keys nobody works on. The callers decide:
ingest answers 503 (the sender retries, deduplicated by Idempotency-Key),
workers repeat only idempotent steps (ack, fail, renew, release are fenced).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# Must stay above the longest BLPOP the workers issue (worker.MAX_IDLE).
SOCKET_TIMEOUT = 3.0
CONNECT_TIMEOUT = 1.0


def connect(url: str) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
        client_name="router",
    )
