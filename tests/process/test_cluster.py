"""The router on a real Redis Cluster (3 masters + 3 replicas on loopback):
detected from any node, per-key order kept across shards, a destination
spread evenly over the masters, a fan-out across slots completed by a
retried request without duplicates, and a master's failover survived."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from redis.asyncio.cluster import RedisCluster

from router.queue import envelope
from router.queue.enqueue import Target, enqueue
from router.queue.keys import DestinationKeys, all_shards, shard_count_key, shard_of
from router.queue.scripts import Scripts
from router.redis.embedded import EmbeddedRedis
from tests.support import whatsapp as wa
from tests.support.bot import Bot, check_order, serving_bot
from tests.support.cluster import Cluster, sync_client
from tests.support.messages import interleaved, post_concurrently
from tests.support.processes import RouterProcess, run_cli
from tests.support.routes import STORE, write_routes, write_yaml
from tests.support.servers import free_port, serve, wait_until


def _started(
    tmp_path: Path, redis_url: str, routes: Path, command: str = "serve", **env: str
) -> RouterProcess:
    """`router <command>` on `redis_url` with `routes`, ready (its log: router.log)."""
    return RouterProcess(
        tmp_path / "router.log",
        command=command,
        REDIS_URL=redis_url,
        ROUTES_FILE=str(routes),
        **env,
    ).start()


def _two_destinations(directory: Path, bot: Bot, audit: Bot, shards: int = 6) -> Path:
    return write_yaml(
        directory,
        f"""
        routes:
          - path: {STORE}
            destinations: [chatbot, audit]
            fields: {{mensaje: string, wa_id: string}}
        destinations:
          chatbot:
            plugin: chatbot
            url: {bot.url}
            ordering_key: wa_id
            shards: {shards}
            max_in_flight: 12
            timeout: 2s
            lease: 5s
            retry: {{initial: 50ms, max_delay: 400ms}}
          audit:
            plugin: chatbot
            url: {audit.url}
            ordering_key: wa_id
            timeout: 2s
            lease: 5s
            retry: {{initial: 50ms, max_delay: 400ms}}
        """,
    )


@pytest.fixture()
def audit() -> Iterator[Bot]:
    """A second bot, for a second destination."""
    with serving_bot() as b:
        yield b


def test_a_cluster_is_detected_and_per_key_order_holds_over_shards_and_slots(
    cluster_url: str, bot: Bot, audit: Bot, tmp_path: Path
) -> None:
    bot.latency = (0.0, 0.01)
    routes = _two_destinations(tmp_path, bot, audit)
    router = _started(tmp_path, cluster_url, routes)
    try:
        ready = httpx.get(router.url + "/readyz").json()
        assert ready["redis"] == "ok" and ready["redis_mode"] == "cluster", ready
        assert "Redis: Redis Cluster, 3 masters" in router.log_text()
        sent = interleaved([f"4491{i:07d}" for i in range(40)], 8)
        post_concurrently(router.url, sent)
        total = sum(len(m) for m in sent.values())
        wait_until(lambda: len(bot.acknowledged()) >= total, timeout=60, what="chatbot deliveries")
        wait_until(lambda: len(audit.acknowledged()) >= total, timeout=60, what="audit deliveries")
        for b in (bot, audit):
            lost, duplicates = check_order(sent, b.acknowledged())
            assert (lost, duplicates) == (0, 0)
            assert b.max_in_flight_per_key == 1
        assert bot.max_in_flight <= 12  # max_in_flight holds over the 6 shards
    finally:
        router.terminate()


def _lane_keys_per_master(cluster: Cluster) -> Counter[int]:
    per_master: Counter[int] = Counter()
    for node in cluster.masters():
        with node.client() as client:
            per_master[node.port] = sum(1 for _ in client.scan_iter(match="*:lane:*", count=1000))
    return per_master


def _evalsha_calls(cluster: Cluster) -> Counter[int]:
    calls: Counter[int] = Counter()
    for node in cluster.masters():
        with node.client() as client:
            stats = client.info("commandstats")
            calls[node.port] = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return calls


def _skew(counts: Counter[int]) -> float:
    mean = sum(counts.values()) / len(counts)
    return max(abs(c - mean) for c in counts.values()) / mean


def test_shards_spread_a_destination_evenly_over_the_masters(
    cluster_url: str, redis_cluster: Cluster, tmp_path: Path
) -> None:
    """1,200 conversations over 6 shards: lanes and script calls within 10 %
    of even on each of the 3 masters (one master would hold all of them
    without shards)."""
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot", shards=6)
    # ROUTER_INGEST_BATCHING=0: one EVALSHA per message, so calls count messages
    router = _started(tmp_path, cluster_url, routes, "api", ROUTER_INGEST_BATCHING="0")
    try:
        for node in redis_cluster.masters():
            with node.client() as client:
                client.config_resetstat()
        # 50 at a time, a connection each: what is measured is where the
        # lanes land, not how a loaded machine's router copes with 600
        # connections at once (it waited out its Redis pool: a 503, as
        # documented) or with a client whose loop stalled past the server's
        # keep-alive timeout (a request sent on a closing connection).
        sent = {f"4491{i:07d}": [f"m{i}"] for i in range(1200)}
        post_concurrently(router.url, sent, keys_at_once=50, keep_alive=False)
    finally:
        router.terminate()
    lanes = _lane_keys_per_master(redis_cluster)
    calls = _evalsha_calls(redis_cluster)
    print(f"lanes per master {dict(lanes)}, EVALSHA calls per master {dict(calls)}")
    assert sum(lanes.values()) == 1200 and len(lanes) == 3
    assert _skew(lanes) <= 0.10, lanes
    assert _skew(calls) <= 0.10, calls
    tags = {k.tag for k in all_shards("chatbot", 6)}
    owners = Counter(redis_cluster.master_of(tag).port for tag in tags)
    assert sorted(owners.values()) == [2, 2, 2]  # 6 shards: 2 on each master


def test_a_retried_request_completes_a_half_written_fan_out_under_the_first_id(
    cluster_url: str, bot: Bot, audit: Bot, tmp_path: Path
) -> None:
    """On a Cluster the copies of a fan-out are written slot by slot. A
    request cut off after the first copy, retried with its Idempotency-Key,
    stores the missing copy under the id stored first: no duplicate."""
    routes = _two_destinations(tmp_path, bot, audit, shards=1)
    chatbot, audit_keys = DestinationKeys("chatbot"), DestinationKeys("audit")
    cluster = RedisCluster.from_url(cluster_url)
    assert cluster.keyslot(chatbot.tag) != cluster.keyslot(audit_keys.tag)
    body = b'{"mensaje":"hola","wa_id":"44912345678"}'
    first_id = envelope.new_message_id()

    async def first_try() -> None:  # what the cut-off request had stored
        try:
            scripts = Scripts(cluster)  # type: ignore[arg-type]
            raw = envelope.encode(first_id, 1, body)
            stored = await enqueue(
                scripts, [Target(chatbot, "44912345678")], raw, first_id, "req-1", 600
            )
            assert not stored.duplicate
        finally:
            await cluster.aclose()

    asyncio.run(first_try())
    router = _started(tmp_path, cluster_url, routes, "api")
    try:
        headers = {"Idempotency-Key": "req-1"}
        retried = httpx.post(router.url + STORE, content=body, headers=headers)
        assert retried.status_code == 200, retried.text
        assert retried.json()["id"] == first_id
        assert retried.json()["duplicate"] is False  # the audit copy was new
        again = httpx.post(router.url + STORE, content=body, headers=headers)
        assert again.json() == {"status": "ok", "id": first_id, "duplicate": True}
    finally:
        router.terminate()
    client = redis_sync.RedisCluster.from_url(cluster_url)
    try:
        for keys in (chatbot, audit_keys):
            lane = client.lrange(keys.lane("44912345678"), 0, -1)
            assert [envelope.decode(raw).id for raw in lane] == [first_id], keys.destination
    finally:
        client.close()


def test_changing_shards_while_messages_wait_is_refused_with_one_line(
    clean_redis: str, tmp_path: Path
) -> None:
    """Moving conversations to other shards while their earlier messages
    wait in the old ones would reorder them: refused until drained."""
    one = write_routes(tmp_path / "one.yaml", "http://127.0.0.1:9/bot")
    four = write_routes(tmp_path / "four.yaml", "http://127.0.0.1:9/bot", shards=4)
    api = _started(tmp_path, clean_redis, one, "api")
    try:
        r = httpx.post(api.url + STORE, json={"mensaje": "m", "wa_id": "44912345678"})
        assert r.status_code == 200
    finally:
        api.terminate()
    refused = run_cli("--routes", str(four), "worker", "--burst", REDIS_URL=clean_redis)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "router: destination chatbot: routes.yaml says shards: 4, but 1 key(s) and dead "
        "letters are stored under shards: 1; set shards back to 1, or let the destination "
        "drain first (deliver, replay or clear its dead letters, resume its paused "
        "conversations)"
    ]
    client = redis_sync.Redis.from_url(clean_redis)
    try:
        assert client.get(shard_count_key("chatbot")) is None
        client.delete(*client.keys("{rt:chatbot}*"))  # drained
        done = run_cli("--routes", str(four), "worker", "--burst", REDIS_URL=clean_redis)
        assert done.returncode == 0, done.stderr
        assert client.get(shard_count_key("chatbot")) == b"4"
    finally:
        client.close()


def test_no_message_answered_200_is_lost_when_a_master_is_killed_with_redis_wait(
    cluster_url: str, redis_cluster: Cluster, bot: Bot, tmp_path: Path
) -> None:
    """kill -9 of the master holding the destination, under steady posting,
    with ROUTER_REDIS_WAIT=1: its replica takes over, ingest and workers
    carry on by themselves, and every message answered 200 is delivered,
    in order."""
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    router = _started(tmp_path, cluster_url, routes, ROUTER_REDIS_WAIT="1")
    master = redis_cluster.master_of(DestinationKeys("chatbot").tag)
    answered: dict[str, list[str]] = {f"4491{i:07d}": [] for i in range(20)}
    refused = 0
    unexpected: list[str] = []
    stop = threading.Event()

    def post_steadily() -> None:
        nonlocal refused
        n = 0
        with httpx.Client(base_url=router.url, timeout=10) as client:
            while not stop.is_set():
                for key, got in answered.items():
                    mensaje = f"{key}-{n}"
                    r = client.post(STORE, json={"mensaje": mensaje, "wa_id": key})
                    if r.status_code == 200:
                        got.append(mensaje)
                    elif r.status_code == 503:
                        refused += 1
                    else:
                        unexpected.append(f"{r.status_code} {r.text}")
                n += 1
                time.sleep(0.01)

    poster = threading.Thread(target=post_steadily)
    poster.start()
    try:
        time.sleep(2)
        master.kill()
        took = redis_cluster.wait_failover(master)
        time.sleep(3)  # posting goes on against the new master
    finally:
        stop.set()
        poster.join(30)
    try:
        total = sum(len(m) for m in answered.values())
        wait_until(lambda: len(bot.acknowledged()) >= total, timeout=60, what="all deliveries")
        # A message may have been stored although its answer was 503; per
        # key, such a message sits between two answered ones, so compare the
        # answered ones in the order the bot got them.
        acked = [r for r in bot.acknowledged() if r.body["mensaje"] in _set(answered)]
        lost, _ = check_order(answered, acked)
        print(f"failover in {took:.1f}s; {total} answered 200, {refused} answered 503, lost {lost}")
        assert lost == 0
        assert unexpected == []
        # The promoted master has no replica: WAIT=1 cannot be met for its
        # slots, which /readyz warns of (the others' still take writes),
        # until the killed node is back as its replica.
        ready = httpx.get(router.url + "/readyz").json()
        assert "0 replica(s) connected" in ready["warnings"][0], ready
        master.start()
        wait_until(redis_cluster.healthy, timeout=60, what="the old master back as a replica")
        wait_until(
            lambda: "warnings" not in httpx.get(router.url + "/readyz").json(),
            timeout=30,
            what="/readyz without warnings again",
        )
        again = httpx.post(router.url + STORE, json={"mensaje": "after", "wa_id": "1"})
        assert again.status_code == 200, again.text
    finally:
        router.terminate()


def _set(sent: dict[str, list[str]]) -> set[str]:
    return {m for ms in sent.values() for m in ms}


def test_a_cluster_with_a_password_in_the_url_works_the_same(tmp_path: Path, bot: Bot) -> None:
    """requirepass on every node, the password in REDIS_URL: detected,
    stored and delivered as without one."""
    cluster = Cluster(tmp_path / "cluster", password="s3cret-pass").start()
    try:
        routes = write_routes(tmp_path / "routes.yaml", bot.url, shards=3)
        router = _started(tmp_path, cluster.url, routes)
        try:
            assert httpx.get(router.url + "/readyz").json()["redis_mode"] == "cluster"
            sent = interleaved([f"4491{i:07d}" for i in range(6)], 3)
            post_concurrently(router.url, sent)
            wait_until(lambda: len(bot.acknowledged()) >= 18, timeout=30, what="deliveries")
            assert check_order(sent, bot.acknowledged()) == (0, 0)
            assert "s3cret-pass" not in router.log_text()
        finally:
            router.terminate()
    finally:
        cluster.stop()


def test_more_shards_than_the_pool_can_wait_on_is_refused(tmp_path: Path) -> None:
    routes = write_routes(
        tmp_path / "routes.yaml", "http://127.0.0.1:9/bot", shards=40, max_in_flight=40
    )
    done = run_cli("--routes", str(routes), "worker", ROUTER_REDIS_CONNECTIONS="60")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"router: {routes}: the destinations' 40 shards each keep a Redis connection waiting "
        "for work, over half of ROUTER_REDIS_CONNECTIONS=60; set ROUTER_REDIS_CONNECTIONS to "
        "at least 80, or use fewer shards"
    ]


def test_a_frozen_master_holds_up_only_its_own_shards(
    cluster_url: str, redis_cluster: Cluster, tmp_path: Path
) -> None:
    """Concurrent writes to shards on three masters, one of them frozen
    (SIGSTOP): those on the two others are answered at once, those on the
    frozen one 503 within the deadline. (The batcher keeps one pipeline per
    node, so a slow node cannot hold the others' calls.)"""
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot", shards=6)
    router = _started(tmp_path, cluster_url, routes, "api", ROUTER_INGEST_DEADLINE="1")
    frozen = redis_cluster.master_of(DestinationKeys("chatbot", 0, 6).tag)
    keys = [f"4491{i:07d}" for i in range(60)]
    on_frozen = {
        k
        for k in keys
        if redis_cluster.master_of(DestinationKeys("chatbot", shard_of(k, 6), 6).tag) == frozen
    }
    assert 0 < len(on_frozen) < len(keys)

    async def post_all() -> list[tuple[str, int, float, str]]:
        async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:

            async def one(key: str) -> tuple[str, int, float, str]:
                started = time.monotonic()
                r = await client.post(STORE, json={"mensaje": "m", "wa_id": key})
                stored = r.json().get("stored", "") if r.status_code == 503 else ""
                return key, r.status_code, time.monotonic() - started, stored

            return await asyncio.gather(*(one(k) for k in keys))

    try:
        assert frozen.process is not None
        frozen.process.send_signal(signal.SIGSTOP)
        try:
            answers = asyncio.run(post_all())
        finally:
            frozen.process.send_signal(signal.SIGCONT)
        for key, status, took, _ in answers:
            if key in on_frozen:  # within the 1 s deadline (+ margin), not the 3 s socket timeout
                assert status == 503 and took < 2.5, (key, status, took)
            else:  # not held up past the deadline by the frozen node's batch
                assert status == 200, (key, status, took)
    finally:
        router.terminate()
        wait_until(redis_cluster.healthy, timeout=60, what="the cluster to settle")
    # What was answered "not stored" is not stored (the frozen master ran
    # whatever it had read once it thawed).
    certain = [key for key, _, _, stored in answers if stored == "no"]
    client = sync_client(cluster_url)
    try:
        for key in certain:
            lane = DestinationKeys("chatbot", shard_of(key, 6), 6).lane(key)
            assert client.llen(lane) == 0, key
    finally:
        client.close()


def test_with_redis_wait_a_duplicate_is_acknowledged_only_once_a_replica_has_it(
    cluster_url: str, redis_cluster: Cluster, tmp_path: Path
) -> None:
    """ROUTER_REDIS_WAIT=1 with the destination's replica frozen: the first
    try is stored on the master but not replicated (503 unknown); its retry
    is a duplicate, yet is not answered 200 until a replica holds the
    message (the duplicate rewrites its marker, so its WAIT covers the
    original write)."""
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot")
    router = _started(
        tmp_path, cluster_url, routes, "api", ROUTER_REDIS_WAIT="1", ROUTER_INGEST_DEADLINE="1"
    )
    replica = redis_cluster.replica_of(redis_cluster.master_of(DestinationKeys("chatbot").tag))
    headers = {"Idempotency-Key": "wait-dup-1"}
    message = {"mensaje": "m", "wa_id": "44912345678"}
    try:
        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)
        try:
            first = httpx.post(router.url + STORE, json=message, headers=headers)
            assert first.status_code == 503 and first.json()["stored"] == "unknown", first.text
            retry = httpx.post(router.url + STORE, json=message, headers=headers)
            assert retry.status_code == 503, retry.text  # no replica has it yet
        finally:
            replica.process.send_signal(signal.SIGCONT)
        wait_until(redis_cluster.healthy, timeout=30, what="the replica to catch up")
        after = httpx.post(router.url + STORE, json=message, headers=headers)
        assert after.status_code == 200 and after.json()["duplicate"] is True, after.text
    finally:
        router.terminate()


