"""Fixtures: a real Redis-compatible server, a real bot, the real router.

The tests are arranged by what they need: tests/unit (pure logic, no
server), tests/integration (a real Redis-compatible server and the router's
app in-process), tests/process (real `router` processes), tests/faults (the
fault-injection suite). Shared helpers live in tests/support.

Without REDIS_URL the session starts the embedded valkey-server (the same
binary `router serve` uses) on a free port. With REDIS_URL set, the suite
runs against that server instead (e.g. the machine's Redis 7); its selected
database is flushed before every test and after the run, so point it at a
scratch database.

The suite runs in parallel (pytest-xdist, `make test`): a session is one
worker, so each worker starts its own embedded server and Redis Cluster;
with REDIS_URL, worker N uses the URL's database + N (tests/support/workers.py),
so no worker flushes another's data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from router.redis.embedded import EmbeddedRedis
from tests.support.bot import Bot, serving_bot
from tests.support.cluster import Cluster
from tests.support.routes import STORE, write_routes
from tests.support.servers import ServerThread, free_port, serve, wait_until
from tests.support.trust_store import use_small_trust_store
from tests.support.workers import database_for_worker

use_small_trust_store()  # each HTTP client 1 ms of CPU, not 25 (tests/support/trust_store.py)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        url = database_for_worker(url)
        yield url
        # The last test's data is not left in that server. (A test may leave
        # it stopped: there is nothing to empty then.)
        client = redis_sync.Redis.from_url(url)
        with contextlib.suppress(redis_sync.RedisError):
            client.flushdb()
        client.close()
        return
    server = EmbeddedRedis(
        tmp_path_factory.mktemp("valkey"), port=free_port(), appendfsync="everysec"
    )
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real Redis Cluster on loopback (3 masters + 3 replicas), started
    for the first test that asks and shared by the session's tests."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture()
def cluster_url(redis_cluster: Cluster) -> str:
    """The cluster emptied for this test (every master flushed), and a node
    to put in REDIS_URL."""
    wait_until(redis_cluster.healthy, timeout=30, what="a healthy cluster")
    for node in redis_cluster.masters():
        with node.client() as client:
            client.flushall()
    return redis_cluster.url


@pytest.fixture()
def clean_redis(redis_url: str) -> str:
    """The server's database, emptied for this test (and, with REDIS_URL,
    after the run: redis_url)."""
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
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A server of this test's own, for settings the shared one must not get."""
    server = EmbeddedRedis(tmp_path / "own-valkey", port=free_port(), appendonly=False)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)  # in case a test froze it
        server.stop()


@pytest.fixture()
def bot() -> Iterator[Bot]:
    with serving_bot() as b:
        yield b


@dataclasses.dataclass
class RunningRouter:
    server: ServerThread
    routes_file: Path

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        if isinstance(body, bytes | str):
            return httpx.post(self.url + STORE, content=body, **kwargs)
        return httpx.post(self.url + STORE, json=body, **kwargs)

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
        server = serve(clean_redis, routes, shutdown_grace=grace, run_workers=workers)
        router = RunningRouter(server, routes)
        running.append(router)
        return router

    yield start
    for r in running:
        r.stop()


# The slowest directories first (seconds per test: faults ~10, process ~6,
# browser ~4, integration ~1.3, unit ~0.01): parallel workers then end
# together on short tests instead of one still running a long one.
SLOW_FIRST = ("faults", "process", "browser", "integration")


def _slowness(item: pytest.Item) -> int:
    parts = item.nodeid.split("/")
    folder = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
    return SLOW_FIRST.index(folder) if folder in SLOW_FIRST else len(SLOW_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every `async def` test under anyio's asyncio backend; the slow
    directories first (a stable sort: the same order in every worker, as
    xdist requires, and each file's tests in their order)."""
    import inspect

    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.anyio)
    items.sort(key=_slowness)
