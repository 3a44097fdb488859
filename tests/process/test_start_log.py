"""What a starting process logs about where messages go and which
endpoints are on, and a reload about what it changed, from real `router`
processes (router.runtime.start_log)."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.processes import RouterProcess
from tests.support.routes import write_yaml
from tests.support.servers import free_port, wait_until

TOKEN = "start-log-admin-token-0123456789"

ROUTES = """
routes:
  - path: /in
    destinations: [chatbot, crm]
destinations:
  chatbot:
    plugin: chatbot
    url: http://bot-user:pw-in-userinfo@127.0.0.1:9/bot-path-token/hook?key=query-token
    ordering_key: wa_id
    max_in_flight: 4
  crm:
    plugin: http
    url: https://crm.example:8443/hooks/path-token
    shards: 2
"""


def _lines(router: RouterProcess, start: str) -> list[str]:
    return [line for line in router.log_text().splitlines() if f" {start}" in line]


def test_start_lines_say_where_messages_go_and_which_endpoints_are_on(
    tmp_path: Path, clean_redis: str
) -> None:
    routes = write_yaml(tmp_path, ROUTES)
    env = {"REDIS_URL": clean_redis, "ROUTES_FILE": str(routes)}
    serve = RouterProcess(tmp_path / "serve.log", die_with_parent=True, **env).start()
    api = RouterProcess(
        tmp_path / "api.log", command="api", die_with_parent=True, ROUTER_ADMIN_TOKEN=TOKEN, **env
    ).start()
    metrics_port = free_port()
    worker = RouterProcess(
        tmp_path / "worker.log",
        command="worker",
        die_with_parent=True,
        ROUTER_METRICS_PORT=str(metrics_port),
        **env,
    ).start(wait=False)
    try:
        wait_until(lambda: "delivery workers started" in worker.log_text(), what="the worker")
        for router in (serve, api, worker):
            text = router.log_text()
            dest = [line.split(": ", 1)[1] for line in _lines(router, "router: destination ")]
            assert dest == [
                "destination chatbot: plugin chatbot -> 127.0.0.1:9, ordered by wa_id, "
                "max_in_flight 4",
                "destination crm: plugin http -> crm.example:8443, ordered by "
                "(one global order), max_in_flight 16, 2 shards",
            ], text
            for secret in ("pw-in-userinfo", "bot-user", "path-token", "query-token"):
                assert secret not in text
        (served,) = _lines(serve, "serving ")
        assert served.endswith(
            f"serving http://127.0.0.1:{serve.port}: ingest POST /in; /healthz, /readyz on; "
            "/metrics on; /admin off (no ROUTER_ADMIN_TOKEN); /ui off (no ROUTER_ADMIN_TOKEN); "
            "delivery workers on"
        ), served
        (served,) = _lines(api, "serving ")
        assert "/admin on; /ui on; delivery workers off (run router worker)" in served
        (served,) = _lines(worker, "delivery workers on")
        assert served.endswith(f"delivery workers on; /metrics on http://127.0.0.1:{metrics_port}")

        # A reload says what it changed, and the changed destination's line.
        routes.write_text(ROUTES.replace("max_in_flight: 4", "max_in_flight: 32"))
        serve.signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: reloaded" in serve.log_text(), what="the reload")
        (changed,) = _lines(serve, "SIGHUP: reloaded")
        assert changed.endswith("destinations changed: chatbot"), changed
        (line,) = _lines(serve, "SIGHUP: destination ")
        assert line.endswith(
            "SIGHUP: destination chatbot: plugin chatbot -> 127.0.0.1:9, ordered by wa_id, "
            "max_in_flight 32"
        ), line
    finally:
        for router in (serve, api, worker):
            router.terminate()
