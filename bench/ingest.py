"""Ingest: wrk against bare_ingest's /v1/hello (framework ceiling), its
/v1/store_message (ingest floor) and `router api`, in cases that each answer
one question, every figure a ratio to the floor measured in the same round:

- stack: ceiling, floor and router on the chosen stack (bench/stack.py
  CHOSEN: uvloop + httptools) and on asyncio + h11, for what the stack buys;
- features: the router with dedup, route auth or fan-out to 2 destinations,
  against the plain router (the shipped routes.yaml's shape), for their cost;
- cores: `router api` with ROUTER_PROCESSES=2 against 1, both at -c64.

Each case runs on a freshly started server with an emptied Redis, and fails
the run (ctx.problems) on any non-2xx answer or socket error, or when Redis
holds fewer messages than were answered 200.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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
)
from profiling import record_pid, summarize_profile
from redisdb import flush, llen

POST_LUA = PEERS / "post.lua"
DEDUP_LUA = PEERS / "post_dedup.lua"  # a unique Idempotency-Key per request
SIGNED_LUA = PEERS / "post_signed.lua"  # X-Hub-Signature-256 of the body
FLOOR_QUEUE = "peer:bare:queue"  # bare_ingest.QUEUE
COPY = f"{DESTINATION}_copy"  # the fan-out route's second destination
SECRET = "bench-secret"  # the auth route's HMAC secret

# -- the cases -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One server under one wrk load."""

    key: str
    server: str  # hello | floor | router
    choice: stack.Choice = stack.CHOSEN
    variant: str = "plain"  # the router's route: plain | dedup | auth | fanout
    processes: int = 1  # ROUTER_PROCESSES
    connections: int = 32  # wrk -c
    pool: str = "default"  # bare_ingest's Redis pool (BARE_POOL): default | wait

    @property
    def script(self) -> Path:
        return {"dedup": DEDUP_LUA, "auth": SIGNED_LUA}.get(self.variant, POST_LUA)

    @property
    def destinations(self) -> list[str]:
        return [DESTINATION, COPY] if self.variant == "fanout" else [DESTINATION]


def _stack_cases(choice: stack.Choice) -> list[Case]:
    suffix = "" if choice == stack.CHOSEN else f"@{choice.name}"
    return [Case(f"{s}{suffix}", s, choice) for s in ("hello", "floor", "router")]


# In the order each round runs them: the feature variants right after the
# plain router they are compared with.
CASES = {
    c.key: c
    for c in [
        *_stack_cases(stack.CHOSEN),
        *(Case(v, "router", variant=v) for v in ("dedup", "auth", "fanout")),
        *_stack_cases(stack.COMPARED),
        *(Case(f"{n}p", "router", processes=n, connections=64) for n in (1, 2)),
    ]
}

