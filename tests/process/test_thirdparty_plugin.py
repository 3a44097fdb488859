"""A third-party plugin through the real path: pip-installed into a
throwaway directory and found through the `router` entry-point group by
`router` processes."""

from __future__ import annotations

from pathlib import Path

from router.config.plugins import plugin_manager, sink_types
from tests.support.plugin import install_into, write_recorder_routes
from tests.support.processes import run_cli


def test_the_entry_point_path_finds_an_installed_plugin(tmp_path: Path, clean_redis: str) -> None:
    """pip install (into a directory of its own), and the router finds it:
    listed, validated, and delivering from a separate process."""
    env = install_into(tmp_path / "site")
    listed = run_cli("plugins", **env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.startswith("recorder: ") for line in lines), listed.stdout
    assert any(line.startswith("chatbot: ") for line in lines), listed.stdout  # still there

    out = tmp_path / "recorded.jsonl"
    routes = write_recorder_routes(tmp_path / "routes.yaml", file=str(out))
    check = run_cli("--routes", str(routes), "check", **env)
    assert check.returncode == 0, check.stderr
    assert "plugin recorder" in check.stdout
    bad = write_recorder_routes(tmp_path / "bad.yaml", file="x", colour="blue")
    refused = run_cli("--routes", str(bad), "check", **env)
    assert refused.returncode == 2 and "colour" in refused.stderr

    # The plugin is nowhere but in that directory.
    assert "recorder" not in run_cli("plugins").stdout
    assert "recorder" not in sink_types(plugin_manager())
