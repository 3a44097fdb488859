"""Which kind of Redis server REDIS_URL names.

The router runs on one Redis (or Valkey), alone or as a primary with
replicas. A node of a Redis Cluster accepts the connection and answers
PING, but every command on a key another node owns fails with MOVED, so a
router started on one would look healthy and answer 503 to every POST.
Until Cluster support lands (docs: the Cluster issue), such a node is
refused at start and by /readyz, with the fix in one line.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

CLUSTER_REFUSAL = (
    "REDIS_URL names a node of a Redis Cluster (cluster_enabled:1), which the router "
    "does not support yet: writes to the other nodes' slots fail with MOVED; point "
    "REDIS_URL at a single Redis, or the primary of a primary/replica setup"
)


async def is_cluster_node(redis: Redis) -> bool:
    """Whether the server runs in cluster mode (False when INFO is not allowed)."""
    try:
        info: dict[str, Any] = await redis.info("cluster")
    except ResponseError:
        return False
    return str(info.get("cluster_enabled", "0")) == "1"
