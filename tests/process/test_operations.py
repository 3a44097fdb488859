"""Running it as an operator does, through real `router` processes:
`router status` / `retry` / `dead purge`, JSON logs with one line per
delivery attempt, and /metrics over several processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from tests.support.bot import Answer, Bot
from tests.support.messages import post_message
from tests.support.processes import RouterProcess, router_env, run_cli
from tests.support.routes import KEYS, write_routes, write_yaml
from tests.support.servers import free_port, wait_until

SLOW_RETRY = {"initial": "60s", "max_delay": "60s", "jitter": 0}


def _deliveries(text: str, outcome: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "router_deliveries_total" and s.labels["outcome"] == outcome:
                return s.value
    return 0.0


def test_status_retry_and_purge_from_the_command_line(
    start_router, bot: Bot, redis: Redis, clean_redis: str
) -> None:
    down = {"on": True}
    bot.decide = lambda m, n: (
        Answer(500, "bot down") if down["on"] or m.get("mensaje") == "poison" else Answer()
    )
    router = start_router(bot.url, retry=SLOW_RETRY)
    for i in range(3):
        post_message(router.url, "a", f"a{i}")
    post_message(router.url, "b/with slash", "b0")
    wait_until(lambda: redis.zcard(KEYS.delayed) == 2, what="both keys backing off")
    routes = str(router.routes_file)

    shown = run_cli("--routes", routes, "status", "--json", REDIS_URL=clean_redis)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)["chatbot"]
    assert (status["messages"], status["delayed"], status["ready"]) == (4, 2, 0)
    assert status["oldest_age_seconds"] > 0 and status["paused"] is False
    assert status["rate_per_second"] == 0

    table = run_cli("--routes", routes, "status", REDIS_URL=clean_redis)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if "chatbot" in line).split()
    assert row[:7] == ["chatbot", "4", "0", "0", "2", "0", "0"]

    key = run_cli(
        "--routes", routes, "status", "chatbot", "b/with slash", "--json", REDIS_URL=clean_redis
    )
    assert key.returncode == 0, key.stderr
    state = json.loads(key.stdout)
    assert (state["state"], state["messages"], state["attempts"]) == ("waiting", 1, 1)
    assert "HTTP 500" in state["last_error"] and state["next_try_ms"] is not None

    # One destination: its conversations whose head has waited longest, oldest first.
    one = run_cli("--routes", routes, "status", "chatbot", "--json", REDIS_URL=clean_redis)
    assert one.returncode == 0, one.stderr
    waiting = json.loads(one.stdout)["chatbot"]["waiting_longest"]
    assert [(w["key"], w["state"], w["messages"], w["attempts"]) for w in waiting] == [
        ("a", "waiting", 3, 1),
        ("b/with slash", "waiting", 1, 1),
    ]
    assert waiting[0]["head_arrival_ms"] <= waiting[1]["head_arrival_ms"]
    assert "HTTP 500" in waiting[0]["last_error"]
    shown_one = run_cli("--routes", routes, "status", "chatbot", REDIS_URL=clean_redis).stdout
    lines = shown_one.splitlines()
    below = lines[next(i for i, line in enumerate(lines) if "waiting longest" in line) :]
    rows = [line.split() for line in below if line.split()[:1] in (["a"], ["b/with"])]
    assert [r[:2] for r in rows] == [["a", "waiting"], ["b/with", "slash"]]

    # The bot is fixed: nobody waits out the 60 s backoff.
    down["on"] = False
    retried = run_cli("--routes", routes, "retry", "chatbot", REDIS_URL=clean_redis)
    assert retried.returncode == 0, retried.stderr
    assert "2 waiting key(s) of chatbot made due now" in retried.stdout
    wait_until(lambda: bot.acked_messages("a") == ["a0", "a1", "a2"], timeout=10, what="a")
    wait_until(lambda: bot.acked_messages("b/with slash") == ["b0"], timeout=10, what="b")

    # A dead letter, purged.
    redis.delete(KEYS.dead)
    router.stop()
    router = start_router(bot.url, retry={**SLOW_RETRY, "max_attempts": 1})
    post_message(router.url, "c", "poison")
    wait_until(lambda: redis.llen(KEYS.dead) == 1, what="a dead letter")
    purged = run_cli("--routes", routes, "dead", "purge", "chatbot", REDIS_URL=clean_redis)
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 dead letter(s)" in purged.stdout
    assert redis.llen(KEYS.dead) == 0


def test_operator_commands_need_no_unrelated_secret(
    tmp_path: Path, clean_redis: str, redis: Redis
) -> None:
    """A destination's secret or URL unset where the operator runs the
    command: `status`, `pause`, `dead list` still work; `check` names it."""
    routes = write_yaml(
        tmp_path,
        """
