"""Ingest: wrk -t1 -c32 with bench/peers/post.lua against bare_ingest's
/v1/hello (framework ceiling), its /v1/store_message (ingest floor) and
`router api`, every server on the stack of bench/stack.py."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import stack
from context import Context
from procs import (
    DESTINATION,
    HOST,
    PEERS,
    RESULTS,
    free_port,
    router_argv,
    say,
    wait_http,
    write_routes,
)
from profiling import record_pid, summarize_profile
from redisdb import flush, llen

POST_LUA = PEERS / "post.lua"
NAMES = ("hello", "floor", "router")  # in the order each round runs them
LABELS = {
    "hello": "bare_ingest `/v1/hello` (framework ceiling)",
    "floor": "bare_ingest `/v1/store_message` (ingest floor)",
    "router": "**router api** `/v1/store_message`",
}

# -- wrk -------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    output: str


def run_wrk(url: str, script: Path, duration: int, connections: int = 32) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(lat["50"]),
        p99_ms=_ms(lat["99"]),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        output=out,
    )


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "not run"
    return (out.split()[1] if len(out.split()) > 1 else "?") if out else "not run"


# -- the measurement ---------------------------------------------------------------


@dataclass
class Ingest:
    ctx: Context
    results: dict[str, list[WrkResult]] = field(default_factory=dict)  # name -> one per round
    stacks: dict[str, stack.Stack | None] = field(default_factory=dict)  # name -> as run

    def start_server(self, name: str) -> tuple[subprocess.Popen[bytes], int, str]:
        """`router api` or bare_ingest; (process, port, path to load)."""
        ctx = self.ctx
        port = free_port()
        env = {"REDIS_URL": ctx.redis_url}
        if name == "router":
            routes = write_routes(ctx.tmp / "routes-api.yaml", ctx.sink.url, 16)
            env |= {"ROUTES_FILE": str(routes), "LOG_LEVEL": "warning"}
            argv = router_argv("api", "--host", HOST, "--port", str(port))
            proc = ctx.procs.start("router-api", argv, env)
            wait_http(port, "/healthz", proc)
            path = "/v1/store_message"
        else:
            argv = stack.uvicorn_argv("bare_ingest:app", HOST, port)
            proc = ctx.procs.start("bare-ingest", argv, env, PEERS)
            wait_http(port, "/v1/hello", proc)
            path = "/v1/hello" if name == "hello" else "/v1/store_message"
        if name not in self.stacks:
            self.stacks[name] = stack.running(proc.pid, HOST, port)
        return proc, port, path

    def run(self) -> None:
        ctx = self.ctx
        for name in NAMES:
            self.results[name] = []
        for rnd in range(1, ctx.args.rounds + 1):
            for name in NAMES:
                flush(ctx.redis_url)
                proc, port, path = self.start_server(name)
                url = f"http://{HOST}:{port}{path}"
                try:
                    warm = run_wrk(url, POST_LUA, ctx.args.warmup)
                    result = run_wrk(url, POST_LUA, ctx.args.duration)
                finally:
                    ctx.procs.stop(proc)
                self.results[name].append(result)
                if name != "hello":
                    # Every 200 must have been stored (a request still in
                    # flight when wrk stopped may be stored without being counted).
                    answered = warm.requests + result.requests - warm.non_2xx - result.non_2xx
                    stored = self.stored(name)
                    if stored < answered:
                        ctx.problems.append(
                            f"ingest {name} round {rnd}: answered 200 to {answered} requests, "
                            f"but Redis holds {stored} messages"
                        )
                say(
                    f"ingest round {rnd} {name}: {result.rps:,.0f} req/s, p50 "
                    f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, non-2xx {result.non_2xx}"
                )
                if result.non_2xx or result.socket_errors:
                    ctx.problems.append(
                        f"ingest {name} round {rnd}: {result.non_2xx} non-2xx responses, "
                        f"{result.socket_errors} socket errors"
                    )
        self.check_stack()

    def check_stack(self) -> None:
        """The floors are floors only on the router's own loop and HTTP parser."""
        router, floor = self.stacks.get("router"), self.stacks.get("floor")
        if router is None or floor is None:
            self.ctx.notes.append("server stack of `router api` not checked (no /proc here)")
        elif router != floor:
            self.ctx.problems.append(
                f"server stack: `router api` runs on {router}, the floors on {floor}; "
                "make LOOP and HTTP in bench/stack.py what router/cli.py gives uvicorn"
            )

    def stored(self, name: str) -> int:
        """How many messages the ingest server `name` has stored in Redis."""
        from router.keys import DestinationKeys

        if name == "floor":
            key = "peer:bare:queue"
        else:
            wa_id = re.search(r'wa_id\\?"\s*:\s*\\?"([^"\\]+)', POST_LUA.read_text())
            key = DestinationKeys(DESTINATION).lane(wa_id.group(1) if wa_id else "")
        return llen(self.ctx.redis_url, key)

    def profile(self) -> None:
        """py-spy on the ingest floor and on `router api`, each under wrk."""
        ctx = self.ctx
        assert ctx.pyspy
        titles = {
            "floor": "bare_ingest /v1/store_message (ingest floor) under wrk -c32",
            "router": "router api /v1/store_message under wrk -c32",
        }
        for name, title in titles.items():
            flush(ctx.redis_url)
            proc, port, path = self.start_server(name)
            out = RESULTS / f"profile-ingest-{name}.txt"
            url = f"http://{HOST}:{port}{path}"
            try:
                run_wrk(url, POST_LUA, 2)
                spy = subprocess.Popen(
                    record_pid(ctx.pyspy, proc.pid, 8, out),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                result = run_wrk(url, POST_LUA, 9)
                spy.wait(timeout=30)
            finally:
                ctx.procs.stop(proc)
            title += f" ({result.rps:,.0f} req/s while sampled)"
            ctx.profiles.append(summarize_profile(title, out, 8.0, result.rps * 8, "request"))
