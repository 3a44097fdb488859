"""Delivery: N messages stored, then drained to the sink, the rate taken at the
sink; `router worker --burst` beside aiohttp and httpx alone (client_floor.py),
arq and BullMQ.

The cases are issue 8's (item 4), with issue 23's targets, each judged against aiohttp alone posting
the same messages to the same sink in the same round:

* 1,000 wa_ids, 64 in flight: target >= 0.75x aiohttp (stretch 0.85x;
  issue 23, also >= 2x BullMQ);
* one wa_id, 1 in flight (strict order, one at a time): target >= 0.55x
  (two round trips per message against the floor's one);
* a slow bot (the sink answers after 50 ms), 1,000 wa_ids, 64 in flight:
  target >= 0.8 x 64 / 0.05 s = 1,024 msg/s, whatever the floor does.

Every router case runs twice, with the default delivery transport (`h1`:
the chatbot sink through the router's lean HTTP/1.1 client,
router/plugin/h1.py) and with ROUTER_DELIVERY_TRANSPORT=aiohttp (the same
sink through aiohttp's session), so the report shows what the transport buys.

    BENCH_REDIS_DB=12 .venv/bin/python bench/delivery.py -n 2000 --rounds 1
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field

from context import Context, window_problems
from destination import Sink, Window, watch
from fmt import median, rate, ratio, x2
from preload import preload
from procs import PEERS, RESULTS, router_argv, say, write_routes
from profiling import record_command, summarize_profile
from redisdb import command_stats, flush, read_events, round_trips

BULLMQ = PEERS / "bullmq"
TRANSPORTS = ("h1", "aiohttp")  # ROUTER_DELIVERY_TRANSPORT, the default first
NAN = float("nan")


@dataclass(frozen=True)
class Case:
    """One delivery case: how many wa_ids, how many in flight (the router's
    max_in_flight, arq's max_jobs, BullMQ's concurrency, the floors'
    concurrent POSTs), how slow the bot is, and what the router must reach."""

    keys: int
    in_flight: int
    delay_ms: int = 0  # the sink waits this long before each answer
    peers: bool = True  # run arq and BullMQ too
    # client_floor.py's clients: aiohttp is the target's floor; httpx alone
    # (what a plugin's own httpx client would do) is left out where it
    # would only add a slow run (its pool scans every connection per request: ~130 msg/s at 64).
    floors: tuple[str, ...] = ("aiohttp", "httpx")
    # Also run the router with ROUTER_MESSAGE_LOG=0: what the message log costs.
    log_cost: bool = False
    target: float = 0.0  # router / aiohttp floor (or / ideal, for a slow bot)
    stretch: float | None = None  # (no nan here: a Case is a dict key)

    @property
    def slow(self) -> bool:
        return self.delay_ms > 0

    @property
    def ideal(self) -> float:
        """What in_flight concurrent POSTs to a bot answering after delay_ms can do."""
        return self.in_flight / (self.delay_ms / 1000) if self.slow else NAN

    @property
    def label(self) -> str:
        text = f"{self.keys:,} wa_id{'s' * (self.keys > 1)}, {self.in_flight} in flight"
        return text + (f", bot {self.delay_ms} ms" if self.slow else "")


CASES = (
    Case(1000, 64, log_cost=True, target=0.75, stretch=0.85),
    Case(1, 1, peers=False, target=0.55),
    Case(1000, 64, delay_ms=50, floors=("aiohttp",), target=0.8),
)


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
    cases: tuple[Case, ...] = CASES
    bullmq_skipped: str | None = field(default_factory=bullmq_missing)  # why, if it does not run
    # Per case, medians over the rounds: rates ("router", "router_aiohttp",
    # "aiohttp", "httpx", "arq", "bullmq", msg/s at the sink) and paired
    # ratios ("router/aiohttp", "router_aiohttp/aiohttp", "router/ideal", ...).
    by_case: dict[Case, dict[str, float]] = field(default_factory=dict)
    # (case, transport) -> (Redis scripts and transactions, server µs) per
    # message, last round (redisdb.round_trips: commands, pipelined or not).
    trips: dict[tuple[Case, str], tuple[float, float]] = field(default_factory=dict)
    # (case, transport) -> Redis read events per message: the round trips.
    reads: dict[tuple[Case, str], float] = field(default_factory=dict)
    arq_own: dict[Case, float] = field(default_factory=dict)  # arq_peer.py's own figure
    # The message log's cost measured with two workers at once, per case and
    # round: (rate with it / without, worker CPU per message with / without).
    log_pairs: dict[Case, list[tuple[float, float]]] = field(default_factory=dict)
    # What report.py read before these cases (kept so that it works unchanged):
    # (wa_ids, in flight) -> fields, for the cases with a prompt bot.
    results: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    arq_reported: dict[tuple[int, int], float] = field(default_factory=dict)
    router_redis: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    _sinks: dict[int, Sink] = field(default_factory=dict)  # delay_ms -> sink

    def run(self) -> None:
        """Each case runs the floors, the router with each transport, arq and
        BullMQ back to back, so that every ratio compares runs a minute
        apart; rounds repeat all cases."""
        runs: dict[Case, list[dict[str, float]]] = {c: [] for c in self.cases}
        try:
            for _ in range(self.ctx.args.delivery_rounds):
                for case in self.cases:
                    runs[case].append(self.run_case(case))
            for case in self.cases:
                if case.log_cost:
                    try:
                        self.measure_log_pairs(case)
                    except Exception as e:  # an extra figure: the rest still reports
                        self.ctx.problems.append(f"message log pairs, {case.label}: {e}")
        finally:
            self.stop_sinks()
        for case, rs in runs.items():
            result = {f: statistics.median(r[f] for r in rs) for f in rs[0]}
            pairs = [(c, "aiohttp") for c in ("router", "router_aiohttp", "httpx", "arq", "bullmq")]
            pairs += [("router", "httpx"), ("router", "arq"), ("router", "bullmq")]
            pairs += [("router", "router_aiohttp"), ("router", "router_nolog")]
            for a, b in pairs:
                if a in rs[0] and b in rs[0]:
                    result[f"{a}/{b}"] = statistics.median(ratio(r[a], r[b]) for r in rs)
            if case.slow:
                for a in ("router", "router_aiohttp", "aiohttp"):
                    result[f"{a}/ideal"] = result[a] / case.ideal
            self.by_case[case] = result
            self._compat(case, result)

    def run_case(self, case: Case) -> dict[str, float]:
        floor = self.run_client_floor(case.in_flight, self.sink(case), case.floors)
        run = {"aiohttp": floor.get("aiohttp", NAN), "httpx": floor.get("httpx", NAN)}
        run["router"] = self.run_router(case, "h1")
        run["router_aiohttp"] = self.run_router(case, "aiohttp")
        if case.log_cost:
            run["router_nolog"] = self.run_router(case, "h1", log=False)
        if case.peers:
            run["arq"] = self.run_arq(case)
            if not self.bullmq_skipped:
                run["bullmq"] = self.run_bullmq(case)
        return run

    def measure_log_pairs(self, case: Case) -> None:
        """The message log's cost with two workers at once (bench/paired.py),
        one with ROUTER_MESSAGE_LOG=0: runs one after the other differ by
        more than the 15 % the goal allows on this machine (0.79 in two
        full runs, 0.97 in pairs). 4 x -n messages each, so that both
        deliver together for over a second; at least 2 rounds, so that each
        setting runs on each side once."""
        from paired import run_pairs

        base = {"LOG_LEVEL": "warning"}
        sides = (
            ("log", {**base, "ROUTER_MESSAGE_LOG": "1"}),
            ("nolog", {**base, "ROUTER_MESSAGE_LOG": "0"}),
        )
        rounds = max(2, self.ctx.args.delivery_rounds)
        pairs = run_pairs(
            self.ctx, sides, rounds, 4 * self.ctx.args.n, case.keys, case.in_flight, "log-pair"
        )
        self.log_pairs[case] = [
            (p.ratio("log", "nolog"), p.cpu_ratio("log", "nolog")) for p in pairs
        ]

    def _compat(self, case: Case, result: dict[str, float]) -> None:
        """The fields report.py's delivery table reads today."""
        if case.slow:
            return
        key = (case.keys, case.in_flight)
        self.results[key] = {
            **{f: result.get(f, NAN) for f in ("router", "arq", "bullmq", "httpx", "aiohttp")},
            "arq_jobs": case.in_flight,
            "bullmq_concurrency": case.in_flight,
            **{f"router/{p}": result.get(f"router/{p}", NAN) for p in ("arq", "bullmq", "httpx")},
        }
        self.router_redis[key] = self.trips.get((case, "h1"), (NAN, NAN))
        if case in self.arq_own:
            self.arq_reported[key] = self.arq_own[case]

    def sink(self, case: Case) -> Sink:
        """The run's sink for a prompt bot; a sink of its own for a slow one."""
        if not case.slow:
            return self.ctx.sink
        if case.delay_ms not in self._sinks:
            self._sinks[case.delay_ms] = Sink(self.ctx.procs, delay_ms=case.delay_ms)
        return self._sinks[case.delay_ms]

    def stop_sinks(self) -> None:
        for sink in self._sinks.values():
            sink.stop()
        self._sinks.clear()

    def profile(self) -> None:
        try:
            for case in self.cases:
                self.run_router(case, TRANSPORTS[0], profile=True)
        finally:
            self.stop_sinks()

    # the contenders

    def run_router(
        self, case: Case, transport: str, profile: bool = False, log: bool = True
    ) -> float:
        ctx = self.ctx
        n = ctx.args.n
        sink = self.sink(case)
        flush(ctx.redis_url)
        preload(ctx.redis_url, n, case.keys, log=log)
        sink.reset()
        routes = write_routes(
            ctx.tmp / f"routes-{case.in_flight}-{case.delay_ms}.yaml", sink.url, case.in_flight
        )
        env = {
            "REDIS_URL": ctx.redis_url,
            "ROUTES_FILE": str(routes),
            "LOG_LEVEL": "warning",
            "ROUTER_DELIVERY_TRANSPORT": transport,
            "ROUTER_MESSAGE_LOG": "1" if log else "0",
        }
        argv = router_argv("worker", "--burst")
        name = f"{case.keys}keys-{case.in_flight}-{case.delay_ms}ms-{transport}"
        name += "" if log else "-nolog"
        out = RESULTS / f"profile-delivery-{name}.txt"
        if profile:
            assert ctx.pyspy
            argv = record_command(ctx.pyspy, out, argv)
        before, reads = command_stats(ctx.redis_url), read_events(ctx.redis_url)
        proc = ctx.procs.start(f"router-worker-{name}", argv, env)
        w = watch(sink, proc, n, ctx.args.timeout)
        ctx.procs.stop(proc)
        reads = read_events(ctx.redis_url) - reads - 1  # less command_stats' own INFO
        trips, usec = round_trips(before, command_stats(ctx.redis_url))
        if not profile and log:
            self.trips[(case, transport)] = (trips / n, usec / n)
            self.reads[(case, transport)] = reads / n
        self.check_window(f"router ({transport} transport) {case.label}", w, n)
        if profile:
            title = f"router worker --burst, {n} messages, {case.label}, {transport} transport"
            ctx.profiles.append(summarize_profile(title, out, w.wall, n, "message"))
        return w.rate

    def run_arq(self, case: Case) -> float:
        """bench/peers/arq_peer.py: enqueues N jobs, then drains them in burst mode."""
        ctx = self.ctx
        n = ctx.args.n
        sink = self.sink(case)
        flush(ctx.redis_url)
        sink.reset()
        argv = [sys.executable, "arq_peer.py", "--redis", ctx.redis_url, "--sink", sink.url]
        argv += ["-n", str(n), "--keys", str(case.keys), "--max-jobs", str(case.in_flight)]
        name = f"arq-{case.keys}-{case.in_flight}-{case.delay_ms}ms"
        proc = ctx.procs.start(name, argv, cwd=PEERS)
        w = watch(sink, proc, n, ctx.args.timeout)
        ctx.procs.stop(proc)
        self.check_window(f"arq max_jobs={case.in_flight} {case.label}", w, n)
        text = (ctx.procs.logs / f"{name}.log").read_text()
        reported = re.findall(r"= (\d+) msg/s", text)
        if reported:
            self.arq_own[case] = float(reported[-1])
        return w.rate

    def run_bullmq(self, case: Case) -> float:
        """bench/peers/bullmq: preload.js adds N jobs with BullMQ's own addBulk,
        then worker.js drains them; the rate is taken at the sink, as for the others."""
        ctx = self.ctx
        n = ctx.args.n
        sink = self.sink(case)
        flush(ctx.redis_url)
        sink.reset()
        common = ["--redis", ctx.redis_url, "-n", str(n)]
        pre = subprocess.run(
            ["node", "preload.js", *common, "--keys", str(case.keys)],
            cwd=BULLMQ,
            capture_output=True,
            text=True,
            timeout=ctx.args.timeout,
        )
        what = f"bullmq concurrency={case.in_flight} {case.label}"
        if pre.returncode:
            ctx.problems.append(f"{what}: preload.js failed: {pre.stderr.strip()[-500:]}")
            return NAN
        argv = ["node", "worker.js", *common, "--sink", sink.url]
        argv += ["--concurrency", str(case.in_flight)]
        name = f"bullmq-{case.keys}-{case.in_flight}-{case.delay_ms}ms"
        proc = ctx.procs.start(name, argv, cwd=BULLMQ)
        w = watch(sink, proc, n, ctx.args.timeout)
        ctx.procs.stop(proc)
        self.check_window(what, w, n)
        return w.rate

    def run_client_floor(
        self,
        in_flight: int,
        sink: Sink | None = None,
        clients: tuple[str, ...] = ("aiohttp", "httpx"),
    ) -> dict[str, float]:
        """client_floor.py at one concurrency: {"httpx": msg/s, "aiohttp": msg/s}."""
        ctx = self.ctx
        sink = sink or ctx.sink
        n = ctx.args.n
        sink.reset()
        argv = [sys.executable, "client_floor.py", "--sink", sink.url, "-n", str(n)]
        argv += ["-c", str(in_flight), "--clients", *clients]
        try:
            out = subprocess.run(
                argv, cwd=PEERS, capture_output=True, text=True, timeout=ctx.args.timeout * 2
            )
        except subprocess.TimeoutExpired:
            killed = f"killed after {ctx.args.timeout * 2:g} s"
            ctx.problems.append(f"client_floor.py -c {in_flight}: {killed}")
            return {}
        if out.returncode:
            ctx.problems.append(f"client_floor.py failed: {out.stderr.strip()[-500:]}")
            return {}
        rates = {
            client: float(rate)
            for client, _, rate in re.findall(r"(\w+) in_flight=(\d+): (\d+) msg/s", out.stdout)
        }
        if (count := sink.count()) != len(clients) * n:
            ctx.problems.append(
                f"client_floor.py: the sink counted {count}, expected {len(clients) * n}"
            )
        slow = f", bot {sink.delay_ms:g} ms" if sink.delay_ms else ""
        say(
            f"client floor in_flight={in_flight}{slow}: "
            + ", ".join(f"{k} {v:,.0f} msg/s" for k, v in rates.items())
        )
        return rates

    def check_window(self, what: str, w: Window, n: int) -> None:
        say(
            f"{what}: {w.rate:,.0f} msg/s at the sink, {w.delivered}/{n} delivered, "
            f"process {w.wall:.2f} s, exit {w.returncode}"
        )
        window_problems(self.ctx, what, w, n)

    # the report

    def report_lines(self) -> list[str]:
        """The delivery section of the report, markdown (replaces report.py's
        _delivery)."""
        return report_lines(self)

    def chart_rows(self) -> list[tuple[str, dict[str, float]]]:
        """Per case, every contender's rate over aiohttp alone's (bench/chart.py)."""
        rows = []
        for case, d in self.by_case.items():
            bars = {
                "router": d.get("router/aiohttp", NAN),
                "router, aiohttp transport": d.get("router_aiohttp/aiohttp", NAN),
                "httpx alone": d.get("httpx/aiohttp", NAN),
            }
            if case.peers:
                bars["arq"] = d.get("arq/aiohttp", NAN)
                if "bullmq/aiohttp" in d:
                    bars["BullMQ"] = d["bullmq/aiohttp"]
            rows.append((self.chart_label(case), bars))
        return rows

    def chart_targets(self) -> dict[str, float]:
        """Per chart row, the router's target over aiohttp alone (a slow bot's
        absolute target turned into that ratio)."""
        targets = {}
        for case, d in self.by_case.items():
            if case.slow:
                targets[self.chart_label(case)] = ratio(case.target * case.ideal, d["aiohttp"])
            else:
                targets[self.chart_label(case)] = case.target
        return targets

    @staticmethod
    def chart_label(case: Case) -> str:
        return f"delivery: {case.label} (floor: aiohttp alone)"


