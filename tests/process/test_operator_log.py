"""Every operator action, from the CLI or the admin API, logged once
across the running `router` processes (router.queue.operator_log)."""

from __future__ import annotations

import getpass
import re
import socket
from pathlib import Path

import httpx
from redis import Redis

from router.queue.keys import operator_log_key
from router.queue.operator_log import GROUP
from tests.support.processes import RouterProcess, run_cli
from tests.support.routes import write_routes
from tests.support.servers import wait_until

TOKEN = "operator-log-admin-token-0123456789"


def test_a_cli_retry_is_logged_once_across_the_server_processes(
    tmp_path: Path, clean_redis: str, redis: Redis
) -> None:
    """`router retry` acts on Redis directly: one of the running processes
    (here a `serve` and a `worker`) logs it, and only one."""
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot")
    env = {"REDIS_URL": clean_redis, "ROUTES_FILE": str(routes)}
    serve = RouterProcess(
        tmp_path / "serve.log", die_with_parent=True, ROUTER_ADMIN_TOKEN=TOKEN, **env
    ).start()
    worker = RouterProcess(
        tmp_path / "worker.log", command="worker", die_with_parent=True, **env
    ).start(wait=False)
    wait_until(lambda: "delivery workers started" in worker.log_text(), what="the worker")
    who = re.escape(f"{getpass.getuser()}@{socket.gethostname()}")
    retry = rf"operator: retry chatbot \(all waiting keys\) from cli {who}: \d+ resumed"
    resume = r"operator: resume chatbot from admin 127\.0\.0\.1: resumed"

    def logged(pattern: str) -> list[str]:
        return re.findall(pattern, serve.log_text() + worker.log_text())

    def retry_from_the_cli() -> None:
        done = run_cli("--routes", str(routes), "retry", "chatbot", REDIS_URL=clean_redis)
        assert done.returncode == 0, done.stderr

    def consumers() -> int:
        return len(redis.xinfo_consumers(operator_log_key(), GROUP))

    try:
        # The first action ever recorded makes the stream: both join its group.
        retry_from_the_cli()
        wait_until(lambda: len(logged(retry)) == 1, what="the first retry logged")
        wait_until(lambda: consumers() == 2, what="both processes reading the operator log")
        retry_from_the_cli()
        answer = httpx.post(
            serve.url + "/admin/destinations/chatbot/resume",
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status_code == 200, answer.text
        wait_until(
            lambda: len(logged(retry)) >= 2 and logged(resume) != [],
            what="the retries and the resume logged",
        )
        # Every entry acknowledged: none is handed to another process again.
        wait_until(lambda: redis.xpending(operator_log_key(), GROUP)["pending"] == 0)
        assert len(logged(retry)) == 2
        assert len(logged(resume)) == 1
    finally:
        serve.terminate()
        worker.terminate()
