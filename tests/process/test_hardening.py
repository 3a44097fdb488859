"""What probing the router as an attacker and as an unlucky operator found
(issue 6), the cases that need `router` as a real process: an evicting
Redis at start, log lines, a process paused past its leases, slow clients
through `router serve`. (The others: tests/integration/test_hardening.py.)"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx
import redis as redis_sync

from router.redis.embedded import EmbeddedRedis
from tests.support.bot import Answer, Bot
from tests.support.processes import RouterProcess, run_cli
from tests.support.routes import STORE, routes_file, write_routes
from tests.support.servers import serve, wait_until

# -- 2. A Redis that evicts keys -------------------------------------------


def test_an_evicting_redis_refuses_to_start_with_one_line(own_redis: EmbeddedRedis, tmp_path):
    redis_sync.Redis.from_url(own_redis.url).config_set("maxmemory-policy", "allkeys-lru")
    routes = routes_file(tmp_path / "routes.yaml")
    for command in ("api", "worker"):
        done = run_cli("--routes", str(routes), command, REDIS_URL=own_redis.url, timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "allkeys-lru" in lines[0] and "noeviction" in lines[0]
        assert "ROUTER_ALLOW_EVICTION" in lines[0]


def test_an_evicting_redis_is_accepted_only_when_the_risk_is_accepted(
    own_redis: EmbeddedRedis, tmp_path: Path, bot: Bot
) -> None:
    redis_sync.Redis.from_url(own_redis.url).config_set("maxmemory-policy", "allkeys-lru")
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    process = RouterProcess(
        tmp_path / "router.log",
        REDIS_URL=own_redis.url,
        ROUTES_FILE=str(routes),
        ROUTER_ALLOW_EVICTION="1",
    )
    try:
        process.start()
        assert "allkeys-lru" in process.log_text() and "WARNING" in process.log_text()
    finally:
        process.kill()
    # /readyz of a router that does not accept the risk says why it is not ready.
    server = serve(own_redis.url, routes)
    try:
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503
        assert "allkeys-lru" in ready.json()["redis"]
    finally:
        server.stop()


def test_a_volatile_policy_starts_with_a_warning(own_redis: EmbeddedRedis, tmp_path, bot: Bot):
    redis_sync.Redis.from_url(own_redis.url).config_set("maxmemory-policy", "volatile-lru")
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    process = RouterProcess(
        tmp_path / "router.log", REDIS_URL=own_redis.url, ROUTES_FILE=str(routes)
    )
    try:
        process.start()
        warning = [line for line in process.log_text().splitlines() if "volatile-lru" in line]
        assert warning and "WARNING" in warning[0] and "dedup" in warning[0]
    finally:
        process.kill()


# -- 6. Log forging ----------------------------------------------------------


def test_control_characters_from_outside_cannot_forge_log_lines(
    tmp_path: Path, bot: Bot, clean_redis: str
):
    bot.decide = lambda m, n: Answer(status=500, body="x\n\x1b[31mred")
    routes = write_routes(tmp_path / "routes.yaml", bot.url, retry={"initial": "5s"})
    process = RouterProcess(tmp_path / "router.log", REDIS_URL=clean_redis, ROUTES_FILE=str(routes))
    try:
        process.start()
        forged = "1\n2026-01-01 00:00:00,000 ERROR router: forged\u2028line"
        r = httpx.post(process.url + STORE, json={"mensaje": "m", "wa_id": forged})
        assert r.status_code == 200
        wait_until(lambda: "attempt 1 failed" in process.log_text(), what="the failure line")
    finally:
        process.kill()
    log = process.log_text()
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())
    assert "\x1b" not in log and "\u2028" not in log
    failure = next(line for line in log.splitlines() if "attempt 1 failed" in line)
    assert "key 1\\n2026-01-01 00:00:00,000 ERROR router: forged\\u2028line" in failure
    assert "\\x1b[31mred" in failure


# -- 11. A process paused past its leases -------------------------------------


def test_a_process_resumed_after_losing_its_lease_logs_one_line(
    tmp_path: Path, bot: Bot, clean_redis: str
):
    """SIGSTOP a router mid-attempt past its lease; another takes the key
    over; after SIGCONT the first logs one clear line, no traceback."""
    bot.decide = lambda m, n: Answer(delay=8.0) if n == 0 else Answer()
    # timeout 1.5 s > lease/3: the attempt runs beside a lease-renewing task.
    routes = write_routes(tmp_path / "routes.yaml", bot.url, timeout="1500ms", lease="2s")
    first = RouterProcess(tmp_path / "first.log", REDIS_URL=clean_redis, ROUTES_FILE=str(routes))
    second = RouterProcess(tmp_path / "second.log", REDIS_URL=clean_redis, ROUTES_FILE=str(routes))
    try:
        first.start()
        assert httpx.post(first.url + STORE, json={"mensaje": "m", "wa_id": "1"}).is_success
        wait_until(lambda: len(bot.received) == 1, what="the first attempt")
        first.signal(signal.SIGSTOP)
        try:
            second.start()  # sweeps the expired lease and takes the key over
            # (the bot records a request when it arrives)
            wait_until(lambda: len(bot.received) == 2, timeout=30, what="the takeover")
        finally:
            first.signal(signal.SIGCONT)
        wait_until(
            lambda: "lease" in first.log_text().split("delivery workers started")[-1],
            timeout=15,
            what="the lease line",
        )
        time.sleep(1.0)
    finally:
        first.kill()
        second.kill()
    log = first.log_text()
    assert "Traceback" not in log and "never retrieved" not in log, log
    lines = [line for line in log.splitlines() if "lease" in line and "key 1" in line]
    assert len(lines) == 1, log


# -- 12. Slow clients, through `router serve` -------------------------------------


def test_router_serve_closes_connections_that_trickle_their_headers(
    tmp_path: Path, bot: Bot, clean_redis: str
) -> None:
    """The protocol of router/http/server.py (tested in depth in
    test_slow_clients.py) is the one `router serve` runs."""
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    process = RouterProcess(
        tmp_path / "router.log",
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        ROUTER_HEADER_TIMEOUT="1",
    )
    try:
        process.start()
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as slow:
            slow.sendall(b"POST /v1/store_message HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            answer = b""
            while chunk := slow.recv(4096):
                answer += chunk
            assert time.monotonic() - started < 8
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert json.loads(body)["status"] == "error"
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as bad:
            bad.sendall(b"POST /v1/store_message HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n")
            answer = b""
            while chunk := bad.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
        assert json.loads(body)["status"] == "error"
        # Complete headers, a body that stalls: 408, and the connection
        # closes (the rest of the body could not be told from a next request).
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as stalled:
            stalled.sendall(
                b"POST /v1/store_message HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            )
            answer = b""
            while chunk := stalled.recv(4096):  # returns b"" once the server closes
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert json.loads(body)["error"] == "request body not received within 1s"
    finally:
        process.kill()
