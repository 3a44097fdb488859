"""Delivery: N messages stored, then drained to the sink, the rate taken at the
sink; `router worker --burst` beside arq, BullMQ and the raw HTTP client floors."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from context import Context
from destination import Window, watch
from procs import DESTINATION, PEERS, RESULTS, router_argv, say, write_routes
from profiling import record_command, summarize_profile
from redisdb import command_stats, flush, round_trips

# Per case: (router max_in_flight, arq max_jobs, BullMQ concurrency).
CONCURRENCY = ((1, 1, 1), (16, 10, 16))
BULLMQ = PEERS / "bullmq"


async def _preload(url: str, n: int, keys: int) -> None:
    """Store N messages the way ingest does (router.queue.enqueue), in order."""
    from router import envelope, redis_client
    from router.keys import DestinationKeys
    from router.queue import Scripts, Target, enqueue

    redis = redis_client.connect(url)
    try:
        scripts = Scripts(redis)
        dest = DestinationKeys(DESTINATION)
        for i in range(n):
            wa_id = str(i % keys)
            body = f'{{"mensaje":"m{i}","wa_id":"{wa_id}"}}'.encode()
            now_ms = int(time.time() * 1000)
            mid = envelope.new_message_id(now_ms)
            await enqueue(
                scripts, [Target(dest, wa_id)], envelope.encode(mid, now_ms, body), mid, None, 60
            )
    finally:
        await redis.aclose()


def preload(url: str, n: int, keys: int) -> None:
    asyncio.run(_preload(url, n, keys))


def bullmq_missing() -> str | None:
    """Why the BullMQ peer cannot run here, or None if it can."""
    if shutil.which("node") is None:
        return (
            "node not found: install Node.js 20 and npm, then `make bench` runs "
            "`npm ci --prefix bench/peers/bullmq`"
        )
    if not (BULLMQ / "node_modules" / "bullmq").is_dir():
        return (
            "bench/peers/bullmq/node_modules not installed: "
            "`npm ci --prefix bench/peers/bullmq` (`make bench` does this when npm is present)"
        )
    return None


def bullmq_versions() -> str:
    """E.g. "Node v20.20.2, BullMQ 6.7.0", for the report header."""
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    package = json.loads((BULLMQ / "node_modules" / "bullmq" / "package.json").read_text())
    return f"Node {node}, BullMQ {package['version']}"


@dataclass
class Delivery:
    ctx: Context
    bullmq_skipped: str | None = field(default_factory=bullmq_missing)  # why, if it does not run
    results: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    arq_reported: dict[tuple[int, int], float] = field(default_factory=dict)
    router_redis: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)

    def run(self) -> None:
        """Each case runs its floor, the router, arq and BullMQ back to back, so
        that every ratio compares runs a minute apart; rounds repeat all cases."""
        nan = float("nan")
        args = self.ctx.args
        cases = [(k, mif, jobs, conc) for k in args.keys for mif, jobs, conc in CONCURRENCY]
        runs: dict[tuple[int, int], list[dict[str, float]]] = {(k, m): [] for k, m, *_ in cases}
        for _ in range(args.delivery_rounds):
            for keys, mif, jobs, conc in cases:
                floor = self.run_client_floor(mif)
                run = {"httpx": floor.get("httpx", nan), "aiohttp": floor.get("aiohttp", nan)}
                run["router"] = self.run_router(keys, mif)
                run["arq"] = self.run_arq(keys, jobs)
                if not self.bullmq_skipped:
                    run["bullmq"] = self.run_bullmq(keys, conc)
                runs[(keys, mif)].append(run)
        for keys, mif, jobs, conc in cases:
            rs = runs[(keys, mif)]
            result = {f: statistics.median(r[f] for r in rs) for f in rs[0]}
            result["arq_jobs"] = jobs
            result["bullmq_concurrency"] = conc
            for peer in ("arq", "bullmq", "httpx"):
                if peer in rs[0]:
                    result[f"router/{peer}"] = statistics.median(r["router"] / r[peer] for r in rs)
            self.results[(keys, mif)] = result

    def profile(self) -> None:
        for keys in self.ctx.args.keys:
            for max_in_flight in (1, 16):
                self.run_router(keys, max_in_flight, profile=True)

    # the contenders

    def run_router(self, keys: int, max_in_flight: int, profile: bool = False) -> float:
        ctx = self.ctx
        n = ctx.args.n
        flush(ctx.redis_url)
        preload(ctx.redis_url, n, keys)
        ctx.sink.reset()
        routes = write_routes(ctx.tmp / f"routes-{max_in_flight}.yaml", ctx.sink.url, max_in_flight)
        env = {"REDIS_URL": ctx.redis_url, "ROUTES_FILE": str(routes), "LOG_LEVEL": "warning"}
        argv = router_argv("worker", "--burst")
        out = RESULTS / f"profile-delivery-{keys}keys-{max_in_flight}.txt"
        if profile:
            assert ctx.pyspy
            argv = record_command(ctx.pyspy, out, argv)
        before = command_stats(ctx.redis_url)
        proc = ctx.procs.start(f"router-worker-{keys}-{max_in_flight}", argv, env)
        w = watch(ctx.sink, proc, n, ctx.args.timeout)
        ctx.procs.stop(proc)
        trips, usec = round_trips(before, command_stats(ctx.redis_url))
        if not profile:
            self.router_redis[(keys, max_in_flight)] = (trips / n, usec / n)
        self.check_window(f"router keys={keys} max_in_flight={max_in_flight}", w, n)
        if profile:
            title = (
                f"router worker --burst, {n} messages, {keys} keys, max_in_flight {max_in_flight}"
            )
            ctx.profiles.append(summarize_profile(title, out, w.wall, n, "message"))
        return w.rate

    def run_arq(self, keys: int, max_jobs: int) -> float:
        """bench/peers/arq_peer.py: enqueues N jobs, then drains them in burst mode."""
        ctx = self.ctx
        n = ctx.args.n
        flush(ctx.redis_url)
        ctx.sink.reset()
        argv = [sys.executable, "arq_peer.py", "--redis", ctx.redis_url, "--sink", ctx.sink.url]
        argv += ["-n", str(n), "--keys", str(keys), "--max-jobs", str(max_jobs)]
        name = f"arq-{keys}-{max_jobs}"
        proc = ctx.procs.start(name, argv, cwd=PEERS)
        w = watch(ctx.sink, proc, n, ctx.args.timeout)
        ctx.procs.stop(proc)
        self.check_window(f"arq keys={keys} max_jobs={max_jobs}", w, n)
        text = (ctx.procs.logs / f"{name}.log").read_text()
        reported = re.findall(r"= (\d+) msg/s", text)
        if reported:
            self.arq_reported[(keys, max_jobs)] = float(reported[-1])
        return w.rate

    def run_bullmq(self, keys: int, concurrency: int) -> float:
        """bench/peers/bullmq: preload.js adds N jobs with BullMQ's own addBulk,
        then worker.js drains them; the rate is taken at the sink, as for the others."""
        ctx = self.ctx
        n = ctx.args.n
        flush(ctx.redis_url)
        ctx.sink.reset()
        common = ["--redis", ctx.redis_url, "-n", str(n)]
        pre = subprocess.run(
            ["node", "preload.js", *common, "--keys", str(keys)],
            cwd=BULLMQ,
            capture_output=True,
            text=True,
            timeout=ctx.args.timeout,
        )
        what = f"bullmq keys={keys} concurrency={concurrency}"
        if pre.returncode:
            ctx.problems.append(f"{what}: preload.js failed: {pre.stderr.strip()[-500:]}")
            return float("nan")
        argv = ["node", "worker.js", *common, "--sink", ctx.sink.url]
        argv += ["--concurrency", str(concurrency)]
        proc = ctx.procs.start(f"bullmq-{keys}-{concurrency}", argv, cwd=BULLMQ)
        w = watch(ctx.sink, proc, n, ctx.args.timeout)
        ctx.procs.stop(proc)
        self.check_window(what, w, n)
        return w.rate

    def run_client_floor(self, in_flight: int) -> dict[str, float]:
        """client_floor.py at one concurrency: {"httpx": msg/s, "aiohttp": msg/s}."""
        ctx = self.ctx
        n = ctx.args.n
        ctx.sink.reset()
        argv = [sys.executable, "client_floor.py", "--sink", ctx.sink.url, "-n", str(n)]
        argv += ["-c", str(in_flight)]
        out = subprocess.run(
            argv, cwd=PEERS, capture_output=True, text=True, timeout=ctx.args.timeout * 2
        )
        if out.returncode:
            ctx.problems.append(f"client_floor.py failed: {out.stderr.strip()[-500:]}")
            return {}
        rates = {
            client: float(rate)
            for client, _, rate in re.findall(r"(\w+) in_flight=(\d+): (\d+) msg/s", out.stdout)
        }
        if (count := ctx.sink.count()) != 2 * n:
            ctx.problems.append(f"client_floor.py: the sink counted {count}, expected {2 * n}")
        say(
            f"client floor in_flight={in_flight}: "
            + ", ".join(f"{k} {v:,.0f} msg/s" for k, v in rates.items())
        )
        return rates

    def check_window(self, what: str, w: Window, n: int) -> None:
        ctx = self.ctx
        say(
            f"{what}: {w.rate:,.0f} msg/s at the sink, {w.delivered}/{n} delivered, "
            f"process {w.wall:.2f} s, exit {w.returncode}"
        )
        if w.timed_out:
            ctx.problems.append(f"{what}: killed after {ctx.args.timeout:g} s")
        if w.delivered != n:
            ctx.problems.append(f"{what}: the sink counted {w.delivered}, expected {n}")
        if w.returncode:
            ctx.problems.append(f"{what}: exited with {w.returncode} (see bench/results/logs)")