def test_with_redis_wait_a_fresh_cluster_is_ready_only_once_writes_are_answered(
    tmp_path: Path,
) -> None:
    """A Cluster just formed, its replicas still waiting for their first
    sync, and `router api` with ROUTER_REDIS_WAIT=1 started at once: /readyz
    says not ready (naming the replicas not in sync) until every master its
    destination's shards live on has a replica in sync, the log says when it
    became writable, and every POST sent right after /readyz turns 200, to
    shards on every master, is answered 200 (a replica not in sync made the
    first ones wait out the deadline and answer 503)."""
    # The first sync held back until the router said it is not ready (a
    # fixed delay ran out before a loaded machine had the router up).
    cluster = Cluster(tmp_path / "fresh", sync_delay=300)
    try:
        cluster.start(synced=False)
        routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot", shards=6)
        router = RouterProcess(
            tmp_path / "router.log",
            command="api",
            REDIS_URL=cluster.url,
            ROUTES_FILE=str(routes),
            ROUTER_REDIS_WAIT="1",
        ).start(wait=False)
        answers: list[httpx.Response] = []

        def ready() -> bool:
            assert router.alive(), router.log_tail()
            try:
                answers.append(httpx.get(router.url + "/readyz", timeout=2))
            except httpx.HTTPError:
                return False  # not listening yet
            if len(answers) == 1 and answers[0].status_code == 503:
                cluster.release_sync()
            return answers[-1].status_code == 200

        try:
            wait_until(ready, timeout=60, what="/readyz 200")
            assert cluster.healthy()  # every replica in sync by then
            # Not ready before, for the replicas' sync, said in the body.
            assert answers and answers[0].status_code == 503, answers
            reason = answers[0].json()["redis"]
            assert "has 0 of its 1 replica(s) in sync" in reason, answers[0].text
            keys = [f"4491{i:07d}" for i in range(30)]
            assert {shard_of(k, 6) for k in keys} == set(range(6))  # every master
            with httpx.Client(base_url=router.url, timeout=10) as client:
                for key in keys:
                    r = client.post(STORE, json={"mensaje": "first", "wa_id": key})
                    assert r.status_code == 200, (key, r.text)
            assert "INFO router: Redis writable: every master" in router.log_text()
        finally:
            router.terminate()
    finally:
        cluster.stop()


