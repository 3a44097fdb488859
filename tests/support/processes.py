"""The `router` command as a real process: run to completion (`run_cli`), or
serving until the test stops it (`RouterProcess`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support import ROOT
from tests.support.routes import shipped_routes
from tests.support.servers import free_port


def router_env(base: Mapping[str, str] | None = None, **extra: str | None) -> dict[str, str]:
    """The environment of a router subprocess: `base`, by default this
    process's without the router's own variables (OpenTelemetry's too) and with ROUTES_FILE the
    shipped routes.yaml as committed (never the working tree's, which an
    operator may have edited); then `extra` (a value of None removes the
    variable)."""
    if base is None:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ROUTER_", "LOG_", "OTEL_"))
            and k not in ("REDIS_URL", "ROUTES_FILE", "PORT", "PROMETHEUS_MULTIPROC_DIR")
        }
        base["ROUTES_FILE"] = str(shipped_routes())
    env = {**base, "PYTHONUNBUFFERED": "1"}
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 60,
    **extra: str | None,
) -> subprocess.CompletedProcess[str]:
    """`python -m router ARGS` run to completion, its output captured as text;
    its environment is router_env(env, **extra)."""
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        env=router_env(env, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RouterProcess:
    """`python -m router <command>` (default `serve`) as a child process on
    127.0.0.1:`port`, its output appended to `log_path`; start() again after
    a kill restarts it on the same port.

    `env` sets variables on top of router_env() (REDIS_URL, ROUTES_FILE, ...).
    `die_with_parent`: the kernel SIGKILLs the child if the test process
    dies, so a crashed run leaves no router behind. `name`: what errors
    call it (by default the log file's name without its suffix).
    `args`: options after the command. `own_group`: the child leads its own
    process group and kill() kills the whole group (for `--reload`, whose
    server runs in a grandchild)."""

    def __init__(
        self,
        log_path: Path,
        *,
        command: str = "serve",
        port: int | None = None,
        name: str | None = None,
        die_with_parent: bool = False,
        args: tuple[str, ...] = (),
        own_group: bool = False,
        **env: str | None,
    ) -> None:
        self.name = name or log_path.stem
        self.command = command
        self.port = port or free_port()
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.args = args
        self.own_group = own_group
        self.env = router_env(PORT=str(self.port), HOST="127.0.0.1", **env)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait: bool = True, timeout: float = 60.0) -> RouterProcess:
        """Start it; with `wait`, return once /readyz answers 200."""
        assert not self.alive(), "already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:  # the child gets its own copy
            log.write(f"--- start #{self.starts} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "router", self.command, *self.args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent if self.die_with_parent else None,
                start_new_session=self.own_group,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def ready(self) -> bool:
        """Whether /readyz answers 200; an AssertionError if it exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"router {self.name!r} exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"router {self.name!r} not ready after {timeout:g}s\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code, once it exits within `timeout` seconds."""
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.process is not None and self.own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.alive():
            assert self.process is not None
            self.process.kill()
        if self.process is not None:
            self.process.wait(30)

    def terminate(self, timeout: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM; returns (exit code or None if still running, seconds taken)."""
        assert self.process is not None
        start = time.monotonic()
        self.process.terminate()
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - start

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