routes:
  - path: /in
    destinations: [chatbot, crm]
destinations:
  chatbot:
    plugin: chatbot
    url: ${BOT_URL_NOT_SET_HERE}
    shards: 2
    max_in_flight: 4
  crm:
    plugin: http
    url: https://crm.example/hook
    headers:
      Authorization: Bearer ${CRM_TOKEN_NOT_SET_HERE}
""",
    )
    checked = run_cli("--routes", str(routes), "check")
    assert checked.returncode == 2
    assert "BOT_URL_NOT_SET_HERE" in checked.stderr
    for args in (["status", "--json"], ["pause", "crm"], ["dead", "list", "chatbot"]):
        done = run_cli("--routes", str(routes), *args, REDIS_URL=clean_redis)
        assert done.returncode == 0, (args, done.stderr)
    status = json.loads(
        run_cli("--routes", str(routes), "status", "--json", REDIS_URL=clean_redis).stdout
    )
    assert set(status) == {"chatbot", "crm"} and status["crm"]["paused"] is True
    unknown = run_cli("--routes", str(routes), "status", "nope", REDIS_URL=clean_redis)
    assert unknown.returncode == 2 and "no destination named 'nope'" in unknown.stderr


def _run_logged(tmp_path: Path, routes: Path, redis_url: str, bot: Bot, level: str) -> str:
    """Start `router serve` at LOG_LEVEL `level`, LOG_FORMAT=json; post one
    message of body `secret-<level>`, wait for its delivery; its log."""
    router = RouterProcess(
        tmp_path / f"{level}.log",
        REDIS_URL=redis_url,
        ROUTES_FILE=str(routes),
        LOG_FORMAT="json",
        LOG_LEVEL=level,
        die_with_parent=True,
    ).start()
    try:
        post_message(router.url, "k", f"secret-{level}")
        wait_until(lambda: f"secret-{level}" in bot.acked_messages("k"), what="the delivery")
    finally:
        assert router.terminate()[0] == 0
    return router.log_text()


def _records(text: str) -> list[dict[str, object]]:
    # Every line is one JSON object, uvicorn's and the router's alike.
    return [json.loads(line) for line in text.splitlines() if not line.startswith("--- start")]


def test_json_logs_one_line_per_attempt_and_warning_keeps_failures(
    tmp_path: Path, clean_redis: str, bot: Bot
) -> None:
    # The first attempt of the info run's message fails, all others succeed.
    bot.decide = lambda m, n: Answer(503) if m["mensaje"] == "secret-info" and n == 0 else Answer()
    routes = write_routes(tmp_path / "routes.yaml", bot.url)

    text = _run_logged(tmp_path, routes, clean_redis, bot, "info")
    records = _records(text)
    assert any(str(r["logger"]).startswith("uvicorn") for r in records)
    assert "secret-info" not in text  # bodies are never logged
    failed, ok = (r for r in records if "outcome" in r)
    assert (failed["level"], failed["outcome"], failed["attempt"]) == ("warning", "failed", 1)
    assert "HTTP 503" in str(failed["error"])
    assert (ok["level"], ok["outcome"], ok["attempt"], ok["message"]) == (
        "info",
        "ok",
        2,
        "delivered",
    )
    assert ok["message_id"] == failed["message_id"]
    for r in (failed, ok):
        assert (r["destination"], r["key"]) == ("chatbot", "k")
        assert isinstance(r["duration_ms"], float)
    assert "error" not in ok

    # At warning, a delivery that went well logs nothing about itself.
    records = _records(_run_logged(tmp_path, routes, clean_redis, bot, "warning"))
    assert all(r["level"] in ("warning", "error") for r in records)
    assert [r for r in records if "outcome" in r] == []


@pytest.mark.parametrize("processes", [2])
def test_metrics_add_up_every_process_of_one_port(
    tmp_path: Path, clean_redis: str, bot: Bot, processes: int
) -> None:
    routes = write_routes(tmp_path / "routes.yaml", bot.url)
    router = RouterProcess(
        tmp_path / "serve.log",
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(routes),
        ROUTER_PROCESSES=str(processes),
        LOG_LEVEL="warning",
        die_with_parent=True,
    ).start()
    try:
        with httpx.Client(base_url=router.url) as client:
            for i in range(40):  # new connections: spread over the processes
                r = client.post(
                    "/v1/store_message",
                    json={"mensaje": f"m{i}", "wa_id": f"k{i}"},
                    headers={"connection": "close"},
                )
                assert r.status_code == 200
        wait_until(lambda: len(bot.acknowledged()) == 40, what="40 deliveries")

        def counted() -> float:
            r = httpx.get(router.url + "/metrics", headers={"connection": "close"})
            return _deliveries(r.text, "ok")

        # (Counted once the bot has answered: a moment after it counts.)
        wait_until(lambda: counted() == 40, what="the 40 deliveries counted")
        # Whichever process answers, the counts are everyone's.
        seen = set()
        for _ in range(10):
            r = httpx.get(router.url + "/metrics", headers={"connection": "close"})
            assert r.status_code == 200
            seen.add(_deliveries(r.text, "ok"))
        assert seen == {40.0}
    finally:
        assert router.terminate()[0] == 0


def test_worker_serves_metrics_on_its_own_port(
    tmp_path: Path, clean_redis: str, bot: Bot, start_router
) -> None:
    api = start_router(bot.url, workers=False)
    for i in range(3):
        post_message(api.url, f"k{i}", f"m{i}")
    port = free_port()
    worker = RouterProcess(
        tmp_path / "worker.log",
        command="worker",
        REDIS_URL=clean_redis,
        ROUTES_FILE=str(api.routes_file),
        ROUTER_METRICS_PORT=str(port),
        ROUTER_METRICS_TOKEN="tok",
        die_with_parent=True,
    ).start(wait=False)
    try:
        wait_until(lambda: len(bot.acknowledged()) == 3, what="3 deliveries")
        url = f"http://127.0.0.1:{port}/metrics"
        assert httpx.get(url).status_code == 401
        text = httpx.get(url, headers={"Authorization": "Bearer tok"}).text
        assert _deliveries(text, "ok") == 3
        assert "router_queue_messages" in text
        # The scheme in any case, and wrong tokens throttled, as on the API.
        assert httpx.get(url, headers={"Authorization": "bearer tok"}).status_code == 200
        answers = [httpx.get(url, headers={"Authorization": "Bearer no"}) for _ in range(6)]
        assert [a.status_code for a in answers] == [401] * 5 + [429]
        assert answers[-1].headers["retry-after"] == "1"
    finally:
        assert worker.terminate()[0] == 0


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_status_watch_stops_at_the_first_sigint_while_reading_redis(
    tmp_path: Path, clean_redis: str, inherited: str
) -> None:
    """Refreshing as fast as it can (nearly all the time inside Redis
    reads), `status --watch` ends at one SIGINT, and also when started from
    a script that left SIGINT ignored (a background job of a non-interactive
    shell). Before: asyncio's Ctrl-C handling cancelled the main task, a
    cancellation landing inside a Redis read could be swallowed there, and
    with SIGINT ignored nothing happened at all: the watch ran on."""
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot")
    watch = subprocess.Popen(
        [sys.executable, "-m", "router", "--routes", str(routes), "status", "--watch", "0.001"],
        env=router_env(REDIS_URL=clean_redis),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(
            (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            if inherited == "ignored"
            else None
        ),
    )
    try:
        assert watch.stdout is not None
        seen = 0
        while seen < 20:  # the loop is running: 20 refreshes printed
            line = watch.stdout.readline()
            assert line, watch.stderr.read() if watch.stderr else ""
            seen += "queues at" in line
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
    assert watch.returncode == 0, err
    assert "Traceback" not in err


def test_status_watch_refreshes_until_interrupted(start_router, bot: Bot, clean_redis: str) -> None:
    router = start_router(bot.url)
    post_message(router.url, "k", "m")
    wait_until(lambda: bot.acked_messages("k") == ["m"], what="the delivery")
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router",
            "--routes",
            str(router.routes_file),
            "status",
            "--watch",
            "0.2",
        ],
        env=router_env(REDIS_URL=clean_redis),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        assert watch.stdout is not None
        while sum("queues at" in line for line in lines) < 3:  # piped: one table per refresh
            line = watch.stdout.readline()
            assert line, watch.stderr.read() if watch.stderr else ""
            lines.append(line)
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    assert "Traceback" not in err
    rows = [line.split() for line in lines if line.split()[:1] == ["chatbot"]]
    assert rows[0][:2] == ["chatbot", "0"] and rows[-1][8] != "-"  # a rate once there is a before
