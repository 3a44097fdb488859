"""A Redis Cluster node in REDIS_URL: refused at start and by /readyz with
one line naming the fix, instead of a router that looks healthy and
answers 503 (MOVED) to every POST."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from router.embedded import server_binary
from router.redis_mode import CLUSTER_REFUSAL
from tests.support.processes import run_cli
from tests.support.routes import routes_file
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


def test_a_cluster_node_is_refused_at_start_with_one_line(cluster_node: str, tmp_path) -> None:
    routes = routes_file(tmp_path / "routes.yaml")
    for command in ("api", "worker"):
        done = run_cli("--routes", str(routes), command, REDIS_URL=cluster_node, timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines == [f"router: {CLUSTER_REFUSAL}"], done.stderr


def test_readyz_says_why_a_cluster_node_cannot_be_used(cluster_node: str, tmp_path) -> None:
    server = serve(cluster_node, routes_file(tmp_path / "routes.yaml"), run_workers=False)
    try:
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["redis"] == CLUSTER_REFUSAL
    finally:
        server.stop()
