"""The destination every delivery run posts to (bench/peers/sink.py), and the
rate taken there: the same clock for the router and every peer."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from dataclasses import dataclass

import stack
from procs import HOST, PEERS, Procs, free_port, wait_http


class Sink:
    """bench/peers/sink.py on the server stack: a raw ASGI app that counts POSTs.

    `delay_ms`: each answer waits that long (a slow bot); `record`: the sink
    keeps each message id's arrival time (GET /times, for bench/latency.py)."""

    def __init__(self, procs: Procs, delay_ms: float = 0, record: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/bot"
        self.delay_ms = delay_ms
        self.procs = procs
        argv = stack.uvicorn_argv("sink:app", HOST, self.port)
        env = {"SINK_DELAY_MS": f"{delay_ms:g}", "SINK_RECORD": "1" if record else "0"}
        name = "sink" + (f"-{delay_ms:g}ms" if delay_ms else "") + ("-record" if record else "")
        self.proc = procs.start(name, argv, env, cwd=PEERS)
        wait_http(self.port, "/count", self.proc)
        self.conn = http.client.HTTPConnection(HOST, self.port, timeout=5)

    def _call(self, method: str, path: str) -> bytes:
        for attempt in range(2):
            try:
                self.conn.request(method, path)
                return self.conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def count(self) -> int:
        return int(self._call("GET", "/count"))

    def reset(self) -> None:
        self._call("POST", "/reset")

    def times(self) -> tuple[dict[str, float], int]:
        """(message id -> time.time() it arrived, repeated ids), with record=True."""
        answer = json.loads(self._call("GET", "/times"))
        return answer["times"], answer["duplicates"]

    def stop(self) -> None:
        self.conn.close()
        self.procs.stop(self.proc)


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

    def saw(self, n: int, now: float) -> None:
        """One poll of the sink's count `n` at perf_counter `now`."""
        if n and self.first_t is None:
            self.first_t, self.first_n = now, n
        if n != self.last_n:
            self.last_t, self.last_n = now, n

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
        w.saw(n, now)
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
