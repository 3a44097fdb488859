"""SIGHUP to real router processes reloads routes.yaml and ends none of them:
`router serve` (one process, and ROUTER_PROCESSES=2 under uvicorn's
supervisor) and `router worker`. The file watch is off here
(ROUTER_ROUTES_POLL=0), so only the signal can have reloaded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from router.queue.keys import DestinationKeys
from router.queue.scripts import Scripts
from tests.support.bot import Bot
from tests.support.messages import enqueue_json
from tests.support.processes import RouterProcess
from tests.support.routes import STORE, write_routes
from tests.support.servers import wait_until

NEW = "/v2/new"


@pytest.fixture()
def processes() -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for p in started:
        p.kill()


def _with_new_route(path: Path, bot_url: str) -> None:
    """The same routes file plus a route NEW to the same destination,
    replacing the file at once (a new file renamed over it)."""
    new = write_routes(path.with_name("new.yaml"), bot_url)
    config = json.loads(new.read_text())
    config["routes"].append({**config["routes"][0], "path": NEW})
    new.write_text(json.dumps(config, indent=2))
    os.replace(new, path)


def _watching(p: RouterProcess, count: int = 1) -> None:
    """Wait until `count` processes have looked at the routes file once
    (the first look comes right at start): from then on only a change or
    a SIGHUP reloads."""
    wait_until(lambda: len(_lines(p, "is reloaded on SIGHUP")) >= count, what="the watch to start")


def _lines(p: RouterProcess, words: str) -> list[str]:
    return [line for line in p.log_text().splitlines() if words in line]


@pytest.mark.parametrize("processes_count", [1, 2])
def test_sighup_reloads_router_serve_and_does_not_kill_it(
    clean_redis: str,
    bot: Bot,
    tmp_path: Path,
    processes: list[RouterProcess],
    processes_count: int,
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    p = RouterProcess(
        tmp_path / "serve.log",
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        ROUTER_ROUTES_POLL="0",
        ROUTER_PROCESSES=str(processes_count),
        own_group=True,  # kill() takes uvicorn's server processes along
    )
    processes.append(p)
    p.start()
    _watching(p, processes_count)  # ready is one of them answering: wait for all
    assert httpx.post(p.url + NEW, json={"mensaje": "a", "wa_id": "k"}).status_code == 404

    _with_new_route(routes, bot.url)
    p.signal(signal.SIGHUP)
    wait_until(
        lambda: len(_lines(p, "SIGHUP: reloaded")) == processes_count,
        timeout=30,
        what="every server process to reload",
    )
    assert p.alive()
    # Every server process serves the new route (each answers some of these).
    for i in range(10):
        r = httpx.post(p.url + NEW, json={"mensaje": f"new-{i}", "wa_id": "k"})
        assert r.status_code == 200, r.text
    wait_until(lambda: len(bot.acked_messages("k")) == 10, what="deliveries")
    assert bot.acked_messages("k") == [f"new-{i}" for i in range(10)]
    if processes_count > 1:
        assert _lines(p, f"asking the {processes_count} server processes to reload")
        assert not _lines(p, "restarting processes")  # uvicorn's own SIGHUP answer

    # An invalid file: one line, the process lives on with what it had.
    routes.write_text("routes: [\n")
    p.signal(signal.SIGHUP)
    wait_until(
        lambda: len(_lines(p, "config error:")) == processes_count,
        timeout=30,
        what="the error line",
    )
    [line, *_] = _lines(p, "config error:")
    assert "YAML syntax error" in line and "the running config is kept" in line
    assert p.alive()
    assert httpx.post(p.url + NEW, json={"mensaje": "after", "wa_id": "k"}).status_code == 200
    wait_until(lambda: "after" in bot.acked_messages("k"), what="delivery on the kept config")

    code, _ = p.terminate()
    assert code == 0, p.log_tail()


def test_sighup_reloads_router_worker(
    clean_redis: str, bot: Bot, tmp_path: Path, processes: list[RouterProcess]
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot")  # nobody there
    p = RouterProcess(
        tmp_path / "worker.log",
        command="worker",
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        ROUTER_ROUTES_POLL="0",
    )
    processes.append(p)
    p.start(wait=False)
    _watching(p)

    async def store() -> None:
        redis = AsyncRedis.from_url(clean_redis)
        try:
            await enqueue_json(Scripts(redis), DestinationKeys("chatbot"), "k", {"mensaje": "m"})
        finally:
            await redis.aclose()

    asyncio.run(store())
    wait_until(lambda: bool(_lines(p, "attempt 1 failed")), what="a failed attempt")
    write_routes(routes, bot.url)
    p.signal(signal.SIGHUP)
    wait_until(lambda: bot.acked_messages() == ["m"], timeout=30, what="delivery to the new url")
    assert p.alive()
    assert _lines(p, "SIGHUP: reloaded")
    code, _ = p.terminate()
    assert code == 0, p.log_tail()


def test_the_routes_file_changes_are_seen_by_a_real_process(
    clean_redis: str, bot: Bot, tmp_path: Path, processes: list[RouterProcess]
) -> None:
    """The watch, on its default interval, with nobody signalling."""
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    p = RouterProcess(tmp_path / "serve.log", REDIS_URL=clean_redis, ROUTES_FILE=str(routes))
    processes.append(p)
    p.start()
    _with_new_route(routes, bot.url)
    wait_until(
        lambda: httpx.post(p.url + NEW, json={"mensaje": "n", "wa_id": "k"}).status_code == 200,
        timeout=30,
        what="the new route",
    )
    assert _lines(p, "file changed: reloaded")
    wait_until(lambda: bot.acked_messages() == ["n"], what="delivery")
    assert httpx.post(p.url + STORE, json={"mensaje": "o", "wa_id": "k"}).status_code == 200