LABELS = {
    "hello": "bare_ingest `/v1/hello` (framework ceiling)",
    "floor": "bare_ingest `/v1/store_message` (ingest floor)",
    "router": "**router api** `/v1/store_message`",
}
FEATURES = {
    "dedup": "`Idempotency-Key` header, unique per request (post_dedup.lua): the dedup "
    "marker is checked and set with every message",
    "auth": "route `auth: {type: hmac-sha256}`: `X-Hub-Signature-256` = HMAC-SHA256 of the "
    "body, as Meta signs WhatsApp webhooks, checked per request (post_signed.lua, signature "
    "precomputed); no timestamp",
    "fanout": "the route stores to 2 destinations: 2 lanes, 2 copies per message",
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


def run_wrk(
    url: str, script: Path, duration: int, connections: int = 32, args: Sequence[str] = ()
) -> WrkResult:
    """wrk -t1 for `duration` seconds; `args` go to the script's init()."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    argv += [url, *(("--", *args) if args else ())]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 30, check=True
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


def lua_body(script: Path) -> str:
    """The JSON body a wrk script posts (its `wrk.body = '...'` line)."""
    m = re.search(r"^wrk\.body\s*=\s*'([^']*)'\s*$", script.read_text(), re.M)
    if not m:
        raise ValueError(f"{script}: no wrk.body = '...' line")
    return m.group(1)


def signature() -> str:
    """X-Hub-Signature-256 of post_signed.lua's body under SECRET."""
    body = lua_body(SIGNED_LUA).encode()
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# -- servers -----------------------------------------------------------------------


def write_routes(path: Path, variant: str, sink_url: str) -> Path:
    """The router's routes.yaml: the shipped one's shape (one route, fields
    mensaje/wa_id, one chatbot destination), plus the variant's feature."""
    case_dests = Case("", "router", variant=variant).destinations
    auth = (
        f"    auth:\n      type: hmac-sha256\n      secret: {SECRET}\n" if variant == "auth" else ""
    )
    destinations = "".join(
        f"""\
  {name}:
    plugin: chatbot
    url: {sink_url}
    ordering_key: wa_id
    max_in_flight: 16
    timeout: 10s
"""
        for name in case_dests
    )
    path.write_text(
        f"""\
routes:
  - path: /v1/store_message
    destinations: [{", ".join(case_dests)}]
    fields:
      mensaje: string
      wa_id: string
    max_body: 1MiB
{auth}destinations:
{destinations}"""
    )
    return path


def start_server(ctx: Context, case: Case) -> tuple[subprocess.Popen[bytes], int, str]:
    """`router api` or bare_ingest for `case`; (process, port, path to load)."""
    port = free_port()
    env = {"REDIS_URL": ctx.redis_url}
    if case.server == "router":
        routes = write_routes(ctx.tmp / f"routes-{case.variant}.yaml", case.variant, ctx.sink.url)
        env |= {"ROUTES_FILE": str(routes), "LOG_LEVEL": "warning"}
        env |= {"ROUTER_PROCESSES": str(case.processes), **stack.router_env(case.choice)}
        argv = router_argv("api", "--host", HOST, "--port", str(port))
        name = "router-api" + (f"-{case.processes}p" if case.processes > 1 else "")
        proc = ctx.procs.start(name, argv, env)
        wait_http(port, "/healthz", proc)
        path = "/v1/store_message"
    else:
        argv = stack.uvicorn_argv("bare_ingest:app", HOST, port, case.choice)
        proc = ctx.procs.start("bare-ingest", argv, env | {"BARE_POOL": case.pool}, PEERS)
        wait_http(port, "/v1/hello", proc)
        path = "/v1/hello" if case.server == "hello" else "/v1/store_message"
    return proc, port, path


def count_keys(url: str, pattern: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return sum(1 for _ in client.scan_iter(match=pattern, count=1000))
    finally:
        client.close()


def stored(ctx: Context, case: Case) -> tuple[int, str]:
    """The fewest messages `case`'s server has stored in any one of its
    queues, and which queue that is."""
    from router.queue.keys import DestinationKeys

    if case.server == "floor":
        return llen(ctx.redis_url, FLOOR_QUEUE), FLOOR_QUEUE
    wa_id = re.search(r'"wa_id"\s*:\s*"([^"]+)"', lua_body(case.script))
    lanes = [DestinationKeys(d).lane(wa_id.group(1) if wa_id else "") for d in case.destinations]
    return min((llen(ctx.redis_url, lane), lane) for lane in lanes)


# -- the measurement ---------------------------------------------------------------


class SameRounds(Protocol):
    """What runs in Ingest's rounds after its cases (bench/burst.py's Burst,
    which imports this module: named by what it does, not imported)."""

    def run_round(self, rnd: int) -> None: ...


@dataclass
class Ingest:
    ctx: Context
    results: dict[str, list[WrkResult]] = field(default_factory=dict)  # key -> one per round
    stacks: dict[str, stack.Stack | None] = field(default_factory=dict)  # key -> as run
    burst: SameRounds | None = None  # bench/burst.py's Burst, run in the same rounds

    def run(self) -> None:
        """--rounds rounds, interleaved: each runs every case, then the burst,
        so that a drift of the machine touches all of them alike."""
        for rnd in range(1, self.ctx.args.rounds + 1):
            self.run_round(rnd)
            if self.burst is not None:
                self.burst.run_round(rnd)
        self.check_stack()

    def check_scripts(self) -> None:
        """Every load posts the same message, or the cases are not comparable."""
        body = lua_body(POST_LUA)
        for script in (DEDUP_LUA, SIGNED_LUA):
            if lua_body(script) != body:
                self.ctx.problems.append(f"{script.name} posts another body than post.lua")

    def run_round(self, rnd: int) -> None:
        """Every case once, in CASES' order."""
        if rnd == 1:
            self.check_scripts()
        for case in CASES.values():
            self.measure(case, rnd)

    def measure(self, case: Case, rnd: int) -> None:
        ctx = self.ctx
        flush(ctx.redis_url)
        proc, port, path = start_server(ctx, case)
        url = f"http://{HOST}:{port}{path}"
        args = self.script_args
        try:
            warm = run_wrk(
                url, case.script, ctx.args.warmup, case.connections, args(case, rnd, "warm")
            )
            if case.key not in self.stacks:  # after the warm-up: every process is up
                self.first_look(case, proc.pid, port, path)
            result = run_wrk(
                url, case.script, ctx.args.duration, case.connections, args(case, rnd, "run")
            )
        finally:
            ctx.procs.stop(proc)
        self.results.setdefault(case.key, []).append(result)
        if case.server != "hello":
            answered = warm.requests + result.requests - warm.non_2xx - result.non_2xx
            self.check_stored(case, rnd, answered)
        say(
            f"ingest round {rnd} {case.key}: {result.rps:,.0f} req/s, p50 "
            f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, non-2xx {result.non_2xx}"
            + (f" (on {self.stacks[case.key]})" if rnd == 1 else "")
        )
        if result.non_2xx or result.socket_errors or warm.non_2xx or warm.socket_errors:
            ctx.problems.append(
                f"ingest {case.key} round {rnd}: {warm.non_2xx + result.non_2xx} non-2xx "
                f"responses, {warm.socket_errors + result.socket_errors} socket errors "
                "(warm-up included)"
            )

    def first_look(self, case: Case, pid: int, port: int, path: str) -> None:
        """Once per case, all processes up: that the server runs what the case
        says it measures (its processes, its stack; with auth, that an unsigned
        request is refused, or the route measured has no auth at all)."""
        self.check_processes(case, pid)
        self.stacks[case.key] = stack.running(pid, HOST, port)
        if case.variant == "auth":
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("POST", path, lua_body(POST_LUA), {"Content-Type": "application/json"})
            status = conn.getresponse().status
            conn.close()
            if status != 401:
                self.ctx.problems.append(
                    f"ingest auth: an unsigned request was answered {status}, not 401"
                )

    def check_stored(self, case: Case, rnd: int, answered: int) -> None:
        """Every 200 stored, once per destination, and with dedup a marker for
        each (a request still in flight when wrk stopped may be stored without
        being counted: more is fine)."""
        from router.queue.keys import DestinationKeys

        count, queue = stored(self.ctx, case)
        if count < answered:
            self.ctx.problems.append(
                f"ingest {case.key} round {rnd}: answered 200 to {answered} requests, "
                f"but Redis holds {count} messages in {queue}"
            )
        if case.variant == "dedup":
            markers = count_keys(self.ctx.redis_url, DestinationKeys(DESTINATION).seen("*"))
            if markers < answered:
                self.ctx.problems.append(
                    f"ingest dedup round {rnd}: answered 200 to {answered} requests, but Redis "
                    f"holds {markers} dedup markers"
                )

    @staticmethod
    def script_args(case: Case, rnd: int, phase: str) -> list[str]:
        """What a wrk run passes its script: post_dedup.lua a tag that no other
        run against the same Redis uses, post_signed.lua the signature."""
        if case.variant == "dedup":
            return [f"{case.key}-r{rnd}-{phase}"]
        if case.variant == "auth":
            return [signature()]
        return []

    def check_processes(self, case: Case, pid: int) -> None:
        if case.processes > 1 and len(stack.server_pids(pid)) != case.processes:
            self.ctx.problems.append(
                f"ingest {case.key}: ROUTER_PROCESSES={case.processes}, but "
                f"{len(stack.server_pids(pid))} server process(es) found"
            )

    def check_stack(self) -> None:
        """The floors are floors only on the router's own loop and HTTP parser:
        per stack, router and floor on the same one, and that one the stack
        asked for; every router variant on the chosen stack."""
        ctx = self.ctx
        if any(s is None for s in self.stacks.values()):
            ctx.notes.append("server stacks not checked (no /proc here)")
            return
        for case in CASES.values():
            want, got = stack.resolved(case.choice), self.stacks.get(case.key)
            if got is not None and got != want:
                ctx.problems.append(
                    f"server stack: ingest {case.key} runs on {got}, not on {want} "
                    f"(loop={case.choice.loop}, http={case.choice.http})"
                )
        for choice in stack.STACKS:
            suffix = "" if choice == stack.CHOSEN else f"@{choice.name}"
            router, floor = self.stacks.get(f"router{suffix}"), self.stacks.get(f"floor{suffix}")
            if router is not None and floor is not None and router != floor:
                ctx.problems.append(
                    f"server stack: `router api` runs on {router}, the floors on {floor}; "
                    "make bench/stack.py give uvicorn what ROUTER_LOOP/ROUTER_HTTP give the router"
                )

    def profile(self) -> None:
        """py-spy on the ingest floor and on `router api`, each under wrk."""
        ctx = self.ctx
        assert ctx.pyspy
        titles = {
            "floor": "bare_ingest /v1/store_message (ingest floor) under wrk -c32",
            "router": "router api /v1/store_message under wrk -c32",
        }
        for key, title in titles.items():
            flush(ctx.redis_url)
            proc, port, path = start_server(ctx, CASES[key])
            out = RESULTS / f"profile-ingest-{key}.txt"
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
