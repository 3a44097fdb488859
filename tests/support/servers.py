"""Servers on loopback: free ports, waiting for a condition, an ASGI app
served by uvicorn in a background thread, the router's own app in-process."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn._compat import asyncio_run

from router.config.loading import load
from router.config.settings import Settings
from router.web.app import create_app

# Ports for the servers tests start, handed out per test process: each
# xdist worker (and the serial run) takes its ports from its own block of
# 1,000 in 12000-21999, below the kernel's ephemeral range (32768-60999 by
# default), where bind(0) and outgoing connections take theirs. A port asked
# of the kernel with bind(0) is free only until its socket closes: another
# worker could get it again before the server bound it (two tests once
# shared a port, and one test's bot received another's load). A Redis
# Cluster node also listens on its port + 10000 (the cluster bus):
# 22000-31999, which no block hands out.
_PORT_BLOCK = 1000
_FIRST_PORT = 12000
_BLOCKS = 10
_ports = itertools.count()


def _block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... or unset
    return (int(worker[2:]) + 1) % _BLOCKS if worker.startswith("gw") else 0


def free_port() -> int:
    """A port nothing listens on, and that no other test process of this
    run is handed (see _PORT_BLOCK)."""
    start = _FIRST_PORT + _block() * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = start + next(_ports) % _PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (a server still up, or another program's)
            return port
    raise RuntimeError(f"no free port in {start}-{start + _PORT_BLOCK - 1}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> float:
    """Poll until `predicate()`; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(0.02)


class ServerThread:
    """Serve an ASGI app with uvicorn in a thread; stop() closes the port.
    As a context manager it stops on leaving."""

    def __init__(self, app: Any, port: int | None = None, http: Any = "auto") -> None:
        self.app = app
        self.port = port or free_port()
        self.http = http  # uvicorn's protocol: a name, or a class (router.http.server)
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> ServerThread:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="auto",
            timeout_graceful_shutdown=30,
            http=self.http,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server thread did not start")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        """uvicorn's Server.run, keeping the loop so stop() can reach it."""
        assert self.server is not None
        server = self.server

        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await server.serve()

        asyncio_run(serve(), loop_factory=server.config.get_loop_factory())

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(40)
            loop = self.loop
            if self.thread.is_alive() and loop is not None:
                # Its shutdown did not end (seen once in a full run, not
                # reproduced): a router left running would claim the next
                # tests' messages from the shared Redis. Cancel everything
                # it runs, its delivery workers too, and say so.
                def cancel_all() -> None:
                    for task in asyncio.all_tasks(loop):
                        task.cancel()

                loop.call_soon_threadsafe(cancel_all)
                self.thread.join(10)
                warnings.warn(
                    f"the server on port {self.port} did not stop within 40 s; its tasks "
                    "were cancelled",
                    stacklevel=2,
                )
        self.server = None

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve(redis_url: str, routes_file: Path, **settings: Any) -> ServerThread:
    """The router's real app (create_app) under uvicorn in a thread, against
    any Redis URL, even a dead one. API only unless `run_workers=True`;
    keyword arguments set other Settings fields."""
    config = Settings(
        routes_file=str(routes_file), redis_url=redis_url, **{"run_workers": False, **settings}
    )
    return ServerThread(create_app(config, load(str(routes_file)))).start()