def _verdict(value: float, target: float, stretch: float | None = None) -> str:
    if value != value or not target:
        return "-"
    value = round(value, 2)  # as the table shows it
    if stretch is not None and value >= stretch:
        return "**met**, stretch too"
    return "**met**" if value >= target else "**missed**"


def report_lines(delivery: Delivery) -> list[str]:
    """Markdown: a table of rates, one of ratios against the targets, notes."""
    ctx = delivery.ctx
    rounds = ctx.args.delivery_rounds
    bullmq = not delivery.bullmq_skipped
    out = [
        f"### Delivery: {ctx.args.n} messages to the sink, msg/s at the sink "
        f"(first to last delivery; median of {rounds} round{'s' * (rounds > 1)})",
        "",
        "| case | router | router, aiohttp transport | Redis round trips/msg | scripts/msg (µs) "
        "| aiohttp alone "
        "| httpx alone | arq (max_jobs) " + ("| BullMQ (concurrency) " if bullmq else "") + "|",
        "| --- |" + " ---: |" * (8 if bullmq else 7),
    ]
    for case, d in delivery.by_case.items():
        reads = " / ".join(
            f"{delivery.reads.get((case, t), NAN):.2f}".replace("nan", "-") for t in TRANSPORTS
        )
        trips = []
        for transport in TRANSPORTS:
            t, usec = delivery.trips.get((case, transport), (NAN, NAN))
            trips.append("-" if t != t else f"{t:.2f} ({usec:.0f})")
        peers = f"| {rate(d.get('arq', NAN))} ({case.in_flight}) " if case.peers else "| - "
        if bullmq:
            peers += f"| {rate(d['bullmq'])} ({case.in_flight}) " if "bullmq" in d else "| - "
        out.append(
            f"| {case.label} | {rate(d.get('router', NAN))} "
            f"| {rate(d.get('router_aiohttp', NAN))} | {reads} | {' / '.join(trips)} "
            f"| {rate(d.get('aiohttp', NAN))} | {rate(d.get('httpx', NAN))} {peers}|"
        )
    out += [
        "",
        "| case | router / aiohttp alone | target | met? | aiohttp transport / aiohttp alone "
        "| router / aiohttp transport | router / arq "
        + ("| router / BullMQ " if bullmq else "")
        + "|",
        "| --- |" + " ---: |" * (7 if bullmq else 6),
    ]
    for case, d in delivery.by_case.items():
        if case.slow:
            value = d.get("router/ideal", NAN)
            target = (
                f"router ≥ {case.target:g} x {case.in_flight}/{case.delay_ms / 1000:g} s "
                f"= {case.target * case.ideal:,.0f} msg/s: {x2(value)} of {case.ideal:,.0f}"
            )
        else:
            value = d.get("router/aiohttp", NAN)
            target = f"≥ {case.target:g}" + (
                f" (stretch {case.stretch:g})" if case.stretch is not None else ""
            )
        peers = f"| **{x2(d.get('router/arq', NAN))}** " if case.peers else "| - "
        if bullmq:
            peers += f"| **{x2(d['router/bullmq'])}** " if "router/bullmq" in d else "| - "
        out.append(
            f"| {case.label} | **{x2(d.get('router/aiohttp', NAN))}** | {target} "
            f"| {_verdict(value, case.target, case.stretch)} "
            f"| {x2(d.get('router_aiohttp/aiohttp', NAN))} "
            f"| **{x2(d.get('router/router_aiohttp', NAN))}** {peers}|"
        )
    out += [
        "",
        "In flight: the router's `max_in_flight`, arq's `max_jobs`"
        + (" and BullMQ's `concurrency`" if bullmq else "")
        + " (in brackets), the floors' concurrent POSTs. The router's chatbot sink posts "
        "through the router's lean HTTP/1.1 client (router/plugin/h1.py, the "
        "`ROUTER_DELIVERY_TRANSPORT` default `h1`) or through aiohttp's session (`=aiohttp`); "
        "router / aiohttp transport is what the lean client buys. Issue 23 also asks for "
        "router / BullMQ >= 2 at 1,000 wa_ids. "
        'The "aiohttp alone" and "httpx alone" are client_floor.py: the same '
        "POSTs (same body bytes and headers as the router's chatbot sink) in a loop, no Redis, "
        "on the router's event loop; arq's jobs post with aiohttp too. With one wa_id the "
        "router delivers strictly in order, one at a time; arq keeps no order at all"
        + (
            ", nor does BullMQ above concurrency 1 (per-key order needs BullMQ Pro's groups)"
            if bullmq
            else ""
        )
        + ". The slow bot is the same sink answering after its delay: its target is absolute, "
        "a share of what that many concurrent POSTs can do at best. Each case runs the floors, "
        "the router with each transport and the peers back to back; ratios are medians of "
        "those paired runs. Redis round trips/msg: requests Redis read off its sockets per "
        "message delivered (INFO stats total_reads_processed; a pipeline is one); scripts/msg: "
        "the commands in them (EVALSHA, MULTI/EXEC, BLPOP; INFO commandstats), with Redis "
        "server time per message in brackets; each as default transport / aiohttp transport. "
        "Both are server-wide: anything else using the same Redis during the run is counted.",
    ]
    for case, d in delivery.by_case.items():
        if case.log_cost:
            value = d.get("router/router_nolog", NAN)
            out.append(
                f"**The message log's cost** ({case.label}): the router with it on (the "
                f"default) / with `ROUTER_MESSAGE_LOG=0`: **{x2(value)}** "
                f"(goal ≥ 0.85: {_verdict(value, 0.85)}); "
                f"{rate(d.get('router', NAN))} vs {rate(d.get('router_nolog', NAN))} msg/s, "
                "one run after the other."
            )
            pairs = delivery.log_pairs.get(case)
            if pairs:
                rates = [r for r, _ in pairs]
                paired = median(rates)
                out.append(
                    "With two workers at once instead (bench/paired.py: "
                    f"{4 * delivery.ctx.args.n:,} messages each, one with the log off, at the "
                    "same time, each from its own database to its own sink): "
                    f"**{x2(paired)}** (per round "
                    + ", ".join(x2(r) for r in rates)
                    + f"; goal ≥ 0.85: {_verdict(paired, 0.85)}); worker CPU per message "
                    f"{x2(median([c for _, c in pairs]))} of the one without. The shared Redis "
                    "leaves the log's Redis time out of this ratio: measured apart, at most 9 µs "
                    "a message (docs/benchmarks.md)."
                )
    if delivery.bullmq_skipped:
        out.append(f"**BullMQ not run**: {delivery.bullmq_skipped}.")
    if delivery.arq_own:
        out.append(
            "arq_peer.py's own figures (worker start-up included, last round): "
            + ", ".join(f"{c.label}: {v:.0f}" for c, v in delivery.arq_own.items())
            + " msg/s."
        )
    out.append("")
    return out


def main() -> int:
    """Run the delivery cases alone (the bench's Redis, a sink) and print the report."""
    import argparse

    from alone import run_alone

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=5000, help="messages per run (default 5000)")
    p.add_argument("--rounds", type=int, default=1, help="runs per case (median)")
    p.add_argument("--timeout", type=float, default=180, help="seconds any run may take")
    p.add_argument("--case", type=int, nargs="+", help="indexes into CASES (default: all)")
    p.add_argument("--svg", help="also draw the ratios (bench/chart.py) to this file")
    args = p.parse_args()
    args.delivery_rounds = args.rounds
    cases = tuple(CASES[i] for i in args.case) if args.case else CASES
    made: list[Delivery] = []

    def make(ctx: Context) -> Delivery:
        made.append(Delivery(ctx, cases))
        return made[0]

    status = run_alone("delivery", args, make)
    if args.svg and made:
        from chart import write_svg

        write_svg(made[0].chart_rows(), args.svg, targets=made[0].chart_targets())
        say(f"wrote {args.svg}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
