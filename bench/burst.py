"""Burst: --burst (1,000) connections opened at once, each POSTing one message
with `Connection: close`, against `router api` and against the ingest floor
(bare_ingest's /v1/store_message), both on the chosen stack and the same Redis.

Why apart from wrk: a provider's retries after an outage, or the replies to a
campaign, arrive as many new connections at once, not as a steady keep-alive
load. Every one must be answered 200 with Redis healthy (the router's Redis
pool waits for a free connection instead of raising; issue 8 saw 503s here),
and the p99 says how long the last ones wait. Latency is taken per request
from the start of its connect to the end of its answer, by a client of raw
asyncio streams in the bench process (on uvloop when installed, so that the
client is not the slowest part); the same client bursts both servers, so
their ratio holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import resource
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from context import Context
from ingest import CASES, POST_LUA, lua_body, start_server, stored
from procs import HOST, say
from redisdb import flush

WARM = 32  # connections of the unrecorded burst that first warms each server
# The servers burst: the router as under wrk, the floor with a Redis pool that
# waits for one of 100 connections like the router's (bare_ingest.py's
# BARE_POOL says why the wrk floor's pool would not do).
SERVERS = {
    "floor": dataclasses.replace(CASES["floor"], key="floor-burst", pool="wait"),
    "router": CASES["router"],
}
DEADLINE = 30.0  # seconds a request of the burst may take in all


@dataclass
class BurstResult:
    statuses: Counter[str]  # "200", "503", "timeout", "ConnectionResetError", ...
    latencies_ms: list[float]  # sorted, one per request, whatever its status

    def quantile(self, q: float) -> float:
        i = min(len(self.latencies_ms) - 1, round(q * (len(self.latencies_ms) - 1)))
        return self.latencies_ms[i]

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)


async def _post(port: int, request: bytes, start: asyncio.Event) -> tuple[str, float]:
    """One connection, one POST, read the answer; (status, ms from connect to answer)."""
    await start.wait()
    t0 = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(DEADLINE):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                None,
            )
            if length is None:
                await reader.read()
            else:
                await reader.readexactly(length)
        status = head.split(b" ", 2)[1].decode()
    except TimeoutError:
        status = "timeout"
    except (OSError, asyncio.IncompleteReadError, IndexError) as exc:
        status = type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    return status, (time.perf_counter() - t0) * 1000


async def _burst(port: int, path: str, body: bytes, n: int) -> BurstResult:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    start = asyncio.Event()
    tasks = [asyncio.create_task(_post(port, request, start)) for _ in range(n)]
    await asyncio.sleep(0)  # every task waits on `start`: they connect in one go
    start.set()
    answers = await asyncio.gather(*tasks)
    return BurstResult(Counter(s for s, _ in answers), sorted(ms for _, ms in answers))


def fire(port: int, path: str, body: bytes, n: int) -> BurstResult:
    """n connections at once against HOST:port, each POSTing `body` once."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_burst(port, path, body, n))


def _room_for(n: int) -> str | None:
    """Raise this process's open-file limit (the servers inherit it) to hold
    n sockets; say what on this machine keeps n connections from arriving at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 512
    if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with contextlib.suppress(OSError, ValueError):
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        if somaxconn < n:
            return (
                f"net.core.somaxconn is {somaxconn}, below the burst's {n} connections: "
                "connections past the accept queue wait for a SYN retry (1 s and more)"
            )
    return None


@dataclass
class Burst:
    ctx: Context
    results: dict[str, list[BurstResult]] = field(default_factory=dict)  # floor/router
    n: int = 0

    def __post_init__(self) -> None:
        self.n = self.ctx.args.burst
        if why := _room_for(self.n):
            self.ctx.notes.append(f"burst: {why}")

    def run_round(self, rnd: int) -> None:
        for key in SERVERS:
            self.measure(key, rnd)

    def measure(self, key: str, rnd: int) -> None:
        ctx, case = self.ctx, SERVERS[key]
        body = lua_body(POST_LUA).encode()
        flush(ctx.redis_url)
        proc, port, path = start_server(ctx, case)
        try:
            warm = fire(port, path, body, WARM)
            result = fire(port, path, body, self.n)
        finally:
            ctx.procs.stop(proc)
        self.results.setdefault(key, []).append(result)
        count, queue = stored(ctx, case)
        if count < warm.ok + result.ok:
            ctx.problems.append(
                f"burst {key} round {rnd}: answered 200 to {warm.ok + result.ok} requests, "
                f"but Redis holds {count} messages in {queue}"
            )
        for label, r, n in (("warm-up", warm, WARM), ("burst", result, self.n)):
            if r.ok != n:
                ctx.problems.append(
                    f"burst {key} round {rnd} ({label}): {statuses(r)} of {n} requests"
                    + (" (see bench/results/logs/router-api.log)" if key == "router" else "")
                )
        say(
            f"burst round {rnd} {key}: {statuses(result)}; p50 {result.quantile(0.5):.0f} ms, "
            f"p99 {result.quantile(0.99):.0f} ms, max {result.latencies_ms[-1]:.0f} ms"
        )

    def medians(self, key: str) -> dict[str, float]:
        runs = self.results[key]
        return {
            "p50": statistics.median(r.quantile(0.5) for r in runs),
            "p99": statistics.median(r.quantile(0.99) for r in runs),
            "max": statistics.median(r.latencies_ms[-1] for r in runs),
        }

    def p99_ratios(self) -> list[float]:
        """Per round: router's p99 over the floor's."""
        pairs = zip(self.results["router"], self.results["floor"], strict=True)
        return [r.quantile(0.99) / f.quantile(0.99) for r, f in pairs]


def statuses(result: BurstResult) -> str:
    """E.g. "1000 x 200" or "990 x 200, 10 x 503"."""
    return ", ".join(f"{c} x {s}" for s, c in sorted(result.statuses.items()))
