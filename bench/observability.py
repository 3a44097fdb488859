"""Observability: what Prometheus metrics and the per-attempt log line cost,
every figure a ratio to the same program with ROUTER_METRICS=0 (no /metrics,
every instrument a no-op: the floor), measured back to back in each round.

- Ingest: `router api` (one process, LOG_LEVEL=warning, wrk -t1 -c32 with
  post.lua after a warm-up, as the ingest part's router) with
  ROUTER_METRICS=0, and with metrics on while a scraper GETs /metrics once a
  second during the measured wrk run (a Prometheus scraping 15 to 60 times
  more often than usual: realistic to pessimistic). Ratios of req/s and of
  p99, on / off.
- Delivery: N messages (--observability-n) stored over 1,000 wa_ids as
  bench/delivery.py stores them, drained by `router worker` to the bench's
  sink at max_in_flight 64 (delivery.py's main case), the rate taken at the
  sink from its first delivery to its last: with ROUTER_METRICS=0 and
  LOG_LEVEL=warning (the floor); with metrics on, ROUTER_METRICS_PORT set and
  scraped once a second, LOG_LEVEL=warning; and the same with LOG_LEVEL=info
  (the default: one line per delivery attempt, console format, written to
  the process's log file under bench/results/logs as it would go to stderr).

Then the info line alone, in pairs at once (bench/paired.py), one pair per
delivery round: two `router worker`s with metrics on, one at LOG_LEVEL=info
and one at warning, each draining N messages from a database of its own
to a sink of its own at the same time, their rates compared over the
window in which both were delivering. The three runs above, made one
after the other, differ from round to round by more than a 3 % cost; the
pair meets the same machine. Checked as above: every message delivered,
one "delivered" line per message in the info worker's log, none in the
other's.

The delivery runs use `router worker` without --burst, stopped (SIGTERM)
once the sink has counted N: `router worker --burst` does not serve
ROUTER_METRICS_PORT (router/cli/serving.py returns from _run_workers before starting
the metrics server), so it could not be scraped; all three runs use the same
mode, so the pair stays fair. N defaults to 4 x -n: at a few thousand msg/s
a drain of 5,000 lasts about a second, too short for a once-a-second scrape
to land in it more than once, or for a 5 % difference to stand out of the
noise.

Order: ingest alternates which of the two goes first from round to round,
delivery rotates its three runs, so that neither side always runs on a
machine warmed (or disturbed) by the other. Checks, any of which fails the
run (ctx.problems): every scrape answered 200, as many scrapes as seconds
scraped; with metrics on, the last scrape counts at least every request
answered 200 (ingest) or every message delivered (delivery), and
router_redis_up is 1; with ROUTER_METRICS=0, /metrics answers 404 on the
API; every request answered 200 and stored, every message delivered once;
at LOG_LEVEL=info one "delivered" line per message in the worker's log, at
warning none.

The Redis side of the new counts (messages, acknowledged, oldest head: kept
by the enqueue, claim and ack scripts) runs in both runs alike, whatever
ROUTER_METRICS says, so these ratios do not include it; it was measured on
its own when the counts were added. Only the queue gauges' read at a scrape
(at most once a second) is Redis work that the metrics-on runs add.

    .venv/bin/python bench/observability.py --rounds 3    # alone
"""

from __future__ import annotations

import http.client
import re
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field

import stack
from cluster import CpuSampler, cpu_seconds
from context import Context, window_problems
from destination import Sink, Window
from fmt import median, pct, rate, ratio, x0, x2
from ingest import CASES as INGEST_CASES
from ingest import POST_LUA, WrkResult, run_wrk, stored
from ingest import write_routes as ingest_routes
from paired import Pair, run_pairs
from preload import preload
from procs import HOST, free_port, router_argv, say, wait_http, write_routes
from redisdb import flush

KEYS = 1000  # wa_ids of the delivery runs: delivery.py's main case
IN_FLIGHT = 64  # max_in_flight, the same
CONNECTIONS = 32  # wrk -c, as the ingest part's router cases
EVERY = 1.0  # seconds between scrapes
GOAL = 0.95  # the goal: at most 5 % cost
NAN = float("nan")
ROUTE = "/v1/store_message"
DESTINATION = "chatbot"

