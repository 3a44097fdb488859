"""Cost growth: does storing and delivering a message cost the same with 1,000
or 1,000,000 messages queued, over 10 or 100,000 ordering keys?

Every lane operation is O(1) or O(log n) by design (docs: "Redis layout");
this measures it. Per case: empty the database, preload the queue (the
enqueue script, pipelined), note Redis's memory per queued message, then
let `router worker` deliver up to 3,000 of them (the rate taken at the
sink, from its first delivery to its last), then run `router api` under wrk
for a few seconds (ingest rate with that queue behind it). The report gives each rate as a
ratio to the smallest case's: the issue asks for <= 1.2x cost (>= 0.83 rate)
from smallest to largest.

    .venv/bin/python bench/growth.py        # alone, with short defaults
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from context import Context
from delivery import preload
from ingest import run_wrk
from procs import HOST, PEERS, free_port, router_argv, say, wait_http, write_routes
from redisdb import flush, info_number

# (messages queued, ordering keys): the queue sweep at 1,000 keys, then the
# key sweep at 100,000 messages.
CASES = ((1_000, 1_000), (100_000, 1_000), (1_000_000, 1_000), (100_000, 10), (100_000, 100_000))
IN_FLIGHT = 8  # below the smallest key count, so every case can fill it
SAMPLE = 3_000  # deliveries timed per case (all of them in a smaller queue)


@dataclass
class GrowthCase:
    queued: int
    keys: int
    bytes_per_message: float
    preload_s: float
    ingest_rps: float
    delivery_rate: float


class Growth:
    def __init__(self, ctx: Context, cases: tuple[tuple[int, int], ...] = CASES) -> None:
        self.ctx = ctx
        self.cases = cases
        self.results: list[GrowthCase] = []
        self.seconds = 5

    def run(self) -> None:
        ctx = self.ctx
        routes = write_routes(ctx.tmp / "routes-growth.yaml", ctx.sink.url, IN_FLIGHT)
        env = {"REDIS_URL": ctx.redis_url, "ROUTES_FILE": str(routes), "LOG_LEVEL": "warning"}
        for queued, keys in self.cases:
            flush(ctx.redis_url)
            base = info_number(ctx.redis_url, "memory", "used_memory")
            began = time.perf_counter()
            preload(ctx.redis_url, queued, keys)
            preload_s = time.perf_counter() - began
            used = info_number(ctx.redis_url, "memory", "used_memory")
            per_message = (used - base) / queued
            say(f"growth: {queued:,} queued over {keys:,} keys ({preload_s:.0f}s to load)")
            # Delivery first, while the queue is the size this case is about.
            ctx.sink.reset()
            worker = ctx.procs.start(f"growth-worker-{queued}-{keys}", router_argv("worker"), env)
            try:
                rate = self._delivery_rate(min(queued, SAMPLE))
            finally:
                ctx.procs.stop(worker)
            port = free_port()
            api = ctx.procs.start(
                f"growth-api-{queued}-{keys}",
                router_argv("api"),
                {**env, "PORT": str(port), "HOST": HOST, "ROUTER_WORKERS": "0"},
            )
            try:
                wait_http(port, "/healthz", api)
                url = f"http://{HOST}:{port}/v1/store_message"
                run_wrk(url, PEERS / "post.lua", 1)  # warm-up
                wrk = run_wrk(url, PEERS / "post.lua", self.seconds)
            finally:
                ctx.procs.stop(api)
            if wrk.non_2xx or wrk.socket_errors:
                ctx.problems.append(
                    f"growth {queued}/{keys}: wrk saw {wrk.non_2xx} non-2xx, "
                    f"{wrk.socket_errors} socket errors"
                )
            self.results.append(GrowthCase(queued, keys, per_message, preload_s, wrk.rps, rate))
        flush(ctx.redis_url)

    def _delivery_rate(self, sample: int) -> float:
        """Messages per second at the sink, from its first delivery (start-up
        left out) to its `sample`-th, polled every 10 ms."""
        sink = self.ctx.sink
        deadline = time.monotonic() + 120
        first: tuple[int, float] | None = None
        while True:
            n, now = sink.count(), time.perf_counter()
            if n and first is None:
                first = (n, now)
            if n >= sample and first is not None and now > first[1]:
                return (n - first[0]) / (now - first[1])
            if time.monotonic() > deadline:
                self.ctx.problems.append(f"growth: {n} of {sample} delivered in 120 s")
                return float("nan")
            time.sleep(0.01)

    def report_lines(self) -> list[str]:
        if not self.results:
            return []
        first = self.results[0]
        lines = [
            f"### Cost growth: the queue's size and key count (max_in_flight {IN_FLIGHT}; "
            f"wrk -c32 {self.seconds}s for ingest; the first {SAMPLE:,} deliveries of "
            "`router worker`)",
            "",
            "| queued | keys | Redis bytes/msg | ingest req/s | vs first | delivery msg/s "
            "| vs first |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in self.results:
            lines.append(
                f"| {r.queued:,} | {r.keys:,} | {r.bytes_per_message:,.0f} | {r.ingest_rps:,.0f} "
                f"| {r.ingest_rps / first.ingest_rps:.2f} | {r.delivery_rate:,.0f} "
                f"| {r.delivery_rate / first.delivery_rate:.2f} |"
            )
        worst_in = min(r.ingest_rps for r in self.results) / first.ingest_rps
        worst_out = min(r.delivery_rate for r in self.results) / first.delivery_rate
        lines += [
            "",
            f"Worst case against the first: ingest **{worst_in:.2f}**, delivery "
            f"**{worst_out:.2f}** (the target is >= 0.83, i.e. cost <= 1.2x). Redis bytes/msg: "
            "`used_memory` growth over the preload divided by the messages (the lane "
            "entry, its share of the lane and of `ready`).",
            "",
        ]
        return lines


def main() -> int:
    """Run the sweep alone: `python bench/growth.py [--small]`."""
    import argparse

    from alone import run_alone

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", action="store_true", help="100x fewer messages and keys (a try)")
    args = p.parse_args()
    cases = (
        tuple((max(100, q // 100), max(10, k // 100)) for q, k in CASES) if args.small else CASES
    )
    return run_alone("growth", args, lambda ctx: Growth(ctx, cases))


if __name__ == "__main__":
    raise SystemExit(main())
