"""router.queue.batching on a real Redis Cluster: the per-node batches go
out packed by router.redis.wire, and what redis-py's node pipeline gave
still holds: a redirect is followed after the slot map is read again, an
error reply reaches only its caller, a script flushed from a node is loaded
again. (The router over a Cluster: tests/process/test_cluster.py.)"""

from __future__ import annotations

import asyncio

import redis as redis_sync

from router.queue.batching import ClusterScriptBatcher
from router.redis.client import connect_cluster
from tests.support.cluster import Cluster, ClusterNode
from tests.support.servers import wait_until

# INCR the call's key when asked to write, else just answer: the slot a
# test moves must hold no keys while it moves.
SCRIPT = "if ARGV[1] == 'w' then return redis.call('INCR', KEYS[1]) end return 'read'"
TAG = "{moved-by-a-test}"


def _node_id(node: ClusterNode) -> str:
    with node.client() as c:
        return str(c.execute_command("CLUSTER", "MYID").decode())


def _move_slot(cluster: Cluster, slot: int, source: ClusterNode, target: ClusterNode) -> None:
    """Give an empty slot to another master, as a resharding does, and wait
    until every node's slot map says so."""
    source_id, target_id = _node_id(source), _node_id(target)
    with target.client() as c:
        c.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    with source.client() as c:
        c.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    for node in [target, source] + [m for m in cluster.masters() if m not in (source, target)]:
        with node.client() as c:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def everyone_agrees() -> bool:
        for node in cluster.live():
            with node.client() as c:
                for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end) and int(master[1]) != target.port:
                        return False
        return True

    wait_until(everyone_agrees, timeout=20, what=f"slot {slot} served by {target.port}")


def _moved_replies(node: ClusterNode) -> int:
    stat = node.info("errorstats").get("errorstat_MOVED", {})
    return int(stat.get("count", 0)) if isinstance(stat, dict) else 0


async def test_calls_answered_moved_are_sent_to_the_slots_new_master(
    cluster_url: str, redis_cluster: Cluster
) -> None:
    client = connect_cluster(cluster_url, 10)
    try:
        batcher = ClusterScriptBatcher(client, client.register_script(SCRIPT))
        keys = [f"{TAG}k{i}" for i in range(20)]
        assert await batcher([keys[0]], ["r"]) in ("read", b"read")  # the slot map, read
        source = redis_cluster.master_of(keys[0])
        target = next(m for m in redis_cluster.masters() if m != source)
        with source.client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", keys[0]))
        moved_before = _moved_replies(source)
        _move_slot(redis_cluster, slot, source, target)
        try:
            # The batcher still sends the slot's calls to the old master:
            # a lone call and a batch of the rest, each answered MOVED.
            results = await asyncio.gather(*(batcher([k], ["w"]) for k in keys))
            assert results == [1] * len(keys)
            assert _moved_replies(source) > moved_before  # the calls did go there first
            with target.client() as c:
                assert [int(c.get(k) or 0) for k in keys] == [1] * len(keys)
                c.delete(*keys)
        finally:
            _move_slot(redis_cluster, slot, target, source)
    finally:
        await client.aclose()


async def test_an_error_reply_reaches_its_caller_only_and_a_flushed_script_is_loaded(
    cluster_url: str, redis_cluster: Cluster
) -> None:
    client = connect_cluster(cluster_url, 10)
    try:
        batcher = ClusterScriptBatcher(client, client.register_script(SCRIPT))
        keys = [f"{TAG}k{i}" for i in range(8)]
        assert await batcher([keys[0]], ["w"]) == 1
        master = redis_cluster.master_of(keys[0])
        with master.client() as c:
            c.set(keys[3], "not a number")
            c.script_flush()  # as a restarted node without its scripts
        results = await asyncio.gather(*(batcher([k], ["w"]) for k in keys), return_exceptions=True)
        assert isinstance(results[3], redis_sync.ResponseError), results
        assert results[:3] + results[4:] == [2, 1, 1, 1, 1, 1, 1]
    finally:
        await client.aclose()
