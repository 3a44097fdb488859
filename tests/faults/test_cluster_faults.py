"""Fault injection on a real Redis Cluster (3 masters + 3 replicas on
loopback, AOF everysec, cluster-node-timeout 1 s): the router killed
mid-stream, and a master killed with its replica taking over, with and
without ROUTER_REDIS_WAIT. The same invariants as tests/faults/test_faults.py."""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import KEYS, Lab, analyze, keys_named, wait_for
from tests.faults.results import Recorder
from tests.faults.test_faults import (
    RUN_TIMEOUT,
    SIZES,
    assert_invariants,
    first_ack_after,
    ingest_note,
    pick,
    row,
)

SHARDS = 3


@pytest.mark.parametrize("size", SIZES)
def test_cluster_router_sigkill_mid_stream_loses_nothing(
    lab: Lab, record: Recorder, size: str
) -> None:
    """SIGKILL of the only router on a Cluster, its destination in 3 shards
    (one per master), restarted: nothing lost, order kept."""
    n_keys, per_key, rate = pick(size, (20, 10, 150), (100, 20, 200))
    max_in_flight = 15
    lab.start_cluster()
    bot = lab.start_bot(latency=(0.005, 0.02))
    routes = lab.routes(max_in_flight=max_in_flight, timeout="1s", lease="3s", shards=SHARDS)
    router = lab.router("r1", routes).start()
    gen = lab.load([router.url], keys_named(n_keys), per_key, rate).start()
    wait_for(lambda: gen.accepted >= gen.total * 0.4 and bot.acks, RUN_TIMEOUT, "40% accepted")

    t_kill = time.monotonic()
    router.kill()
    time.sleep(0.5)
    t_restart = time.monotonic()
    router.start()
    gen.join(RUN_TIMEOUT)
    lab.wait_drained(bot, RUN_TIMEOUT, shards=SHARDS)

    acks = bot.acked()
    stats = analyze(gen.order(), gen.accepted_set(), acks)
    overlaps = bot.concurrent_deliveries()
    first = first_ack_after(acks, t_restart)
    assert first is not None
    record.row(
        row(
            "C1. router SIGKILL on a Redis Cluster",
            f"3 masters + 3 replicas; destination in {SHARDS} shards; SIGKILL of the only "
            f"`router serve` at 40% of {gen.total} messages over {n_keys} wa_ids, "
            "restarted 0.5 s later",
            stats,
            f"{first - t_kill:.1f} s to the first delivery after the restart",
            f"max_in_flight {max_in_flight} (5 per shard); duplicates {stats.duplicated} "
            f"(bound: max_in_flight); concurrent deliveries of one key: {len(overlaps)}; "
            f"{ingest_note(gen)}",
        )
    )
    assert_invariants(stats, overlaps)
    assert stats.duplicated <= max_in_flight


@pytest.mark.parametrize("wait", [1, 0], ids=["wait1", "wait0"])
@pytest.mark.parametrize("size", SIZES)
def test_cluster_master_sigkill_with_failover(
    lab: Lab, record: Recorder, size: str, wait: int
) -> None:
    """SIGKILL of the master that holds the destination while messages
    stream in: its replica takes over, ingest (503 meanwhile, retried by the
    sender with the same Idempotency-Key) and workers carry on by
    themselves; the killed node is restarted and rejoins as a replica. With
    ROUTER_REDIS_WAIT=1 no message answered 200 is lost; with 0, whatever
    was lost is counted."""
    n_keys, per_key, rate = pick(size, (20, 15, 150), (100, 30, 200))
    cluster = lab.start_cluster()
    bot = lab.start_bot(latency=(0.005, 0.02))
    routes = lab.routes(max_in_flight=16, timeout="1s", lease="3s")
    router = lab.router("r1", routes)
    router.env["ROUTER_REDIS_WAIT"] = str(wait)
    router.start()
    master = cluster.master_of(KEYS.tag)
    gen = lab.load([router.url], keys_named(n_keys), per_key, rate).start()
    wait_for(lambda: gen.accepted >= gen.total * 0.4 and bot.acks, RUN_TIMEOUT, "40% accepted")

    t_kill = time.monotonic()
    master.kill()
    took = cluster.wait_failover(master)
    # As a supervisor would: the killed node restarts and rejoins as the
    # new master's replica (until then, with ROUTER_REDIS_WAIT=1, writes to
    # the promoted master cannot be replicated and answer 503).
    master.start()
    wait_for(cluster.healthy, RUN_TIMEOUT, "the killed node back as a replica")
    rejoined = time.monotonic() - t_kill
    gen.join(RUN_TIMEOUT)
    lab.wait_drained(bot, RUN_TIMEOUT)

    acks = bot.acked()
    stats = analyze(gen.order(), gen.accepted_set(), acks)
    overlaps = bot.concurrent_deliveries()
    first = first_ack_after(acks, t_kill + took)
    assert first is not None
    record.row(
        row(
            f"C2. Redis Cluster master SIGKILL, ROUTER_REDIS_WAIT={wait}",
            f"SIGKILL of the master holding the destination at 40% of {gen.total} messages "
            f"over {n_keys} wa_ids; its replica promoted by the cluster",
            stats,
            f"failover took {took:.1f} s; first delivery {first - t_kill:.1f} s after the "
            f"kill; the killed node, restarted at once, was a replica again after "
            f"{rejoined:.1f} s",
            f"duplicates {stats.duplicated}; concurrent deliveries of one key: "
            f"{len(overlaps)}; {ingest_note(gen)}",
        )
    )
    assert stats.order_violations == 0, stats.summary()
    assert not overlaps
    if wait:
        assert_invariants(stats, overlaps)
    assert cluster.healthy()
