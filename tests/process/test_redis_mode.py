"""A Redis Cluster node in REDIS_URL whose cluster is not formed yet (no
slots served, as while `--cluster create` has not run): the router starts,
says Redis is not ready, and answers POSTs 503 ("not stored"), never 500,
until the cluster serves. (A formed cluster: tests/process/test_cluster.py.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from router.redis.embedded import server_binary
from tests.support.processes import RouterProcess
from tests.support.routes import STORE, routes_file
from tests.support.servers import free_port, port_open, serve, wait_until


@pytest.fixture()
def cluster_node(tmp_path: Path) -> Iterator[str]:
    """A valkey-server in cluster mode (one node, no slots: enough to be one)."""
    port = free_port()
    while port + 10000 > 65535 or port_open(port + 10000):  # its cluster bus port
        port = free_port()
    process = subprocess.Popen(
        [
            server_binary(),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--save", "", "--appendonly", "no", "--logfile", str(tmp_path / "node.log")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis_sync.Redis.from_url(url, socket_timeout=1).ping())
        except redis_sync.RedisError:
            return False

    try:
        wait_until(answers, timeout=20, what="the cluster node")
        yield url
    finally:
        process.kill()
        process.wait(10)


def test_a_cluster_not_formed_yet_is_unavailable_not_a_crash(cluster_node: str, tmp_path) -> None:
    server = serve(cluster_node, routes_file(tmp_path / "routes.yaml"), run_workers=False)
    try:
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["redis_mode"] == "cluster"
        assert ready.json()["redis"].startswith("Redis unreachable (Redis Cluster not ready:")
        posted = httpx.post(server.url + STORE, json={"mensaje": "m", "wa_id": "1"})
        assert posted.status_code == 503, posted.text
        assert posted.json()["stored"] == "no"
    finally:
        server.stop()


def test_router_api_starts_on_a_cluster_not_formed_yet(cluster_node: str, tmp_path) -> None:
    routes = routes_file(tmp_path / "routes.yaml")
    router = RouterProcess(
        tmp_path / "api.log", command="api", REDIS_URL=cluster_node, ROUTES_FILE=str(routes)
    )
    router.start(wait=False)
    try:
        wait_until(lambda: port_open(router.port), timeout=60, what="the API port")
        assert httpx.get(router.url + "/readyz").status_code == 503
        assert "Traceback" not in router.log_text()
    finally:
        router.terminate()
