"""Outbound rate limit: 3 `router worker` processes deliver to the sink with
`rate_limit: {requests: 80, period: 1s}` on the destination (issue 11,
item 2: the rate seen at the destination within 5 % of the limit).

The queue is preloaded with more than the run can deliver, so the limit,
never an empty queue, paces the workers; the rate is taken at the sink
(polled every 10 ms) over SECONDS from its first delivery, and reported as
a ratio to the limit. Above 1.05 the limit is broken: a problem for the run.

    .venv/bin/python bench/outbound_rate.py       # alone
    .venv/bin/python bench/run.py --only rate-limit
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from context import Context
from preload import preload
from procs import router_argv, say, write_routes
from redisdb import flush

REQUESTS = 80  # per second: WhatsApp's send API quota per phone number
PROCESSES = 3
SECONDS = 10.0
KEYS = 200  # conversations: more than max_in_flight, so keys never run out
IN_FLIGHT = 16
GOAL = 0.05  # within 5 % of the limit


@dataclass
class RateRun:
    delivered: int
    seconds: float
    busiest_second: int  # most deliveries the sink counted in one 1 s window of polls

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds


class OutboundRate:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.run_result: RateRun | None = None

    def run(self) -> None:
        ctx = self.ctx
        flush(ctx.redis_url)
        limit = f"{{requests: {REQUESTS}, period: 1s}}"
        routes = write_routes(
            ctx.tmp / "routes-rate.yaml", ctx.sink.url, IN_FLIGHT, rate_limit=limit
        )
        queued = int(REQUESTS * (SECONDS + 5) * 1.5)  # more than the run can take
        preload(ctx.redis_url, queued, KEYS)
        ctx.sink.reset()
        env = {"REDIS_URL": ctx.redis_url, "ROUTES_FILE": str(routes), "LOG_LEVEL": "warning"}
        say(f"rate limit: {PROCESSES} workers, {REQUESTS}/s, {SECONDS:g} s")
        workers = [
            ctx.procs.start(f"rate-worker-{i}", router_argv("worker"), env)
            for i in range(PROCESSES)
        ]
        try:
            self.run_result = self._measure()
        finally:
            for w in workers:
                ctx.procs.stop(w)
            flush(ctx.redis_url)
        ratio = self.run_result.rate / REQUESTS
        if ratio > 1 + GOAL:
            ctx.problems.append(f"rate limit: {ratio:.3f}x the limit at the sink (over it)")

    def _measure(self) -> RateRun:
        """Poll the sink's count every 10 ms for SECONDS from its first
        delivery; start-up (imports, connecting) is left out."""
        sink = self.ctx.sink
        deadline = time.monotonic() + 60
        polls: list[tuple[float, int]] = []
        while True:
            n, now = sink.count(), time.perf_counter()
            if n:
                polls.append((now, n))
                if now - polls[0][0] >= SECONDS:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("rate limit: the workers delivered nothing in 60 s")
            time.sleep(0.01)
        (t0, n0), (t1, n1) = polls[0], polls[-1]
        busiest = max(
            (n - start_n for start_t, start_n in polls for t, n in polls if t - start_t <= 1.0),
            default=0,
        )
        return RateRun(n1 - n0, t1 - t0, busiest)

    def report_lines(self) -> list[str]:
        r = self.run_result
        if r is None:
            return []
        ratio = r.rate / REQUESTS
        met = "met" if abs(ratio - 1) <= GOAL else "missed"
        return [
            f"### Outbound rate limit ({PROCESSES} `router worker` processes, "
            f"`rate_limit: {{requests: {REQUESTS}, period: 1s}}`, {KEYS} wa_ids, "
            f"max_in_flight {IN_FLIGHT})",
            "",
            "| delivered | seconds | msg/s at the sink | vs the limit | busiest 1 s |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| {r.delivered:,} | {r.seconds:.2f} | {r.rate:.1f} | **{ratio:.3f}** "
            f"| {r.busiest_second} |",
            "",
            f"The goal, within {GOAL:.0%} of the limit: {met}.",
            "",
        ]


def main() -> int:
    """Run this part alone: `python bench/outbound_rate.py`."""
    import argparse

    from alone import run_alone

    args = argparse.ArgumentParser(description=__doc__).parse_args()
    return run_alone("rate-limit", args, OutboundRate)


if __name__ == "__main__":
    raise SystemExit(main())
