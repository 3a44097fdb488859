"""`router check` as a process on an amqp destination (docs/amqp.md): the
URL's password is starred in what it shows, and a bad option is one line
naming it, exit 2. The check builds the sink and closes it without
connecting: no broker needed."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import run_cli
from tests.support.routes import write_yaml
from tests.unit.test_amqp_options import PASSWORD, ROUTES

GOOD = f"""\
    url: amqp://router:{PASSWORD}@127.0.0.1:5672/
    routing_key: "conv.{{key}}"
"""


def test_router_check_accepts_and_hides_the_password(tmp_path: Path) -> None:
    routes = write_yaml(tmp_path, ROUTES + GOOD)
    result = run_cli("--routes", str(routes), "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "plugin amqp -> amqp://router:***@127.0.0.1:5672/" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_router_check_refuses_a_bad_url_and_a_missing_routing_key(tmp_path: Path) -> None:
    for options, says in (
        (GOOD.replace("amqp://", "amqp:/"), "destinations.rabbit.url: must start with amqp://"),
        (GOOD.splitlines()[0] + "\n", "missing required field `routing_key`"),
    ):
        routes = write_yaml(tmp_path, ROUTES + options)
        result = run_cli("--routes", str(routes), "check", cwd=tmp_path)
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"router: config error: {routes}:") and says in line, line
        assert PASSWORD not in result.stdout + result.stderr
