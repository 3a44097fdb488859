"""routes.yaml: `router check` as a process refuses a bad file with one
line and exit 2, and accepts the shipped one."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import run_cli
from tests.support.routes import shipped_routes, write_yaml
from tests.unit.test_config import GOOD


def test_cli_check_refuses_a_bad_file_with_one_line_and_exit_2(tmp_path: Path) -> None:
    files = {
        "syntax.yaml": "routes: [\n",
        "plugin.yaml": GOOD.replace("plugin: chatbot", "plugin: telegram"),
        "unsafe.yaml": "routes: !!python/name:os.system\n",
    }
    for name, text in files.items():
        bad = write_yaml(tmp_path, text, name)
        result = run_cli("--routes", str(bad), "check", cwd=tmp_path)
        assert result.returncode == 2, (name, result)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith(f"router: config error: {bad}:"), lines
        assert result.stdout == ""
    result = run_cli("--routes", str(tmp_path / "nope.yaml"), "check", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_cli_check_accepts_the_shipped_routes_yaml() -> None:
    result = run_cli("--routes", str(shipped_routes()), "check", BOT_URL=None)
    assert result.returncode == 0, result.stderr
    assert "route /v1/store_message -> chatbot" in result.stdout
    assert result.stdout.rstrip().endswith(": ok")
