"""routes.yaml written to hurt, refused by `router check` as a process:
quickly, with one line naming the place."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from router.config import MAX_ALIAS_EXPANSION
from tests.support.processes import run_cli
from tests.support.routes import write_yaml
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
