"""A burst of connections against a healthy Redis is stored, every one
(issue 8): the Redis pool waits for a free connection instead of raising
"Too many connections", which answered 503 and blamed Redis."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import redis as redis_sync

from tests.support.bot import Bot
from tests.support.processes import RouterProcess
from tests.support.routes import KEYS, STORE, write_routes
from tests.support.servers import wait_until

BURST = 1000


async def _post_once(port: int, n: int) -> int:
    """One connection, one POST, `Connection: close`: the status it got."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        body = json.dumps({"mensaje": f"m{n}", "wa_id": f"w{n % 50}"}).encode()
        writer.write(
            f"POST {STORE} HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


async def _burst(port: int) -> Counter[int]:
    """BURST connections opened at once, each POSTing once."""
    statuses = await asyncio.wait_for(
        asyncio.gather(*(_post_once(port, n) for n in range(BURST))), timeout=120
    )
    return Counter(statuses)


def test_a_burst_of_1000_connections_is_stored_whole(
    clean_redis: str, tmp_path: Path, bot: Bot
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    process = RouterProcess(
        tmp_path / "router.log",
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        # Far fewer connections than requests: every request past the
        # fourth waits for one (redis-py's default pool raised instead).
        ROUTER_REDIS_CONNECTIONS="4",
        # This test is about the pool waiting, not about speed (that is in
        # bench/): a loaded CI machine must not turn waits into 503s.
        ROUTER_INGEST_DEADLINE="20",
    )
    try:
        process.start()
        statuses = asyncio.run(_burst(process.port))
        assert statuses == Counter({200: BURST}), statuses
        # ... and each of them is delivered (the workers share the pool).
        wait_until(lambda: len(bot.acknowledged()) >= BURST, 60, "all delivered")
        assert sorted(r.body["mensaje"] for r in bot.acknowledged()) == sorted(
            f"m{n}" for n in range(BURST)
        )
        assert "Redis unavailable" not in process.log_text()
    finally:
        process.kill()
    client = redis_sync.Redis.from_url(clean_redis)
    try:
        assert client.exists(KEYS.ready) == 0  # nothing left behind
    finally:
        client.close()