# (key, label, env): the floor first. LOG_FORMAT is set so that the caller's
# environment cannot move it; console is the default.
INGEST = (
    ("off", "ROUTER_METRICS=0", {"ROUTER_METRICS": "0"}),
    ("on", "metrics on, /metrics scraped every second", {"ROUTER_METRICS": "1"}),
)
DELIVERY = (
    ("off", "ROUTER_METRICS=0, LOG_LEVEL=warning", {"ROUTER_METRICS": "0"}),
    (
        "on",
        "metrics on (ROUTER_METRICS_PORT, scraped every second), LOG_LEVEL=warning",
        {"ROUTER_METRICS": "1"},
    ),
    (
        "info",
        "metrics on and scraped, LOG_LEVEL=info (a line per delivery attempt)",
        {"ROUTER_METRICS": "1", "LOG_LEVEL": "info"},
    ),
)
# The info line alone, measured in pairs at once (bench/paired.py): metrics
# on in both, as in the "info" run above; no scraper.
PAIR = (
    ("warning", {"ROUTER_METRICS": "1", "LOG_LEVEL": "warning"}),
    ("info", {"ROUTER_METRICS": "1", "LOG_LEVEL": "info"}),
)
LINE_GOAL = 0.97  # issue 23: the info line costs at most 3 % of delivery
DELIVERED_LINE = re.compile(r" INFO router\.worker: delivered ")


# -- the scraper -----------------------------------------------------------------


@dataclass
class Scrape:
    at: float  # perf_counter when sent
    status: int  # 0: no answer
    ms: float
    size: int
    body: str = ""


class Scraper(threading.Thread):
    """GET /metrics every EVERY seconds on a fixed schedule (the first at
    once), a new connection each time, until finish(): a Prometheus."""

    def __init__(self, port: int, every: float = EVERY) -> None:
        super().__init__(daemon=True)
        self.port, self.every = port, every
        self.scrapes: list[Scrape] = []
        self._done = threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        while not self._done.wait(max(0.0, due - time.monotonic())):
            self.scrapes.append(scrape(self.port))
            due += self.every

    def finish(self) -> list[Scrape]:
        self._done.set()
        self.join(timeout=10)
        return self.scrapes


def scrape(port: int, keep_body: bool = False) -> Scrape:
    began = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            answer = conn.getresponse()
            raw = answer.read()
            status = answer.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return Scrape(began, 0, (time.perf_counter() - began) * 1000, 0)
    ms = (time.perf_counter() - began) * 1000
    return Scrape(began, status, ms, len(raw), raw.decode(errors="replace") if keep_body else "")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a scrape's text (nan when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return NAN


# -- the measurement ---------------------------------------------------------------


@dataclass
class Scrapes:
    """One run's scrapes, as the report says them."""

    count: int  # answered 200
    failed: int  # any other answer, or none
    inside: int  # sent during the measured window
    ms: float  # median time to answer
    size: int  # bytes of the last answer


def _summary(scrapes: list[Scrape], t0: float, t1: float | None) -> Scrapes:
    ok = [s for s in scrapes if s.status == 200]
    inside = sum(1 for s in scrapes if t1 is not None and t0 <= s.at <= t1)
    return Scrapes(
        count=len(ok),
        failed=len(scrapes) - len(ok),
        inside=inside,
        ms=statistics.median(s.ms for s in ok) if ok else NAN,
        size=ok[-1].size if ok else 0,
    )


