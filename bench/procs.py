"""Processes, ports and waiting: starting every program the bench runs (the
router from this tree or from --router-src, the peers in bench/peers), and
stopping all of them."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "bench" / "peers"
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"
DESTINATION = "chatbot"


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


class Procs:
    """Every process this run starts, so that all of them are stopped."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.started):
            self.stop(proc, timeout=5.0)


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the server answers anything on `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before answering")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(HOST, port, timeout=1)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args!r} did not answer on port {port} within {timeout:g}s")


def free_port() -> int:
    from router.redis.embedded import free_port as _free_port

    return _free_port(HOST)


# -- the router ------------------------------------------------------------------

# Runs the `router` CLI from another source tree (--router-src, e.g. a scratch
# copy with a change to measure) instead of the editable install in .venv.
_LAUNCHER = """\
import sys
src = sys.argv.pop(1)
sys.meta_path[:] = [
    f for f in sys.meta_path
    if not getattr(f, "__module__", "").startswith("__editable___message_router")
]
sys.path.insert(0, src)
sys.argv[0] = "router"
import runpy
runpy.run_module("router", run_name="__main__", alter_sys=True)
"""
_router_src: str | None = None


def set_router_src(src: str) -> None:
    """Run the router from `src` (a tree with router/__main__.py, of any
    layout: `python -m router` is what every version runs) from now on."""
    global _router_src
    _router_src = str(Path(src).resolve())
    if not (Path(_router_src) / "router" / "__main__.py").exists():
        sys.exit(f"bench: no router/__main__.py under {_router_src}")


def router_argv(*args: str) -> list[str]:
    if _router_src:
        return [sys.executable, "-c", _LAUNCHER, _router_src, *args]
    script = Path(sys.executable).parent / "router"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "router", *args]


def write_routes(
    path: Path,
    sink_url: str,
    max_in_flight: int,
    shards: int = 1,
    rate_limit: str = "",
    plugin: str = "",
) -> Path:
    """The router's routes.yaml for the bench: one route, one destination (the
    sink), its queue over `shards` hash tags (bench/cluster.py), with an
    outbound `rate_limit` when given (bench/outbound_rate.py). `plugin`: the
    destination's plugin and options instead of the chatbot plugin posting
    to `sink_url`, as YAML lines indented 4 (bench/broker_*.py)."""
    plugin = plugin or f"    plugin: chatbot\n    url: {sink_url}\n"
    spread = f"    shards: {shards}\n" if shards > 1 else ""
    spread += f"    rate_limit: {rate_limit}\n" if rate_limit else ""
    path.write_text(
        f"""\
routes:
  - path: /v1/store_message
    destinations: [{DESTINATION}]
    fields:
      mensaje: string
      wa_id: string
destinations:
  {DESTINATION}:
{plugin}    ordering_key: wa_id
    max_in_flight: {max_in_flight}
    timeout: 10s
{spread}"""
    )
    return path
