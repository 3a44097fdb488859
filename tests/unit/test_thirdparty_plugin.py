"""The third-party test plugin registered in-process, and gone again."""

from __future__ import annotations

from pathlib import Path

from router.config.plugins import plugin_manager, sink_types
from tests.support.plugin import recorder_registered


def test_a_registered_plugin_leaves_when_unregistered(tmp_path: Path) -> None:
    with recorder_registered():
        assert "recorder" in sink_types(plugin_manager())
    assert "recorder" not in sink_types(plugin_manager())
