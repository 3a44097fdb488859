"""Helpers of the delivery, plugin and process tests: concurrent posting, the
router CLI as a subprocess, the third-party test plugin (registered
in-process, or installed into a throwaway directory)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from router.plugins import plugin_manager
from tests.support import free_port, wait_until, write_routes

ROOT = Path(__file__).resolve().parent.parent
THIRDPARTY_PLUGIN = Path(__file__).resolve().parent / "thirdparty_plugin"


def interleaved(keys: list[str], per_key: int) -> dict[str, list[str]]:
    """The messages each key will send, in order: "<key>-<n>"."""
    return {k: [f"{k}-{i}" for i in range(per_key)] for k in keys}


def post_concurrently(
    url: str, sent: dict[str, list[str]], path: str = "/v1/store_message"
) -> None:
    """Post every key's messages concurrently across keys, one after the other
    within a key (each waits for the previous answer), so the per-key order
    of arrival is the order of `sent`."""

    async def one_key(client: httpx.AsyncClient, key: str, messages: list[str]) -> None:
        for m in messages:
            r = await client.post(path, json={"mensaje": m, "wa_id": key})
            assert r.status_code == 200, r.text

    async def run() -> None:
        limits = httpx.Limits(max_connections=len(sent) or 1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
            await asyncio.gather(*(one_key(client, k, ms) for k, ms in sent.items()))

    asyncio.run(run())


def post_round_robin(url: str, sent: dict[str, list[str]]) -> None:
    """Post sequentially, key after key per round (a defined global order)."""
    longest = max(len(ms) for ms in sent.values())
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(longest):
            for key, messages in sent.items():
                if i < len(messages):
                    r = client.post(
                        "/v1/store_message", json={"mensaje": messages[i], "wa_id": key}
                    )
                    assert r.status_code == 200, r.text


# -- the router CLI -----------------------------------------------------------


def router_env(**extra: str | None) -> dict[str, str]:
    """The environment of a router subprocess: this one, without the router's
    own variables unless given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ROUTER_") and k not in ("REDIS_URL", "ROUTES_FILE", "PORT")
    }
    env["PYTHONUNBUFFERED"] = "1"
    for k, v in extra.items():
        if v is not None:
            env[k] = v
    return env


def run_cli(*args: str, timeout: float = 30, **env: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        env=router_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


class RouterProcess:
    """`router serve` as a real process; its log goes to a file."""

    def __init__(self, log_file: Path, port: int | None = None, **env: str | None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self.env = router_env(PORT=str(self.port), HOST="127.0.0.1", **env)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> RouterProcess:
        log = open(self.log_file, "ab")  # the child gets its own copy
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "router", "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        finally:
            log.close()
        wait_until(self.ready, timeout=timeout, what=f"router ready; log:\n{self.log()}")
        return self

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"router exited with {self.process.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


# -- the third-party test plugin --------------------------------------------------


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
