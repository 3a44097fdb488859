"""The destination every delivery run posts to (bench/peers/sink.py), and the
rate taken there: the same clock for the router and every peer."""

from __future__ import annotations

import http.client
import subprocess
import time
from dataclasses import dataclass

import stack
from procs import HOST, PEERS, Procs, free_port, wait_http


class Sink:
    """bench/peers/sink.py on the server stack: a raw ASGI app that counts POSTs."""

    def __init__(self, procs: Procs) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/bot"
        argv = stack.uvicorn_argv("sink:app", HOST, self.port)
        self.proc = procs.start("sink", argv, cwd=PEERS)
        wait_http(self.port, "/count", self.proc)
        self.conn = http.client.HTTPConnection(HOST, self.port, timeout=5)

    def _call(self, method: str, path: str) -> int:
        for attempt in range(2):
            try:
                self.conn.request(method, path)
                return int(self.conn.getresponse().read())
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def count(self) -> int:
        return self._call("GET", "/count")

    def reset(self) -> None:
        self._call("POST", "/reset")


@dataclass
class Window:
    """Deliveries the sink saw, from the first poll that saw one to the last."""

    delivered: int = 0
    first_t: float | None = None
    first_n: int = 0
    last_t: float | None = None
    last_n: int = 0
    timed_out: bool = False
    returncode: int | None = None
    wall: float = 0.0

    @property
    def rate(self) -> float:
        if self.first_t is None or self.last_t is None or self.last_t <= self.first_t:
            return float("nan")
        return (self.last_n - self.first_n) / (self.last_t - self.first_t)


def watch(sink: Sink, proc: subprocess.Popen[bytes], expect: int, timeout: float) -> Window:
    """Poll the sink's count every 10 ms while `proc` delivers.

    The rate is measured at the destination, from first to last delivery, so
    process start-up (imports, connecting) is left out for every contender.
    """
    w = Window()
    began = time.perf_counter()
    deadline = began + timeout
    while True:
        n = sink.count()
        now = time.perf_counter()
        if n and w.first_t is None:
            w.first_t, w.first_n = now, n
        if n != w.last_n:
            w.last_t, w.last_n = now, n
        if n >= expect and proc.poll() is not None:
            break
        if proc.poll() is not None:
            time.sleep(0.05)
            n = sink.count()
            if n != w.last_n:
                w.last_t, w.last_n = time.perf_counter(), n
            break
        if now > deadline:
            w.timed_out = True
            proc.kill()
            break
        time.sleep(0.01)
    w.returncode = proc.wait()
    w.wall = time.perf_counter() - began
    w.delivered = sink.count()
    return w
