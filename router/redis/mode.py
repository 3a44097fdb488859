"""Which kind of Redis server REDIS_URL names, and how it is used.

The router runs on one Redis (or Valkey), alone or as a primary with
replicas: the default and the fast path. A node of a Redis Cluster is
detected (INFO cluster) and used through redis-py's cluster client
(router.redis.client.open_client); each destination shard's keys share one
hash tag (router.queue.keys), so every script runs on one node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from router.redis.client import (
    cluster_unavailable,
    connect,
    connect_cluster,
    is_cluster,
)

__all__ = ["is_cluster", "open_client"]


async def open_client(url: str, max_connections: int = 100) -> Redis:
    """A client on `url`: redis-py's cluster client when the server is a
    node of a Redis Cluster, the plain one otherwise.

    Typed as Redis: the cluster client has the same commands, and the few
    places that differ ask `is_cluster`. A server that does not answer yet
    gets the plain client (a Cluster is found once it answers: restart). A
    Cluster whose slots are not all served yet (being created) gets the
    cluster client all the same: it reads the slot map again on each
    command until the Cluster is ready, answering "unavailable" meanwhile."""
    single = connect(url, max_connections)
    try:
        cluster = await is_cluster_node(single)
    except (RedisError, OSError):
        return single
    if not cluster:
        return single
    await single.aclose()
    client = connect_cluster(url, max_connections)
    try:
        await client.initialize()
    except RedisClusterException:
        pass  # not ready yet: see above
    except BaseException:
        await client.aclose()
        raise
    return cast(Redis, client)


LATE_CLUSTER = (
    "REDIS_URL names a node of a Redis Cluster that did not answer when this process "
    "started, so it runs on the single-Redis client and writes to other nodes' slots "
    "fail with MOVED: restart the process"
)


async def is_cluster_node(redis: Redis) -> bool:
    """Whether the server runs in cluster mode (False when INFO is not allowed)."""
    try:
        info: dict[str, Any] = await redis.info("cluster")
    except ResponseError:
        return False
    return str(info.get("cluster_enabled", "0")) == "1"


async def too_few_replicas(
    redis: Redis, wanted: int, keys: Iterable[str] = (), ack_within: float = 2.0
) -> str | None:
    """Why ROUTER_REDIS_WAIT cannot be met now, or None: a primary (on a
    Cluster, a master holding one of `keys`, or any master when there are
    none) with fewer replicas in sync than it asks for.

    In sync: `state=online` in the master's INFO replication and its last
    acknowledgement at most `ack_within` s ago (`lag`; replicas acknowledge
    every second). A replica still waiting for its first full sync
    (`wait_bgsave`: a fresh one waits out repl-diskless-sync-delay, 5 s by
    default; `send_bulk`) is connected but acknowledges no WAIT: counting it
    made a freshly formed Cluster look writable while its first writes waited
    out the ingest deadline. Cheap (one INFO per master) and exact enough:
    an online replica answers WAIT's GETACK at once."""
    if wanted == 0:
        return None
    try:
        infos = await _replication_infos(redis, list(keys))
    except ResponseError:
        return None  # INFO not allowed: nothing to tell
    cluster = is_cluster(redis)
    short = []  # (master, its INFO, its replicas) of each master that cannot meet it
    for name, info in infos:
        replicas = _replicas(info)
        if len(_in_sync(replicas, ack_within)) < wanted:
            short.append((name, info, replicas))
    if not short:
        return None
    name, info, replicas = short[0]
    where = f"Cluster master {name}" if cluster else "the Redis primary"
    writes = "every write to its slots" if cluster else "every write"
    others = f" (and {len(short) - 1} more master(s))" if len(short) > 1 else ""
    connected = int(info.get("connected_slaves", len(replicas)))
    if connected < wanted:
        return (
            f"ROUTER_REDIS_WAIT={wanted}, but {where} has {connected} replica(s) "
            f"connected{others}: {writes} waits out the ingest deadline and answers 503 "
            "(stored, not yet replicated); connect replicas or lower ROUTER_REDIS_WAIT"
        )
    states = ", ".join(_state(r) for r in replicas)
    return (
        f"ROUTER_REDIS_WAIT={wanted}, but {where} has {len(_in_sync(replicas, ack_within))} "
        f"of its {connected} replica(s) in sync ({states}){others}: {writes} waits out the "
        "ingest deadline and answers 503 (stored, not yet replicated) until they are; wait "
        "for their sync (a new replica's takes seconds) or lower ROUTER_REDIS_WAIT"
    )


async def _replication_infos(redis: Redis, keys: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(address, INFO replication) of the one server, or of each Cluster
    master holding one of `keys` (every master when there are none)."""
    if not is_cluster(redis):
        return [("", await redis.info("replication"))]
    cluster: Any = redis
    if not cluster.get_primaries():  # no slot map yet: read it, or say why not
        try:
            await cluster.initialize()
        except RedisClusterException as exc:
            raise cluster_unavailable(exc) from exc
    try:
        nodes = [cluster.get_node_from_key(k) for k in keys] or cluster.get_primaries()
    except RedisClusterException as exc:  # a slot not served (the map is being read again)
        raise cluster_unavailable(exc) from exc
    masters = {node.name: node for node in nodes}
    names = sorted(masters)
    infos = await asyncio.gather(
        *(cluster.info("replication", target_nodes=masters[n]) for n in names)
    )
    return list(zip(names, infos, strict=True))


def _replicas(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The `slaveN` entries of INFO replication (redis-py parses each into a dict)."""
    return [v for k, v in sorted(info.items()) if k.startswith("slave") and isinstance(v, dict)]


def _in_sync(replicas: list[dict[str, Any]], ack_within: float) -> list[dict[str, Any]]:
    return [
        r for r in replicas if r.get("state") == "online" and int(r.get("lag", 0)) <= ack_within
    ]


def _state(replica: dict[str, Any]) -> str:
    state = str(replica.get("state", "unknown"))
    if state == "online":
        return f"online, last acknowledged {replica.get('lag', '?')} s ago"
    return state


def mode(redis: Redis) -> str:
    """How the client uses Redis: "cluster" or "single"."""
    return "cluster" if is_cluster(redis) else "single"


def describe(redis: Redis) -> str:
    """One phrase for the start log."""
    if is_cluster(redis):
        primaries = redis.get_primaries()  # type: ignore[attr-defined]
        return f"Redis Cluster, {len(primaries)} masters"
    return "a single Redis"
