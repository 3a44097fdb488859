"""Stopping while the reply of an ack that handed the slot on is on its way
(router.delivery.worker's stop(), ack.lua's hand-on)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from router.config.loading import load
from router.delivery.workers import running_workers
from router.queue.keys import DestinationKeys
from router.queue.scripts import Scripts
from tests.support.bot import Answer, Bot
from tests.support.messages import enqueue_json
from tests.support.routes import KEYS, write_routes
from tests.support.tcp_proxy import TcpProxy


class SlowReplies(TcpProxy):
    """Redis's replies reach the client `delay` seconds late (a slow
    network); what the client sends goes through at once."""

    delay = 0.0

    async def _pump(self, reader: Any, writer: Any, outbound: bool = False) -> None:
        if outbound:
            return await super()._pump(reader, writer, outbound)
        try:
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.transport.abort()


async def test_stop_while_a_hand_on_s_reply_is_on_its_way_leaves_nothing_leased(
    clean_redis: str, redis: Redis, bot: Bot, tmp_path: Path
) -> None:
    """One slot; a-0's ack ran and handed the slot on to b, its reply still
    on the way when stop() cancels the task (grace 0). stop() releases the
    claim the slot held (a's: fenced, a no-op), so b stays leased to nobody
    until its lease runs out."""
    parts = urlsplit(clean_redis)
    with SlowReplies(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        url = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        client = AsyncRedis.from_url(url)
        scripts = Scripts(client)
        for key in ("a", "b"):
            await enqueue_json(
                scripts, DestinationKeys("chatbot"), key, {"mensaje": f"{key}-0", "wa_id": key}
            )

        def decide(message: dict[str, Any], n: int) -> Answer:
            # From a-0's answer on, every reply is late: long enough that stop()
            # comes first even on a loaded machine.
            proxy.delay = 2.0
            return Answer()

        bot.decide = decide
        routes = write_routes(tmp_path / "routes.yaml", bot.url, max_in_flight=1, lease="30s")
        dest = load(str(routes)).destinations["chatbot"]
        try:
            async with running_workers(client, [dest], grace=0):
                deadline = time.monotonic() + 10
                while not bot.received:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
                while redis.llen(KEYS.lane("a")):  # until a-0's ack ran
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
                # (its reply still on its way: stop now)
            assert [r.body["mensaje"] for r in bot.received] == ["a-0"]
            assert redis.zrange(KEYS.leases, 0, -1) == [], redis.hgetall(KEYS.owner)
            assert redis.lrange(KEYS.ready, 0, -1) == [b"b"]
        finally:
            await client.aclose()
