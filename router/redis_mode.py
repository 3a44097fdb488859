"""Which kind of Redis server REDIS_URL names, and how it is used.

The router runs on one Redis (or Valkey), alone or as a primary with
replicas: the default and the fast path. A node of a Redis Cluster is
detected (INFO cluster) and used through redis-py's cluster client
(router.redis_client.open_client); each destination shard's keys share one
hash tag (router.keys), so every script runs on one node.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from router.redis_client import connect, connect_cluster, is_cluster, server_infos

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


async def too_few_replicas(redis: Redis, wanted: int) -> str | None:
    """Why ROUTER_REDIS_WAIT cannot be met now (a primary, or on a Cluster a
    master, with fewer replicas connected than it asks for), or None."""
    if wanted == 0:
        return None
    try:
        infos = await server_infos(redis, "replication")
    except ResponseError:
        return None  # INFO not allowed: nothing to tell
    fewest = min(int(info.get("connected_slaves", 0)) for info in infos)
    if fewest >= wanted:
        return None
    where, writes = "the Redis primary", "every write"
    if is_cluster(redis):
        where, writes = "a Cluster master", "every write to its slots"
    return (
        f"ROUTER_REDIS_WAIT={wanted}, but {where} has {fewest} replica(s) connected: "
        f"{writes} waits out the ingest deadline and answers 503 (stored, not yet "
        "replicated); connect replicas or lower ROUTER_REDIS_WAIT"
    )


def mode(redis: Redis) -> str:
    """How the client uses Redis: "cluster" or "single"."""
    return "cluster" if is_cluster(redis) else "single"


def describe(redis: Redis) -> str:
    """One phrase for the start log."""
    if is_cluster(redis):
        primaries = redis.get_primaries()  # type: ignore[attr-defined]
        return f"Redis Cluster, {len(primaries)} masters"
    return "a single Redis"
