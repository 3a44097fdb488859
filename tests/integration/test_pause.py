"""Pause and resume a destination: while paused ingest goes on storing,
nothing new is attempted and attempts in flight finish; kept in Redis, so
every process (and the CLI) agrees; resumed, what waited goes out in order."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis as redis_sync

from router.queue.keys import all_shards
from tests.support.bot import Bot
from tests.support.processes import run_cli
from tests.support.routes import STORE, write_routes
from tests.support.servers import serve, wait_until

AUTH = {"Authorization": "Bearer admin-secret"}


def test_a_paused_destination_stores_and_attempts_nothing_until_resumed(
    clean_redis: str, bot: Bot, tmp_path: Path
) -> None:
    bot.latency = (0.4, 0.4)
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    with serve(clean_redis, routes, run_workers=True, admin_token="admin-secret") as server:

        def post(mensaje: str, key: str) -> None:
            r = httpx.post(server.url + STORE, json={"mensaje": mensaje, "wa_id": key})
            assert r.status_code == 200, r.text

        post("a0", "k1")
        wait_until(lambda: len(bot.received) == 1, what="a0 in flight")
        paused = httpx.post(server.url + "/admin/destinations/chatbot/pause", headers=AUTH)
        assert paused.json() == {"status": "ok", "paused": True}
        post("a1", "k1")  # same key: would follow a0 at once if not paused
        post("b0", "k2")
        wait_until(lambda: bot.acked_messages() == ["a0"], what="a0 (in flight) to finish")
        time.sleep(1.5)  # workers wake at least once a second: still nothing
        assert [r.body["mensaje"] for r in bot.received] == ["a0"]
        status = httpx.get(server.url + "/admin/destinations", headers=AUTH).json()
        assert status["chatbot"]["paused"] is True
        assert status["chatbot"]["ready"] == 2  # stored, waiting
        resumed = httpx.post(server.url + "/admin/destinations/chatbot/resume", headers=AUTH)
        assert resumed.json() == {"status": "ok", "paused": False}
        wait_until(lambda: len(bot.acknowledged()) == 3, what="the rest after resume")
        assert bot.acked_messages("k1") == ["a0", "a1"]
        assert bot.acked_messages("k2") == ["b0"]
        status = httpx.get(server.url + "/admin/destinations", headers=AUTH).json()
        assert status["chatbot"]["paused"] is False


def test_router_pause_and_resume_from_the_command_line(clean_redis: str, tmp_path: Path) -> None:
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot", shards=3)
    client = redis_sync.Redis.from_url(clean_redis)
    flags = [k.paused for k in all_shards("chatbot", 3)]
    try:
        done = run_cli("--routes", str(routes), "pause", "chatbot", REDIS_URL=clean_redis)
        assert done.returncode == 0, done.stderr
        assert "chatbot paused" in done.stdout
        assert client.exists(*flags) == 3  # every shard
        done = run_cli("--routes", str(routes), "resume", "chatbot", REDIS_URL=clean_redis)
        assert done.returncode == 0 and "chatbot resumed" in done.stdout, done.stderr
        assert client.exists(*flags) == 0
        unknown = run_cli("--routes", str(routes), "pause", "nope", REDIS_URL=clean_redis)
        assert unknown.returncode == 2
        assert unknown.stderr.strip() == (
            "router pause: no destination named 'nope'; defined: chatbot"
        )
    finally:
        client.close()
