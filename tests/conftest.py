"""Fixtures: a real Redis-compatible server, a real bot, the real router.

Without REDIS_URL the session starts the embedded valkey-server (the same
binary `router serve` uses) on a free port. With REDIS_URL set, the suite
runs against that server instead (e.g. the machine's Redis 7); its selected
database is flushed before every test, so point it at a scratch database.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from router.app import create_app
from router.embedded import EmbeddedRedis
from router.loading import load
from router.settings import Settings
from tests.support import Bot, ServerThread, write_routes


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"), appendfsync="everysec")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture()
def clean_redis(redis_url: str) -> str:
    """The server's database, emptied for this test."""
    client = redis_sync.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


@pytest.fixture()
def redis(clean_redis: str) -> Iterator[redis_sync.Redis]:
    """A plain client to look at what the router stored."""
    client = redis_sync.Redis.from_url(clean_redis)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture()
def bot() -> Iterator[Bot]:
    b = Bot()
    b.server = ServerThread(b).start()
    try:
        yield b
    finally:
        b.server.stop()


@dataclasses.dataclass
class RunningRouter:
    server: ServerThread
    routes_file: Path

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        if isinstance(body, bytes | str):
            return httpx.post(self.url + "/v1/store_message", content=body, **kwargs)
        return httpx.post(self.url + "/v1/store_message", json=body, **kwargs)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture()
def start_router(clean_redis: str, tmp_path: Path) -> Iterator[Callable[..., RunningRouter]]:
    """Start the router (create_app under uvicorn, in a thread) with a
    routes.yaml pointing at `bot_url`; keyword arguments change the
    destination's settings."""
    running: list[RunningRouter] = []

    def start(
        bot_url: str,
        routes_file: Path | None = None,
        grace: float = 5.0,
        workers: bool = True,
        **dest: Any,
    ) -> RunningRouter:
        routes = routes_file or write_routes(
            tmp_path / f"routes{len(running)}.yaml", bot_url, **dest
        )
        settings = Settings(
            routes_file=str(routes),
            redis_url=clean_redis,
            shutdown_grace=grace,
            run_workers=workers,
        )
        app = create_app(settings, load(str(routes)))
        router = RunningRouter(ServerThread(app).start(), routes)
        running.append(router)
        return router

    yield start
    for r in running:
        r.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every `async def` test under anyio's asyncio backend."""
    import inspect

    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.anyio)
