"""The environment, validated at the start of `router check` as a process
with one line (as routes.yaml is)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.settings import Settings, SettingsError
from tests.support.processes import run_cli
from tests.support.routes import routes_file


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("PORT", "abc", "1 to 65535"),
        ("PORT", "70000", "1 to 65535"),
        ("LOG_LEVEL", "loud", "debug, info, warning, error"),
        ("ROUTER_APPENDFSYNC", "sometimes", "always, everysec, no"),
        ("ROUTER_SHUTDOWN_GRACE", "soon", "seconds"),
        ("ROUTER_INGEST_DEADLINE", "0", "more than 0"),
        ("ROUTER_WORKERS", "maybe", "1/true/yes/on"),
        ("ROUTER_MAX_PENDING_CONNECTIONS", "-1", "at least 1"),
        ("REDIS_URL", "localhost:6379", "redis://"),
    ],
)
def test_a_bad_value_refuses_to_start_with_one_line(
    tmp_path: Path, name: str, value: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert f"{name}={value!r}" in str(caught.value) and allowed in str(caught.value)
    routes = routes_file(tmp_path / "routes.yaml")
    done = run_cli("--routes", str(routes), "check", **{name: value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("router: environment error: ") and name in lines[0]
