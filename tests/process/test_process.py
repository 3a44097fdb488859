"""`router serve` as a real process: crashes, graceful stops, the embedded server."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.support.bot import Answer, Bot, Received, check_order
from tests.support.messages import interleaved, post_round_robin
from tests.support.processes import RouterProcess
from tests.support.routes import KEYS, write_routes
from tests.support.servers import port_open, wait_until

StartProcess = Callable[..., RouterProcess]


@pytest.fixture()
def router_process(tmp_path: Path) -> Iterator[StartProcess]:
    """Start `router serve` processes; any still running at the end is killed."""
    started: list[RouterProcess] = []

    def start(**env: str | None) -> RouterProcess:
        p = RouterProcess(tmp_path / f"router{len(started)}.log", **env)
        started.append(p)
        return p.start()

    yield start
    for p in started:
        p.kill()


def _stored(start_router: Callable[..., Any], bot: Bot, routes: Path, sent: dict[str, list[str]]):
    """Store the messages through an API-only router, so delivery starts only
    when the process under test does."""
    api = start_router(bot.url, routes_file=routes, workers=False)
    post_round_robin(api.url, sent)
    return api


def _arrived(bot: Bot) -> list[Received]:
    """Acknowledged requests whose body arrived. A router killed between the
    headers and the body of a request leaves the bot an empty body, which it
    records (as `{}`) like any other request."""
    return [r for r in bot.acknowledged() if "wa_id" in r.body]


def _queue_empty(redis: Redis) -> bool:
    lanes = list(redis.scan_iter(match=KEYS.lane_prefix + "*"))
    return not lanes and redis.zcard(KEYS.leases) == 0 and redis.llen(KEYS.ready) == 0


def test_sigkill_mid_delivery_then_restart_loses_nothing(
    start_router, router_process: StartProcess, bot: Bot, redis: Redis, clean_redis: str, tmp_path
) -> None:
    bot.latency = (0.005, 0.02)
    routes = write_routes(tmp_path / "routes.yaml", bot.url, timeout="1s", lease="2s")
    sent = interleaved([f"k{i}" for i in range(10)], 20)  # 200 messages
    _stored(start_router, bot, routes, sent)
    env = {"REDIS_URL": clean_redis, "ROUTES_FILE": str(routes), "ROUTER_SHUTDOWN_GRACE": "2"}

    first = router_process(**env)
    wait_until(lambda: len(bot.acknowledged()) >= 30, timeout=20, what="deliveries")
    first.signal(signal.SIGKILL)
    assert first.wait(5) == -signal.SIGKILL
    at_kill = len(bot.acknowledged())
    assert at_kill < 200, "the process finished before it could be killed"

    router_process(**env)
    wait_until(lambda: check_order(sent, _arrived(bot))[0] == 0, timeout=30, what="all delivered")
    lost, duplicates = check_order(sent, _arrived(bot))
    assert lost == 0
    assert duplicates <= 10  # at most what was in flight: one per key
    assert bot.max_in_flight_per_key == 1
    wait_until(lambda: _queue_empty(redis), timeout=5, what="an empty queue")


def test_sigterm_finishes_in_flight_then_restart_delivers_the_rest(
    start_router, router_process: StartProcess, bot: Bot, redis: Redis, clean_redis: str, tmp_path
) -> None:
    bot.latency = (0.1, 0.3)
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    sent = interleaved([f"k{i}" for i in range(10)], 5)
    _stored(start_router, bot, routes, sent)
    grace = 2.0
    env = {"REDIS_URL": clean_redis, "ROUTES_FILE": str(routes), "ROUTER_SHUTDOWN_GRACE": "2"}

    first = router_process(**env)
    wait_until(lambda: len(bot.acknowledged()) >= 10, timeout=20, what="deliveries")
    first.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert first.wait(grace + 5) == 0, first.log_text()
    assert time.monotonic() - t0 < grace + 5
    time.sleep(0.4)  # anything still running in the bot would finish now
    delivered = len(bot.acknowledged())
    assert delivered < 50, "the process finished before it was stopped"
    assert "stopping workers" in first.log_text()
    # Whatever was in flight finished within the grace and was acknowledged.
    assert check_order(sent, bot.acknowledged()) == (50 - delivered, 0)
    # Nothing left leased: a restart need not wait for leases to run out.
    assert redis.zcard(KEYS.leases) == 0, redis.zrange(KEYS.leases, 0, -1)

    router_process(**env)
    wait_until(
        lambda: check_order(sent, bot.acknowledged())[0] == 0, timeout=30, what="all delivered"
    )
    assert check_order(sent, bot.acknowledged()) == (0, 0)
    assert bot.max_in_flight_per_key == 1


def test_sigterm_past_the_grace_hands_deliveries_back(
    start_router, router_process: StartProcess, bot: Bot, redis: Redis, clean_redis: str, tmp_path
) -> None:
    """Deliveries longer than the grace are cancelled and their keys handed
    back untried: a restarted router takes them at once, without waiting for
    the lease to run out."""
    tried: set[str] = set()

    def decide(message: dict[str, Any], n: int) -> Answer:
        first_try = message["mensaje"] not in tried
        tried.add(message["mensaje"])
        return Answer(delay=2.0 if first_try else 0.0)

    bot.decide = decide
    routes = write_routes(tmp_path / "routes.yaml", bot.url, timeout="3s", lease="30s")
    sent = interleaved(["a", "b", "c", "d"], 3)
    _stored(start_router, bot, routes, sent)
    env = {"REDIS_URL": clean_redis, "ROUTES_FILE": str(routes), "ROUTER_SHUTDOWN_GRACE": "0.5"}

    first = router_process(**env)
    wait_until(lambda: len(bot.received) >= 4, timeout=20, what="4 deliveries in flight")
    first.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert first.wait(0.5 + 5) == 0, first.log_text()
    assert time.monotonic() - t0 < 0.5 + 5
    assert "handed 4 in-flight deliveries back" in first.log_text()
    assert redis.zcard(KEYS.leases) == 0
    assert redis.llen(KEYS.ready) == 4

    t1 = time.monotonic()
    router_process(**env)
    wait_until(
        lambda: check_order(sent, bot.acknowledged())[0] == 0, timeout=25, what="all delivered"
    )
    assert time.monotonic() - t1 < 25  # well before the 30s lease
    retried = [r for r in bot.received[4:] if r.body["mensaje"].endswith("-0")]
    assert {r.body["mensaje"] for r in retried} == {"a-0", "b-0", "c-0", "d-0"}
    assert all(r.headers["x-router-attempt"] == "1" for r in retried)  # untried, not failed


def test_embedded_server_follows_the_router_and_keeps_the_data(
    router_process: StartProcess, bot: Bot, tmp_path: Path
) -> None:
    accept = False
    bot.decide = lambda m, n: Answer() if accept else Answer(status=503, body="not yet")
    data = tmp_path / "data"
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    env = {"ROUTES_FILE": str(routes), "ROUTER_DATA_DIR": str(data)}

    first = router_process(**env)
    assert "REDIS_URL not set: started embedded Valkey" in first.log_text()
    valkey_port = int((data / "redis.url").read_text().strip().rsplit(":", 1)[1].split("/")[0])
    assert port_open(valkey_port)
    r = httpx.post(first.url + "/v1/store_message", json={"mensaje": "keep me", "wa_id": "1"})
    assert r.status_code == 200, r.text
    message_id = r.json()["id"]
    wait_until(lambda: len(bot.received) >= 2, timeout=10, what="failing attempts")

    first.signal(signal.SIGKILL)
    first.wait(5)
    wait_until(lambda: not port_open(valkey_port), timeout=5, what="the embedded server to exit")
    assert list(data.glob("appendonlydir/*")) or list(data.glob("*.aof"))

    accept = True
    second = router_process(**env)
    assert second.log_text().count("started embedded Valkey") == 1  # its own log file
    wait_until(lambda: bot.acked_messages() == ["keep me"], timeout=15, what="delivery")
    assert bot.acknowledged()[0].headers["idempotency-key"] == message_id
    time.sleep(0.3)
    assert bot.acked_messages() == ["keep me"]


def test_serve_with_reload_serves_with_the_guarded_protocol(
    bot: Bot, clean_redis: str, tmp_path: Path
) -> None:
    # --reload runs the server in a spawned child that imports its protocol
    # class by name (it crashed once: a built class cannot be pickled).
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    router = RouterProcess(
        tmp_path / "reload.log",
        args=("--reload",),
        own_group=True,
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        ROUTER_HEADER_TIMEOUT="1",
    )
    try:
        router.start()
        r = httpx.post(router.url + "/v1/store_message", json={"mensaje": "hi", "wa_id": "1"})
        assert r.status_code == 200, r.text
        wait_until(lambda: len(bot.acknowledged()) == 1, timeout=20, what="the delivery")
        # The child's protocol has the environment's header deadline.
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as conn:
            conn.sendall(b"POST /v1/store_message HTTP/1.1\r\nHost: x\r\n")
            answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"request headers not received within 1s" in answer
        code, _ = router.terminate(timeout=30)
        assert code == 0, router.log_tail()
        assert not port_open(router.port)
    finally:
        router.kill()


def test_several_processes_on_one_port_keep_order_and_stop_cleanly(
    bot: Bot, clean_redis: str, tmp_path: Path
) -> None:
    """ROUTER_PROCESSES=2: two server processes, each with delivery workers,
    share the port and the queue; per-key order and max_in_flight hold
    across them; SIGTERM stops them all with exit 0."""
    bot.latency = (0.0, 0.01)
    routes = write_routes(tmp_path / "routes.yaml", bot.url, max_in_flight=4)
    router = RouterProcess(
        tmp_path / "processes.log",
        own_group=True,
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        ROUTER_PROCESSES="2",
        ROUTER_HEADER_TIMEOUT="1",
    )
    try:
        router.start()
        sent = interleaved([f"k{i}" for i in range(8)], per_key=15)
        post_round_robin(router.url, sent)
        total = sum(len(m) for m in sent.values())
        wait_until(lambda: len(bot.acknowledged()) >= total, timeout=60, what="all delivered")
        assert check_order(sent, bot.acknowledged()) == (0, 0)
        assert bot.max_in_flight_per_key == 1
        assert bot.max_in_flight <= 4  # the destination's cap, across both processes
        # Both processes start their workers (on a loaded machine the second
        # may still be starting when the first has delivered everything).
        wait_until(
            lambda: router.log_text().count("delivery workers started") == 2,
            timeout=30,
            what="delivery workers in both processes",
        )
        # Each child runs the guarded protocol with the environment's settings.
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as conn:
            conn.sendall(b"POST /v1/store_message HTTP/1.1\r\nHost: x\r\n")
            assert b"request headers not received within 1s" in conn.recv(4096)
        code, _ = router.terminate(timeout=60)
        assert code == 0, router.log_tail()
        assert not port_open(router.port)
    finally:
        router.kill()
