"""Tracing: what OpenTelemetry costs with OTEL_EXPORTER_OTLP_ENDPOINT set
(docs/tracing.md), every figure a ratio to the same program without it
(tracing off, the floor), measured back to back in each round.

- Ingest: `router api` (one process, LOG_LEVEL=warning, metrics on as by
  default, wrk -t1 -c32 with post_traced.lua: post.lua's message with a
  sender's `traceparent`, in both runs, after a warm-up), with tracing off
  and on. Ratios of req/s and of p99, on / off.
- Delivery: N messages (--observability-n, as bench/observability.py)
  stored over 1,000 wa_ids, drained by `router worker` to the bench's sink
  at max_in_flight 64, the rate taken at the sink from its first delivery
  to its last, with tracing off and on.

With tracing on the router exports to bench/peers/otlp_sink.py, a collector
that answers 200 at once and counts the spans it got, with the SDK's
defaults (a batch of up to 512 spans every 5 s or when 512 are queued, a
queue of 2,048 spans: spans past it are dropped, by the SDK, and counted
here as received / expected). The exporter runs in a thread of the router
process, so the router CPU figures include encoding and sending the spans.
The cost with tracing off is one `is None` check per request and per
attempt: not measurable, so not measured beside a router without the code.

Checks, any of which fails the run (ctx.problems): every request answered
200 and stored, every message delivered once; with tracing on, the
collector got spans at all (the count is reported, not required: the SDK
drops what its queue cannot hold); with it off, none.

    .venv/bin/python bench/tracing.py --rounds 3    # alone
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field

import stack
from cluster import CpuSampler, cpu_seconds
from context import Context, window_problems
from fmt import median, pct, rate, ratio, x0, x2
from ingest import CASES as INGEST_CASES
from ingest import WrkResult, run_wrk, stored
from observability import CONNECTIONS, IN_FLIGHT, KEYS, drain, start_plain_api
from preload import preload
from procs import HOST, PEERS, Procs, free_port, router_argv, say, wait_http, write_routes
from redisdb import flush

TRACED_LUA = PEERS / "post_traced.lua"
RUNS = (("off", "tracing off"), ("on", "tracing on (OTLP/HTTP to a collector)"))
CHART_LABEL = "cost of tracing (floor: tracing off)"


class OtlpSink:
    """bench/peers/otlp_sink.py on the server stack: the collector."""

    def __init__(self, procs: Procs) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.procs = procs
        argv = stack.uvicorn_argv("otlp_sink:app", HOST, self.port)
        self.proc = procs.start("otlp-sink", argv, cwd=PEERS)
        wait_http(self.port, "/count", self.proc)

    def _call(self, method: str, path: str) -> bytes:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            conn.request(method, path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def spans(self) -> int:
        return int(json.loads(self._call("GET", "/count"))["spans"])

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stop(self) -> None:
        self.procs.stop(self.proc)


@dataclass
class Tracing:
    ctx: Context
    ingest: dict[str, list[WrkResult]] = field(default_factory=dict)  # key -> per round
    delivery: dict[str, list[float]] = field(default_factory=dict)  # key -> msg/s per round
    # (phase, key) -> router CPU µs per request or message, per round
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # phase -> (spans received, spans expected) per round with tracing on
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    collector: OtlpSink | None = None

    @property
    def n(self) -> int:
        n = getattr(self.ctx.args, "observability_n", None)
        return int(n) if n else 4 * self.ctx.args.n

    def run(self) -> None:
        a = self.ctx.args
        self.collector = OtlpSink(self.ctx.procs)
        try:
            for rnd in range(1, a.rounds + 1):
                for key, label in RUNS if rnd % 2 else RUNS[::-1]:
                    self.measure_ingest(rnd, key, label)
            for rnd in range(1, a.delivery_rounds + 1):
                for key, label in RUNS if rnd % 2 else RUNS[::-1]:
                    self.measure_delivery(rnd, key, label)
        finally:
            self.collector.stop()

    def _env(self, key: str) -> dict[str, str]:
        assert self.collector is not None
        self.collector.reset()
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.collector.url} if key == "on" else {}

    def _spans(self, what: str, phase: str, key: str, expected: int) -> str:
        """After the router stopped (flushing its spans): what the collector got."""
        assert self.collector is not None
        got = self.collector.spans()
        if key == "off":
            if got:
                self.ctx.problems.append(f"{what}: the collector got {got} spans, tracing off")
            return ""
        if not got:
            self.ctx.problems.append(f"{what}: the collector got no span")
        self.spans.setdefault(phase, []).append((got, expected))
        return f", {got:,} of {expected:,} spans exported"

    def measure_ingest(self, rnd: int, key: str, label: str) -> None:
        ctx = self.ctx
        proc, port, url = start_plain_api(ctx, f"trace-api-{key}-r{rnd}", self._env(key))
        try:
            wait_http(port, "/healthz", proc)
            warm = run_wrk(url, TRACED_LUA, ctx.args.warmup, CONNECTIONS)
            cpu0 = cpu_seconds([proc.pid])
            result = run_wrk(url, TRACED_LUA, ctx.args.duration, CONNECTIONS)
            cpu1 = cpu_seconds([proc.pid])
        finally:
            ctx.procs.stop(proc)
        what = f"tracing ingest, {label}, round {rnd}"
        self.ingest.setdefault(key, []).append(result)
        self.cpu.setdefault(("ingest", key), []).append(ratio((cpu1 - cpu0) * 1e6, result.requests))
        answered = warm.requests + result.requests - warm.non_2xx - result.non_2xx
        count, queue = stored(ctx, INGEST_CASES["router"])
        if count < answered:
            ctx.problems.append(f"{what}: {answered} answered 200, {count} stored in {queue}")
        bad = warm.non_2xx + result.non_2xx + warm.socket_errors + result.socket_errors
        if bad:
            ctx.problems.append(f"{what}: {bad} non-2xx answers or socket errors")
        spans = self._spans(what, "ingest", key, warm.requests + result.requests)
        say(f"{what}: {result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms{spans}")

    def measure_delivery(self, rnd: int, key: str, label: str) -> None:
        ctx = self.ctx
        n = self.n
        flush(ctx.redis_url)
        preload(ctx.redis_url, n, KEYS)
        ctx.sink.reset()
        routes = write_routes(ctx.tmp / "routes-tracing-delivery.yaml", ctx.sink.url, IN_FLIGHT)
        env = {
            "REDIS_URL": ctx.redis_url,
            "ROUTES_FILE": str(routes),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "console",
            **self._env(key),
        }
        proc = ctx.procs.start(f"trace-worker-{key}-r{rnd}", router_argv("worker"), env)
        sampler = CpuSampler(proc.pid)
        sampler.start()
        try:
            try:
                w = drain(ctx.sink, proc, n, ctx.args.timeout)
            finally:
                sampler.finish()
        finally:
            ctx.procs.stop(proc)
        w.returncode = proc.returncode
        w.delivered = ctx.sink.count()
        what = f"tracing delivery, {label}, round {rnd}"
        window_problems(ctx, what, w, n)
        self.delivery.setdefault(key, []).append(w.rate)
        used = ratio(sampler.cores(w.first_t, w.last_t) * 1e6, w.rate)
        self.cpu.setdefault(("delivery", key), []).append(used)
        spans = self._spans(what, "delivery", key, n)
        say(f"{what}: {w.rate:,.0f} msg/s at the sink, {w.delivered}/{n} delivered{spans}")

    # figures

    def _ratios(self, phase: str, f: str = "rps") -> list[float]:
        if phase == "ingest":
            on, off = self.ingest.get("on", []), self.ingest.get("off", [])
            return [ratio(getattr(a, f), getattr(b, f)) for a, b in zip(on, off, strict=True)]
        return [
            ratio(a, b)
            for a, b in zip(self.delivery.get("on", []), self.delivery.get("off", []), strict=True)
        ]

    def _cpu_ratios(self, phase: str) -> list[float]:
        on, off = self.cpu.get((phase, "on"), []), self.cpu.get((phase, "off"), [])
        return [ratio(a, b) for a, b in zip(on, off, strict=True)]

    def report_lines(self) -> list[str]:
        a = self.ctx.args
        rows = []
        if self.ingest.get("on"):
            off, on = (median([r.rps for r in self.ingest[k]]) for k in ("off", "on"))
            rows.append(("ingest, a span per request", "req/s", off, on, "ingest"))
        if self.delivery.get("on"):
            off, on = median(self.delivery["off"]), median(self.delivery["on"])
            rows.append(("delivery, a span per attempt", "msg/s", off, on, "delivery"))
        if not rows:
            return []
        out = [
            f"### Cost of tracing: ratio to tracing off (median of {a.rounds} ingest and "
            f"{a.delivery_rounds} delivery round{'s' * (max(a.rounds, a.delivery_rounds) > 1)}, "
            "each a pair run back to back)",
            "",
            "| case | tracing off | tracing on | ratio (per round) | cost | spans exported "
            "/ made (per round) | router CPU per message, on / off (per round) |",
            "| --- | ---: | ---: | --- | ---: | --- | --- |",
        ]
        for label, unit, off, on, phase in rows:
            ratios, cpu = self._ratios(phase), self._cpu_ratios(phase)
            spans = ", ".join(f"{got:,} / {want:,}" for got, want in self.spans.get(phase, []))
            out.append(
                f"| {label} | {rate(off)} {unit} | {rate(on)} {unit} "
                f"| **{x2(median(ratios))}** ({', '.join(x2(r) for r in ratios)}) "
                f"| {pct(1 - median(ratios))} | {spans or '-'} "
                f"| {x2(median(cpu))} ({', '.join(x2(r) for r in cpu)}) |"
            )
        out.append("")
        if self.ingest.get("on"):
            p99 = self._ratios("ingest", "p99_ms")
            out.append(
                f"Ingest: `router api`, 1 process, wrk -t1 -c{CONNECTIONS} -d{a.duration}s after "
                f"{a.warmup} s warm-up, post_traced.lua in both runs. p99 on / off "
                f"**{x2(median(p99))}** (per round {', '.join(x2(r) for r in p99)})."
            )
            out.append("")
        cpu = {k: median(v) for k, v in self.cpu.items()}
        out.append(
            f"Delivery: {self.n:,} messages over {KEYS:,} wa_ids, max_in_flight {IN_FLIGHT}. "
            "The collector (bench/peers/otlp_sink.py) answers 200 at once; the SDK's "
            "defaults batch and queue the spans (see bench/tracing.py: a span its queue "
            "cannot hold is dropped, and the table says how many arrived). Router CPU "
            "includes the exporter's thread. Medians, µs per message: "
            + "; ".join(f"{phase} {key} {x0(v)}" for (phase, key), v in cpu.items())
            + ". Tracing off costs one `is None` check per request and per attempt."
        )
        out.append("")
        return out

    def chart_rows(self) -> list[tuple[str, dict[str, float]]]:
        bars = {
            "router, tracing on: ingest": median(self._ratios("ingest")),
            "router, tracing on: delivery": median(self._ratios("delivery")),
        }
        if not any(v == v for v in bars.values()):
            return []
        return [(CHART_LABEL, bars)]


def main() -> int:
    """Run this part alone (the bench's Redis, a sink) and print its report."""
    from alone import rate_pair_arguments, run_alone

    return run_alone("tracing", rate_pair_arguments(__doc__ or ""), Tracing)


if __name__ == "__main__":
    raise SystemExit(main())
