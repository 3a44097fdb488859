"""routes.yaml written to hurt, refused by `router check` as a process:
quickly, with one line naming the place."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from router.config import MAX_ALIAS_EXPANSION, MAX_ROUTES_FILE
from tests.support.processes import run_cli
from tests.support.routes import write_routes, write_yaml
from tests.unit.test_config_hostile import billion_laughs


def run_check(routes: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`router check` in a real process; a hang fails the test at 20 s."""
    started = time.monotonic()
    result = run_cli("--routes", str(routes), "check", cwd=routes.parent, timeout=20)
    return result, time.monotonic() - started


def test_a_yaml_bomb_is_refused_quickly_by_router_check(tmp_path: Path) -> None:
    bomb = write_yaml(tmp_path, billion_laughs())
    result, took = run_check(bomb)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # a: 0, b: 90, c: 819, d: 7380 repeated values; e (line 5) passes the bound.
    assert lines[0].startswith(f"router: config error: {bomb}:5: e: "), lines
    assert f"more than {MAX_ALIAS_EXPANSION} values" in lines[0]
    assert "aliases" in lines[0] and "write it out without aliases" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert took < 10, f"router check took {took:.1f}s"


@pytest.mark.parametrize(
    ("dest", "route", "place", "most"),
    [
        ({"rate_limit": {"requests": 10, "period": 10**17}}, {}, "rate_limit.period", "1d"),
        ({"rate_limit": {"requests": 10**12}}, {}, "rate_limit.requests", "1,000,000"),
        ({"rate_limit": {"requests": 10, "burst": 10**9}}, {}, "rate_limit.burst", "1,000,000"),
        ({"timeout": "2d", "lease": "3d"}, {}, "timeout", "1h"),
        ({"lease": 10**17}, {}, "lease", "1d"),
        ({"retry": {"initial": "1s", "max_delay": "400d"}}, {}, "retry.max_delay", "1d"),
        ({"retry": {"max_age": "9999d"}}, {}, "retry.max_age", "365d"),
        ({"circuit_breaker": {"window": "30d"}}, {}, "circuit_breaker.window", "1d"),
        ({"circuit_breaker": {"max_hold": 10**17}}, {}, "circuit_breaker.max_hold", "1d"),
        ({}, {"rate_limit": {"requests": 5, "period": 10**17}}, "rate_limit.period", "1d"),
        ({}, {"dedup_ttl": "1000d"}, "dedup_ttl", "365d"),
    ],
)
def test_a_duration_or_rate_past_its_maximum_is_refused_by_router_check(
    tmp_path: Path, dest: dict[str, Any], route: dict[str, Any], place: str, most: str
) -> None:
    """A rate_limit.period of 10**17 s passed `router check`, then nothing was
    ever delivered; an expiry past 64 bits made Redis refuse every write."""
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot", route=route, **dest)
    result, _ = run_check(routes)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    where = "routes[0]" if route else "destinations.chatbot"
    assert f": {where}.{place}: must be at most {most}" in lines[0], lines
    assert "Traceback" not in result.stderr


def test_the_largest_allowed_values_pass_router_check(tmp_path: Path) -> None:
    dest = {
        "timeout": "1h",
        "lease": "1d",
        "retry": {"initial": "1d", "max_delay": "1d", "max_age": "365d"},
        "rate_limit": {"requests": 1_000_000, "period": "1d", "burst": 1_000_000},
    }
    route = {"dedup_ttl": "365d", "rate_limit": {"requests": 1_000_000, "period": "1d"}}
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot", route=route, **dest)
    result, _ = run_check(routes)
    assert result.returncode == 0, result.stderr


def test_routes_file_dev_zero_stops_serve_at_once_with_one_line(tmp_path: Path) -> None:
    """ROUTES_FILE=/dev/zero was read until memory ran out. (run_cli's
    timeout bounds the run; no tighter bound on the time: a loaded machine
    starts Python slowly, and the refusal's text says what was read.)"""
    result = run_cli("serve", cwd=tmp_path, timeout=60, ROUTES_FILE="/dev/zero")
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        "router: config error: /dev/zero: cannot read the routes file: not a regular file "
        "(a device, a pipe or a directory); point ROUTES_FILE or --routes at routes.yaml"
    ]
    assert not (tmp_path / "data").exists()  # refused before the embedded server started


def test_a_pipe_a_directory_or_a_huge_file_is_refused_by_router_check(tmp_path: Path) -> None:
    fifo = tmp_path / "routes.fifo"  # nobody writes it: opening it must not hang
    os.mkfifo(fifo)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# " + b"x" * MAX_ROUTES_FILE + b"\n")
    cases = {fifo: "not a regular file", tmp_path: "not a regular file", huge: "larger than 1 MiB"}
    for path, words in cases.items():
        result, took = run_check(path)
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"config error: {path}: " in lines[0] and words in lines[0]
        assert took < 10
    # Just under the cap is read (and judged on its content as usual).
    routes = write_routes(tmp_path / "routes.yaml", "http://127.0.0.1:9/bot")
    text = routes.read_text()
    routes.write_text(text + "#" * (MAX_ROUTES_FILE - len(text) - 2) + "\n")
    result, _ = run_check(routes)
    assert result.returncode == 0, result.stderr