def test_readyz_says_when_redis_wait_cannot_be_met(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """ROUTER_REDIS_WAIT=1 on a Redis without replicas: every write would
    wait out the deadline and answer 503; /readyz says why."""
    routes = write_routes(tmp_path / "r.yaml", "http://127.0.0.1:9/bot")
    server = serve(own_redis.url, routes, redis_wait=1)
    try:
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["redis"] == (
            "ROUTER_REDIS_WAIT=1, but the Redis primary has 0 replica(s) connected: every "
            "write waits out the ingest deadline and answers 503 (stored, not yet replicated); "
            "connect replicas or lower ROUTER_REDIS_WAIT"
        )
    finally:
        server.stop()


def test_with_redis_wait_one_redis_is_ready_once_its_replica_is_in_sync(
    own_redis: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ROUTER_REDIS_WAIT=1 on one Redis whose replica is connected but
    still waiting for its first sync: not ready, naming the replica's
    state; ready once it is in sync (and the log says writable), and the
    first POST then is answered 200."""
    with redis_sync.Redis.from_url(own_redis.url) as primary:
        primary.config_set("repl-diskless-sync-delay", 3)  # the first sync held 3 s
    replica = EmbeddedRedis(tmp_path / "replica", port=free_port(), appendonly=False)
    replica.start()
    routes = write_routes(tmp_path / "r.yaml", "http://127.0.0.1:9/bot")
    server = None
    try:
        with redis_sync.Redis.from_url(replica.url) as r:
            r.replicaof("127.0.0.1", own_redis.port)
        with redis_sync.Redis.from_url(own_redis.url) as primary:
            wait_until(
                lambda: primary.info("replication")["connected_slaves"] == 1,
                what="the replica connected",
            )
        with caplog.at_level(logging.INFO, logger="router"):
            server = serve(own_redis.url, routes, redis_wait=1)
            ready = httpx.get(server.url + "/readyz")
            assert ready.status_code == 503, ready.text
            assert "the Redis primary has 0 of its 1 replica(s) in sync" in ready.json()["redis"]
            wait_until(
                lambda: httpx.get(server.url + "/readyz").status_code == 200,
                timeout=30,
                what="/readyz 200",
            )
            # (A write whose WAIT stalls answers 503 after the deadline.)
            r = httpx.post(server.url + STORE, json={"mensaje": "m", "wa_id": "1"}, timeout=10)
            assert r.status_code == 200, r.text
            assert any(
                m.getMessage().startswith("Redis writable: every master") for m in caplog.records
            )
    finally:
        if server is not None:
            server.stop()
        replica.stop()


def test_a_whatsapp_post_is_stored_and_delivered_over_shards_on_every_master(
    cluster_url: str, redis_cluster: Cluster, bot: Bot, audit: Bot, tmp_path: Path
) -> None:
    """enqueue_many on a Cluster: one WhatsApp POST carries the messages of
    several senders, whose chatbot shards live on different masters, and
    their statuses, routed to another destination (its own slots). Written
    slot by slot, every message is stored once, delivered in order per
    sender, and Meta's redelivery of the same POSTs stores nothing again."""
    routes = write_yaml(
        tmp_path,
        f"""
        routes:
          - path: {wa.PATH}
            format: whatsapp
            format_options: {{verify_token: t, app_secret: {wa.SECRET}, statuses: receipts}}
            destinations: [chatbot]
        destinations:
          chatbot:
            plugin: chatbot
            url: {bot.url}
            ordering_key: wa_id
            shards: 6
            timeout: 2s
            lease: 5s
            retry: {{initial: 50ms, max_delay: 400ms}}
          receipts:
            plugin: http
            url: {audit.url}
            ordering_key: wa_id
            shards: 3
            timeout: 2s
            lease: 5s
            retry: {{initial: 50ms, max_delay: 400ms}}
        """,
    )
    # Two senders on each of the 6 shards (2 shards per master).
    by_shard: dict[int, list[str]] = {}
    for i in range(1000):
        by_shard.setdefault(shard_of(f"4477009{i:05d}", 6), []).append(f"4477009{i:05d}")
    senders = [s for n in range(6) for s in by_shard[n][:2]]
    shards = all_shards("chatbot", 6)
    masters = {redis_cluster.master_of(shards[shard_of(s, 6)].tag).port for s in senders}
    assert len(masters) == 3  # the case at stake: one POST's writes on every master
    sent: dict[str, list[str]] = {s: [] for s in senders}
    posts = []
    for n in range(3):
        messages = []
        for s in senders:
            sent[s].append(f"{s}-{n}")
            messages.append(wa.text(s, f"wamid.{s}.{n}", f"{s}-{n}"))
        state = ("sent", "delivered", "read")[n]
        receipts = [wa.status(f"wamid.out.{s}", state, s) for s in senders[:4]]
        posts.append(
            json.dumps(wa.envelope([wa.value(messages), wa.value(statuses=receipts)])).encode()
        )
    router = _started(tmp_path, cluster_url, routes)
    try:
        for body in posts:
            r = httpx.post(router.url + wa.PATH, content=body, headers=wa.signed(body))
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["skipped"] == 0 and len(answer["messages"]) == len(senders) + 4
            assert not any(m["duplicate"] for m in answer["messages"])
        total = 3 * len(senders)
        wait_until(lambda: len(bot.acknowledged()) >= total, timeout=60, what="chatbot deliveries")
        wait_until(lambda: len(audit.acknowledged()) >= 12, timeout=60, what="status deliveries")
        assert check_order(sent, bot.acknowledged()) == (0, 0)
        steps: dict[str, list[str]] = {}
        for received in audit.acknowledged():
            steps.setdefault(received.body["recipient_id"], []).append(received.body["status"])
        assert steps == {s: ["sent", "delivered", "read"] for s in senders[:4]}
        # Meta's redelivery of the same POSTs: duplicates, nothing stored again.
        for body in posts:
            again = httpx.post(router.url + wa.PATH, content=body, headers=wa.signed(body)).json()
            assert all(m["duplicate"] for m in again["messages"]), again
    finally:
        router.terminate()
    assert len(bot.acknowledged()) == 3 * len(senders)
    assert len(audit.acknowledged()) == 12


def test_a_username_user_is_delivered_and_a_malformed_item_kept_on_a_cluster(
    cluster_url: str, bot: Bot, tmp_path: Path
) -> None:
    """On a Cluster the kept items live under the route's own hash tag (one
    slot per script) and the list of routes beside it: a POST with a BSUID
    message and a message with no sender is answered 200, the first is
    delivered keyed by its BSUID, the second kept, listed and purged."""
    routes = write_yaml(
        tmp_path,
        f"""
        routes:
          - path: {wa.PATH}
            format: whatsapp
            format_options: {{verify_token: t, app_secret: {wa.SECRET}}}
            destinations: [chatbot]
        destinations:
          chatbot:
            plugin: chatbot
            url: {bot.url}
            ordering_key: wa_id
            shards: 3
            timeout: 2s
            lease: 5s
        """,
    )
    bsuid = "US.13491208655302741918"
    username = {**wa.text("", "wamid.U1", "hola"), "from_user_id": bsuid}
    nobody = wa.text("", "wamid.X1", "nadie")
    body = json.dumps(wa.envelope([wa.value([username, nobody])])).encode()
    router = _started(tmp_path, cluster_url, routes)
    try:
        r = httpx.post(router.url + wa.PATH, content=body, headers=wa.signed(body))
        assert r.status_code == 200, r.text
        assert r.json()["skipped"] == 1 and len(r.json()["messages"]) == 1
        wait_until(lambda: bot.acked_messages(bsuid) == ["hola"], what="the BSUID message")
        cli = {"REDIS_URL": cluster_url}
        listed = run_cli("--routes", str(routes), "unroutable", "list", wa.PATH, "--json", **cli)
        assert listed.returncode == 0, listed.stderr
        assert [json.loads(line)["item"] for line in listed.stdout.splitlines()] == [nobody]
        status = run_cli("--routes", str(routes), "status", **cli)
        assert status.returncode == 0, status.stderr
        assert next(line for line in status.stdout.splitlines() if wa.PATH in line).split()[
            -2:
        ] == ["1", "0"]
        purged = run_cli("--routes", str(routes), "unroutable", "purge", wa.PATH, **cli)
        assert "purged 1" in purged.stdout, purged.stderr
    finally:
        router.terminate()