@dataclass
class Observability:
    ctx: Context
    # key ("off", "on") -> one wrk result per round
    ingest: dict[str, list[WrkResult]] = field(default_factory=dict)
    # key ("off", "on", "info") -> msg/s at the sink, one per round
    delivery: dict[str, list[float]] = field(default_factory=dict)
    # (phase, key) -> one per round, for the runs scraped
    scrapes: dict[tuple[str, str], list[Scrapes]] = field(default_factory=dict)
    log_lines: dict[str, list[int]] = field(default_factory=dict)  # delivered lines per run
    # (phase, key) -> the router process's CPU µs (utime + stime, /proc) per
    # request or message over the measured run, one per round: steadier than
    # a rate on a shared machine, where the router waits for a core.
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # The info line's pairs at once (bench/paired.py), one per delivery round.
    pairs: list[Pair] = field(default_factory=list)

    @property
    def n(self) -> int:
        n = getattr(self.ctx.args, "observability_n", None)
        return int(n) if n else 4 * self.ctx.args.n

    def run(self) -> None:
        a = self.ctx.args
        for rnd in range(1, a.rounds + 1):
            order = INGEST if rnd % 2 else INGEST[::-1]
            for key, label, env in order:
                self.measure_ingest(rnd, key, label, env)
        for rnd in range(1, a.delivery_rounds + 1):
            shift = (rnd - 1) % len(DELIVERY)
            for key, label, env in DELIVERY[shift:] + DELIVERY[:shift]:
                self.measure_delivery(rnd, key, label, env)
        if a.delivery_rounds:
            self.measure_pairs(a.delivery_rounds)

    def measure_pairs(self, rounds: int) -> None:
        """The info line's cost, two workers at once (bench/paired.py)."""
        pairs = run_pairs(
            self.ctx, PAIR, rounds, self.n, KEYS, IN_FLIGHT, "obs-pair", self.count_log_lines
        )
        self.pairs += pairs
        for rnd, pair in enumerate(pairs, 1):
            for key, want in (("info", self.n), ("warning", 0)):
                got = pair.lines.get(key, want)
                if got != want:
                    self.ctx.problems.append(
                        f"obs-pair-r{rnd}: {got} 'delivered' lines in the {key} worker's log, "
                        f"expected {want}"
                    )

    # ingest

    def measure_ingest(self, rnd: int, key: str, label: str, extra: dict[str, str]) -> None:
        ctx = self.ctx
        case = INGEST_CASES["router"]  # the plain router: one route, one destination
        name = f"obs-api-{key}-r{rnd}"
        proc, port, url = start_plain_api(ctx, name, extra)
        scraper = Scraper(port) if key != "off" else None
        final = None
        try:
            wait_http(port, "/healthz", proc)
            warm = run_wrk(url, POST_LUA, ctx.args.warmup, CONNECTIONS)
            if scraper is not None:
                scraper.start()
            t0, cpu0 = time.perf_counter(), cpu_seconds([proc.pid])
            try:
                result = run_wrk(url, POST_LUA, ctx.args.duration, CONNECTIONS)
            finally:
                t1, cpu1 = time.perf_counter(), cpu_seconds([proc.pid])
                scrapes = scraper.finish() if scraper is not None else []
            final = scrape(port, keep_body=True)
        finally:
            ctx.procs.stop(proc)
        self.ingest.setdefault(key, []).append(result)
        used = ratio((cpu1 - cpu0) * 1e6, result.requests)
        self.cpu.setdefault(("ingest", key), []).append(used)
        answered = warm.requests + result.requests - warm.non_2xx - result.non_2xx
        what = f"observability ingest {label} round {rnd}"
        if scraper is not None:
            summary = _summary(scrapes, t0, t1)
            self.scrapes.setdefault(("ingest", key), []).append(summary)
            self.check_scrapes(what, summary, int((t1 - t0) // EVERY))
            self.check_counted(
                what,
                final,
                "router_ingest_requests_total",
                answered,
                route=ROUTE,
                status="200",
            )
        elif final.status != 404:
            ctx.problems.append(f"{what}: GET /metrics answered {final.status}, not 404")
        count, queue = stored(ctx, case)
        if count < answered:
            ctx.problems.append(
                f"{what}: answered 200 to {answered} requests, but Redis holds {count} "
                f"messages in {queue}"
            )
        bad = warm.non_2xx + result.non_2xx + warm.socket_errors + result.socket_errors
        if bad:
            ctx.problems.append(
                f"{what}: {warm.non_2xx + result.non_2xx} non-2xx responses, "
                f"{warm.socket_errors + result.socket_errors} socket errors (warm-up included)"
            )
        scraped = ""
        if scraper is not None:
            s = self.scrapes[("ingest", key)][-1]
            scraped = f", {s.count} scrapes answered 200 ({s.failed} not), median {s.ms:.1f} ms"
        say(
            f"{what}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms{scraped}"
        )

    # delivery

    def measure_delivery(self, rnd: int, key: str, label: str, extra: dict[str, str]) -> None:
        ctx = self.ctx
        n = self.n
        sink = ctx.sink
        flush(ctx.redis_url)
        preload(ctx.redis_url, n, KEYS)
        sink.reset()
        routes = write_routes(ctx.tmp / "routes-observability-delivery.yaml", sink.url, IN_FLIGHT)
        env = {
            "REDIS_URL": ctx.redis_url,
            "ROUTES_FILE": str(routes),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "console",
            "HOST": HOST,  # where ROUTER_METRICS_PORT listens (default 0.0.0.0)
            **extra,
        }
        port = None
        if key != "off":
            port = free_port()
            env["ROUTER_METRICS_PORT"] = str(port)
        name = f"obs-worker-{key}-r{rnd}"
        proc = ctx.procs.start(name, router_argv("worker"), env)
        sampler = CpuSampler(proc.pid)
        sampler.start()
        scraper = Scraper(port) if port is not None else None
        final = None
        try:
            if port is not None and scraper is not None:
                wait_http(port, "/healthz", proc)
                scraper.start()
            try:
                w = drain(sink, proc, n, ctx.args.timeout)
            finally:
                sampler.finish()
                scrapes = scraper.finish() if scraper is not None else []
            if port is not None:
                final = self.final_scrape(port, n)
        finally:
            ctx.procs.stop(proc)
        w.returncode = proc.returncode
        w.delivered = sink.count()
        what = f"observability delivery {label} round {rnd}"
        window_problems(ctx, what, w, n)
        self.delivery.setdefault(key, []).append(w.rate)
        used = ratio(sampler.cores(w.first_t, w.last_t) * 1e6, w.rate)
        self.cpu.setdefault(("delivery", key), []).append(used)
        if scraper is not None and final is not None:
            summary = _summary(scrapes, w.first_t or 0.0, w.last_t)
            self.scrapes.setdefault(("delivery", key), []).append(summary)
            self.check_scrapes(what, summary, int(w.wall // EVERY) - 1)
            self.check_counted(
                what,
                final,
                "router_deliveries_total",
                n,
                destination=DESTINATION,
                outcome="ok",
            )
        lines = self.count_log_lines(name)
        self.log_lines.setdefault(key, []).append(lines)
        want = n if env["LOG_LEVEL"] == "info" else 0
        if lines != want:
            ctx.problems.append(f"{what}: {lines} 'delivered' lines in {name}.log, expected {want}")
        scraped = ""
        if scraper is not None:
            s = self.scrapes[("delivery", key)][-1]
            scraped = f", {s.count} scrapes ({s.inside} within the window), median {s.ms:.1f} ms"
        say(
            f"{what}: {w.rate:,.0f} msg/s at the sink, {w.delivered}/{n} delivered, "
            f"{lines} log lines{scraped}, exit {w.returncode}"
        )

    def final_scrape(self, port: int, n: int) -> Scrape:
        """After the sink has counted N: the worker's counters once its last
        acks have landed (up to 5 s), outside the measured window."""
        deadline = time.monotonic() + 5
        while True:
            last = scrape(port, keep_body=True)
            if last.status == 200:
                done = sample(
                    last.body, "router_deliveries_total", destination=DESTINATION, outcome="ok"
                )
                if done >= n:
                    return last
            if time.monotonic() > deadline:
                return last
            time.sleep(0.1)

    def count_log_lines(self, name: str) -> int:
        path = self.ctx.procs.logs / f"{name}.log"
        try:
            with path.open(errors="replace") as f:
                return sum(1 for line in f if DELIVERED_LINE.search(line))
        except OSError:
            return -1

    # checks

    def check_scrapes(self, what: str, s: Scrapes, expect: int) -> None:
        if s.failed:
            self.ctx.problems.append(f"{what}: {s.failed} scrape(s) not answered 200")
        if s.count < expect:
            self.ctx.problems.append(f"{what}: {s.count} scrapes answered, expected {expect}")

    def check_counted(
        self, what: str, final: Scrape, name: str, at_least: int, **labels: str
    ) -> None:
        """The metrics were on: the last scrape counts everything done."""
        if final.status != 200:
            self.ctx.problems.append(f"{what}: the last GET /metrics answered {final.status}")
            return
        counted = sample(final.body, name, **labels)
        if not counted >= at_least:
            self.ctx.problems.append(
                f"{what}: {name} {labels} = {counted:g} in the last scrape, expected at "
                f"least {at_least}"
            )
        if sample(final.body, "router_redis_up") != 1:
            self.ctx.problems.append(f"{what}: router_redis_up is not 1 in the last scrape")

    # figures

    def ingest_ratios(self, f: str = "rps") -> list[float]:
        on, off = self.ingest.get("on", []), self.ingest.get("off", [])
        return [ratio(getattr(a, f), getattr(b, f)) for a, b in zip(on, off, strict=True)]

    def delivery_ratios(self, key: str) -> list[float]:
        on, off = self.delivery.get(key, []), self.delivery.get("off", [])
        return [ratio(a, b) for a, b in zip(on, off, strict=True)]

    def cpu_ratios(self, phase: str, key: str) -> list[float]:
        """This run's router CPU per message over the same round's floor's."""
        this, off = self.cpu.get((phase, key), []), self.cpu.get((phase, "off"), [])
        return [ratio(a, b) for a, b in zip(this, off, strict=True)]

    def rows(self) -> list[tuple[str, str, float, float, list[float], list[float]]]:
        """(label, unit, floor's median, this one's median, per-round ratios,
        per-round ratios of router CPU per message)."""
        out = []
        if self.ingest.get("on"):
            out.append(
                (
                    "ingest, metrics on, /metrics scraped every second",
                    "req/s",
                    median([r.rps for r in self.ingest["off"]]),
                    median([r.rps for r in self.ingest["on"]]),
                    self.ingest_ratios(),
                    self.cpu_ratios("ingest", "on"),
                )
            )
        labels = {
            "on": "delivery, metrics on, scraped every second",
            "info": "delivery, metrics on + LOG_LEVEL=info (a line per attempt)",
        }
        for key, label in labels.items():
            if self.delivery.get(key):
                out.append(
                    (
                        label,
                        "msg/s",
                        median(self.delivery["off"]),
                        median(self.delivery[key]),
                        self.delivery_ratios(key),
                        self.cpu_ratios("delivery", key),
                    )
                )
        return out

    # the report

    def report_lines(self) -> list[str]:
        rows = self.rows()
        if not rows:
            return []
        a = self.ctx.args
        out = [
            f"### Cost of metrics and logs: ratio to ROUTER_METRICS=0 (median of {a.rounds} "
            f"ingest and {a.delivery_rounds} delivery round"
            f"{'s' * (max(a.rounds, a.delivery_rounds) > 1)}, each a pair run back to back)",
            "",
            "| case | ROUTER_METRICS=0 | this case | ratio to ROUTER_METRICS=0 (per round) "
            "| cost | goal: ≤ 5 % cost | router CPU per message, to ROUTER_METRICS=0 "
            "(per round) |",
            "| --- | ---: | ---: | --- | ---: | --- | --- |",
        ]
        for label, unit, floor, this, ratios, cpu in rows:
            ratio = median(ratios)
            out.append(
                f"| {label} | {rate(floor)} {unit} | {rate(this)} {unit} "
                f"| **{x2(ratio)}** ({', '.join(x2(r) for r in ratios)}) | {pct(1 - ratio)} "
                f"| {_verdict(ratio)} | {x2(median(cpu))} ({', '.join(x2(r) for r in cpu)}) |"
            )
        for paragraph in self.notes():
            out += ["", paragraph]
        out.append("")
        return out

    def notes(self) -> list[str]:
        a = self.ctx.args
        text = []
        if self.ingest.get("on"):
            p99 = self.ingest_ratios("p99_ms")
            p50 = self.ingest_ratios("p50_ms")
            s = self.scrapes.get(("ingest", "on"), [])
            text.append(
                f"Ingest: `router api`, 1 process, LOG_LEVEL=warning, wrk -t1 -c{CONNECTIONS} "
                f"-d{a.duration}s after {a.warmup} s warm-up, post.lua. Latency on / off: p99 "
                f"**{x2(median(p99))}** (per round {', '.join(x2(r) for r in p99)}), p50 "
                f"{x2(median(p50))} (p99 {_ms(self.ingest, 'on')} ms with metrics, "
                f"{_ms(self.ingest, 'off')} ms without, medians). "
                + _scrape_note(s, "API port", "the measured wrk run")
            )
        if self.delivery.get("off"):
            lines = self.log_lines.get("info", [])
            s = [*self.scrapes.get(("delivery", "on"), [])]
            s += self.scrapes.get(("delivery", "info"), [])
            logs = ""
            if self.delivery.get("info") and self.delivery.get("on"):
                own = [
                    ratio(i, o)
                    for i, o in zip(self.delivery["info"], self.delivery["on"], strict=True)
                ]
                logs = (
                    f" The info lines alone (metrics on in both): {x2(median(own))} "
                    f"(per round {', '.join(x2(r) for r in own)})."
                )
            text.append(
                f"Delivery: {self.n:,} messages over {KEYS:,} wa_ids, max_in_flight "
                f"{IN_FLIGHT}, default transport, the rate at the sink from first to last "
                "delivery; `router worker` stopped once the sink counted them all (not "
                "`--burst`, which does not serve ROUTER_METRICS_PORT: see bench/observability.py)."
                f" At LOG_LEVEL=info the worker wrote "
                f"{', '.join(f'{x:,}' for x in lines) or '-'} 'delivered' lines (console "
                "format) to its log file, as it would to stderr."
                + logs
                + " "
                + _scrape_note(
                    s,
                    "ROUTER_METRICS_PORT",
                    "the sink's measured window",
                    " (the metrics-on runs, then the info runs, by round)",
                )
            )
        if self.pairs:
            text.append(self.pairs_note())
        cpu = {k: median(v) for k, v in self.cpu.items()}
        text.append(
            "Router CPU per message: the router process's utime + stime (/proc, 10 ms "
            "ticks) over the measured wrk run per request, or over the sink's window (sampled "
            "every 50 ms) per message delivered; above 1, metrics cost CPU. It does not "
            "depend on how much of a core the router got, so on this shared machine it is "
            "the steadier figure; the goal is judged on the rates, as asked. Medians, µs per "
            "message: "
            + "; ".join(f"{phase} {key} {x0(v)}" for (phase, key), v in cpu.items())
            + "."
        )
        text.append(
            "Each round runs the pair (delivery: the three) back to back, in an order "
            "that alternates (rotates) from round to round; ratios are medians of each "
            "round's figure over the same round's floor. Not in these ratios: the Redis "
            "work of the queue counts that `router status` and the gauges read (messages, "
            "acknowledged, oldest head): the enqueue, claim and ack Lua scripts keep them "
            "in both runs alike, whatever ROUTER_METRICS says, so it is the same on both "
            "sides; it was measured separately when the counts were added. A scrape's own "
            "Redis read (the queue gauges, at most once a second) is in the metrics-on runs."
        )
        return text

    def pair_ratios(self) -> tuple[list[float], list[float]]:
        """Per round: the info worker's rate over the warning one's, and its
        CPU per message over the warning one's."""
        rates = [p.ratio("info", "warning") for p in self.pairs]
        return rates, [p.cpu_ratio("info", "warning") for p in self.pairs]

    def pairs_note(self) -> str:
        rates, cpu = self.pair_ratios()
        ratio = median(rates)
        verdict = "-" if ratio != ratio else ("met" if round(ratio, 2) >= LINE_GOAL else "missed")
        info = median([p.cpu_us.get("info", NAN) for p in self.pairs])
        warning = median([p.cpu_us.get("warning", NAN) for p in self.pairs])
        return (
            "**The info line, measured in pairs at once** (bench/paired.py): two `router "
            f"worker`s, metrics on in both, one at LOG_LEVEL=info and one at warning, each "
            f"draining {self.n:,} messages over {KEYS:,} wa_ids at max_in_flight {IN_FLIGHT} "
            "from a database of its own to a sink of its own, at the same time; their rates "
            "compared over the window in which both were delivering, sides swapped by round. "
            f"Info over warning: **{x2(ratio)}** (per round {', '.join(x2(r) for r in rates)}),"
            f" a cost of **{pct(1 - ratio)}** (≤ 3 %: **{verdict}**); worker CPU per message "
            f"{x2(median(cpu))} of the warning one's (per round "
            f"{', '.join(x2(r) for r in cpu)}; medians {x0(info)} against {x0(warning)} µs). "
            "Run one after the other, as in the table, rounds of the same two settings "
            "differ by more than the cost measured; side by side, the machine's slow and "
            "fast seconds fall on both."
        )

    def chart_rows(self) -> list[tuple[str, dict[str, float]]]:
        bars = {
            "router, metrics on: ingest": median(self.ingest_ratios()),
            "router, metrics on: delivery": median(self.delivery_ratios("on")),
            "router, metrics + info logs: delivery": median(self.delivery_ratios("info")),
        }
        if not any(v == v for v in bars.values()):
            return []
        return [(CHART_LABEL, bars)]

    def chart_targets(self) -> dict[str, float]:
        return {CHART_LABEL: GOAL}


CHART_LABEL = "cost of metrics and logs (floor: ROUTER_METRICS=0)"


def drain(sink: Sink, proc: subprocess.Popen[bytes], n: int, timeout: float) -> Window:
    """Poll the sink's count every 10 ms until it reaches `n` (a `router
    worker` does not exit by itself): the window from the first poll that saw
    a delivery to the last that saw one more. The caller stops the process."""
    w = Window()
    began = time.perf_counter()
    deadline = began + timeout
    while True:
        count = sink.count()
        now = time.perf_counter()
        w.saw(count, now)
        if count >= n or proc.poll() is not None:
            break
        if now > deadline:
            w.timed_out = True
            break
        time.sleep(0.01)
    w.wall = time.perf_counter() - began
    return w


def _scrape_note(scrapes: list[Scrapes], where: str, window: str, runs: str = "") -> str:
    if not scrapes:
        return ""
    return (
        f"Scrapes of GET /metrics on the {where}, one a second: "
        f"{', '.join(str(s.count) for s in scrapes)} answered 200 per run{runs} "
        f"({sum(s.failed for s in scrapes)} not; "
        f"{', '.join(str(s.inside) for s in scrapes)} sent during {window}), "
        f"median {median([s.ms for s in scrapes]):.1f} ms each, "
        f"{scrapes[-1].size / 1024:.1f} KiB."
    )


def _ms(results: dict[str, list[WrkResult]], key: str) -> str:
    return x2(median([r.p99_ms for r in results.get(key, [])]))


def start_plain_api(
    ctx: Context, name: str, extra: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int, str]:
    """`router api` (one process, the chosen stack) on the plain route of
    bench/ingest.py, on an emptied Redis, with `extra` in its environment:
    the process, its port, and the URL wrk posts to."""
    flush(ctx.redis_url)
    routes = ingest_routes(ctx.tmp / f"routes-{name}.yaml", "plain", ctx.sink.url)
    port = free_port()
    env = {
        "REDIS_URL": ctx.redis_url,
        "ROUTES_FILE": str(routes),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "console",
        "ROUTER_PROCESSES": "1",
        **stack.router_env(),
        **extra,
    }
    argv = router_argv("api", "--host", HOST, "--port", str(port))
    return ctx.procs.start(name, argv, env), port, f"http://{HOST}:{port}{ROUTE}"


def _verdict(ratio: float) -> str:
    if ratio != ratio:
        return "-"
    return "**met**" if round(ratio, 2) >= GOAL else "**missed**"


def main() -> int:
    """Run this part alone (the bench's Redis, a sink) and print its report."""
    from alone import rate_pair_arguments, run_alone

    return run_alone("observability", rate_pair_arguments(__doc__ or ""), Observability)


if __name__ == "__main__":
    raise SystemExit(main())
