"""The third-party test plugin (tests/thirdparty_plugin, `recorder`):
registered in-process, or pip-installed into a throwaway directory."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from router.config.plugins import plugin_manager
from tests.support import ROOT
from tests.support.routes import write_routes

THIRDPARTY_PLUGIN = ROOT / "tests" / "thirdparty_plugin"


@contextlib.contextmanager
def recorder_registered() -> Iterator[None]:
    """The test plugin registered in-process with the router's plugin manager
    (as datasette's tests do), and unregistered after: nothing installed."""
    spec = importlib.util.spec_from_file_location(
        "router_recorder", THIRDPARTY_PLUGIN / "router_recorder.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pm = plugin_manager()
    pm.register(module, name="recorder")
    try:
        yield
    finally:
        pm.unregister(name="recorder")


def install_into(target: Path) -> dict[str, str]:
    """pip-install tests/thirdparty_plugin into `target` only (a throwaway
    directory, nothing in the venv); returns the environment that lets a
    router subprocess find it through its entry point."""
    with tempfile.TemporaryDirectory() as tmp:
        # Build from a copy so the build leaves nothing in the source tree.
        src = Path(tmp) / "thirdparty_plugin"
        shutil.copytree(
            THIRDPARTY_PLUGIN,
            src,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(target),
                str(src),
            ],
            check=True,
            timeout=300,
        )
    return {"PYTHONPATH": str(target)}


def write_recorder_routes(path: Path, **dest: Any) -> Path:
    """A routes.yaml sending /v1/store_message to one `recorder` destination."""
    settings: dict[str, Any] = {"plugin": "recorder", "url": None, "max_in_flight": 4}
    return write_routes(path, None, destination="recorded", **{**settings, **dest})


def fake_distribution(
    site: Path,
    name: str,
    entry_points: str,
    modules: dict[str, str] | None = None,
    requires: tuple[str, ...] = ("message-router",),
) -> dict[str, str]:
    """A distribution as pip leaves one in `site` (its dist-info: METADATA,
    entry_points.txt; and its `modules`, name -> source), without building
    anything: broken plugins for the tests. Returns the environment that
    lets a router subprocess find it."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{name.replace('-', '_')}-0.2.0.dist-info"
    info.mkdir()
    metadata = [f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.2.0\n"]
    metadata += [f"Requires-Dist: {r}\n" for r in requires]
    (info / "METADATA").write_text("".join(metadata))
    (info / "entry_points.txt").write_text(entry_points)
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(source)
    return {"PYTHONPATH": str(site)}
