"""The one Redis the router and every peer use, and what it says about its load."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[str, str]]:
    """The system Redis on 127.0.0.1:6379 db BENCH_REDIS_DB (default 15) if it
    answers, else an embedded one."""
    import redis

    db = int(os.environ.get("BENCH_REDIS_DB", "15"))
    url = f"redis://127.0.0.1:6379/{db}"
    version = None
    with contextlib.suppress(redis.RedisError, OSError):
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        version = client.info("server")["redis_version"]
        client.close()
    if version is not None:
        yield url, f"system Redis {version} at 127.0.0.1:6379, db {db}"
        return
    from router.redis.embedded import EmbeddedRedis

    # No append-only file: the system Redis used otherwise has none either,
    # and fsync is not what this benchmark measures.
    server = EmbeddedRedis(tmp / "valkey", appendonly=False)
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/{db}"
        client = redis.Redis.from_url(url)
        version = (
            client.info("server").get("valkey_version") or client.info("server")["redis_version"]
        )
        client.close()
        yield url, f"embedded valkey-server {version} (router.redis.embedded), db {db}"
    finally:
        server.stop()


def sibling_url(url: str) -> str:
    """Another database on the same server (BENCH_REDIS_REFERENCE_DB, default
    13: neither the bench's 15 nor the tests' 14), for a reference measured
    beside the main one (bench/growth.py)."""
    db = int(os.environ.get("BENCH_REDIS_REFERENCE_DB", "13"))
    base, _, own = url.rpartition("/")
    if str(db) == own:
        raise SystemExit(
            f"bench: BENCH_REDIS_REFERENCE_DB={db} is the bench's own database: choose another"
        )
    return f"{base}/{db}"


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def info_number(url: str, section: str, name: str) -> int:
    """One number from INFO `section` (server-wide)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info(section)[name])
    finally:
        client.close()


def read_events(url: str) -> int:
    """Redis's INFO stats total_reads_processed: the requests it read off its
    sockets, server-wide. A pipeline of N commands written at once is one
    read (up to Redis's 16 KiB read buffer), so this counts round trips
    where commandstats (round_trips) counts the commands in them."""
    return info_number(url, "stats", "total_reads_processed")


def llen(url: str, key: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(key))
    finally:
        client.close()


# Commands a client sends as one request (a MULTI/EXEC pipeline is one).
_ROUND_TRIPS = ("evalsha", "eval", "exec", "blpop", "script|load", "script")


def command_stats(url: str) -> dict[str, tuple[int, int]]:
    """INFO commandstats: command -> (calls, server microseconds), server-wide."""
    import redis

    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in stats.items()}


def round_trips(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> tuple[int, int]:
    """(round trips, server microseconds) between two command_stats snapshots."""
    calls = usec = 0
    for name in _ROUND_TRIPS:
        c0, u0 = before.get(name, (0, 0))
        c1, u1 = after.get(name, (0, 0))
        calls, usec = calls + c1 - c0, usec + u1 - u0
    return calls, usec
