"""The Redis client the router uses, with bounded waits.

Timeouts are short so that ingest answers 503 quickly when Redis is away
instead of hanging, and a command is retried once after a broken pooled
connection (the common case right after Redis restarts).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

# Must stay above the longest BLPOP the workers issue (worker.MAX_IDLE).
SOCKET_TIMEOUT = 3.0
CONNECT_TIMEOUT = 1.0


def connect(url: str) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        health_check_interval=30,
        client_name="router",
    )
