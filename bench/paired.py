"""A small cost measured in pairs at once: two `router worker`s, the same
but for one setting, drain two equal queues at the same time, each to a
sink of its own, and their rates are compared over the window in which
both were delivering.

Why at once: on this shared 2-core machine two runs made seconds apart
differ by 10-30 % and more (bench/growth.py measured 0.70-1.37 between
equal queues), so a cost of a few percent cannot show in a ratio of rates taken
one after the other, whatever the number of rounds the bench can afford.
Two workers running side by side meet the same machine: its slow and
fast seconds fall on both. What they share (the cores, the Redis) is
shared evenly, so the ratio of their rates is the ratio of what a message
costs each, where the worker is what limits delivery.

The window: from the first poll (every 10 ms) at which both sinks had
counted a delivery to the first at which either had counted them all;
after it, the faster one's last deliveries would run alone. Sides (the
bench's database and sink, or the second ones) swap from round to round.

Used by bench/observability.py for the info line per delivery attempt:
    .venv/bin/python bench/observability.py --delivery-rounds 3
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster import CpuSampler
from context import Context
from destination import Sink
from fmt import ratio
from preload import preload
from procs import HOST, router_argv, say, write_routes
from redisdb import flush, sibling_url

NAN = float("nan")
MIN_WINDOW = 1.0  # seconds both must deliver together for a round to count
MAX_AHEAD = 0.1  # of the queue one side may have delivered before the other began


@dataclass
class Pair:
    """One round: per side's key, msg/s and worker CPU µs per message over
    the common window, and what the worker's log held."""

    rates: dict[str, float] = field(default_factory=dict)
    cpu_us: dict[str, float] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    window_s: float = NAN

    def ratio(self, key: str, base: str) -> float:
        return ratio(self.rates.get(key, NAN), self.rates.get(base, NAN))

    def cpu_ratio(self, key: str, base: str) -> float:
        return ratio(self.cpu_us.get(key, NAN), self.cpu_us.get(base, NAN))


def run_pair(
    ctx: Context,
    second_sink: Sink,
    sides: tuple[tuple[str, dict[str, str]], tuple[str, dict[str, str]]],
    n: int,
    keys: int,
    in_flight: int,
    name: str,
    count_lines: Callable[[str], int],
) -> Pair:
    """Drain `n` messages over `keys` keys into each of two databases at
    once, one worker per side: `sides` is ((key, env), (key, env)), the first
    on the bench's database and sink, the second on the sibling database
    and `second_sink`."""
    urls = (ctx.redis_url, sibling_url(ctx.redis_url))
    sinks = (ctx.sink, second_sink)
    for url in urls:
        flush(url)
        preload(url, n, keys)
    procs, samplers, names = [], [], []
    try:
        for i, ((key, extra), url, sink) in enumerate(zip(sides, urls, sinks, strict=True)):
            sink.reset()
            routes = write_routes(ctx.tmp / f"routes-pair-{i}.yaml", sink.url, in_flight)
            env = {
                "REDIS_URL": url,
                "ROUTES_FILE": str(routes),
                "LOG_FORMAT": "console",
                "HOST": HOST,
                **extra,
            }
            names.append(f"{name}-{key}")
            procs.append(ctx.procs.start(names[-1], router_argv("worker"), env))
            samplers.append(CpuSampler(procs[-1].pid))
            samplers[-1].start()
        window = _common_window(sinks, n, ctx.args.timeout)
    finally:
        for sampler in samplers:
            sampler.finish()
        for proc in procs:
            ctx.procs.stop(proc)
    pair = Pair()
    if window is None:
        ctx.problems.append(
            f"{name}: not every message was delivered in {ctx.args.timeout:g} s, or one "
            "worker had delivered all of its queue before the other began"
        )
        return pair
    (t0, counts0), (t1, counts1) = window
    if t1 - t0 < MIN_WINDOW or max(counts0) > n * MAX_AHEAD:
        # One side had delivered much of its queue before the other began:
        # what is left is no comparison.
        ctx.problems.append(
            f"{name}: the two workers delivered together for {t1 - t0:.2f} s only "
            f"(counts {counts0} at its start, of {n}); no figures from this round"
        )
        return pair
    pair.window_s = t1 - t0
    for i, (key, _env) in enumerate(sides):
        rate = (counts1[i] - counts0[i]) / (t1 - t0)
        pair.rates[key] = rate
        pair.cpu_us[key] = samplers[i].cores(t0, t1) * 1e6 / rate if rate else NAN
        pair.lines[key] = count_lines(names[i])
        delivered = sinks[i].count()
        if delivered != n:
            ctx.problems.append(f"{names[i]}: the sink counted {delivered}, expected {n}")
    say(
        f"{name}: "
        + ", ".join(f"{k} {pair.rates[k]:,.0f} msg/s {pair.cpu_us[k]:.0f} µs" for k, _ in sides)
        + f" over {pair.window_s:.1f} s"
    )
    return pair


def run_pairs(
    ctx: Context,
    sides: tuple[tuple[str, dict[str, str]], tuple[str, dict[str, str]]],
    rounds: int,
    n: int,
    keys: int,
    in_flight: int,
    name: str,
    count_lines: Callable[[str], int] = lambda _name: 0,
) -> list[Pair]:
    """`rounds` of run_pair, named `name`-r1, -r2, ..., the sides swapped
    from round to round (`sides[0]` on the bench's database in odd rounds),
    the second side with a sink of its own; that sink is stopped and the
    second database emptied afterwards, whatever happened."""
    second = Sink(ctx.procs)
    try:
        return [
            run_pair(
                ctx,
                second,
                sides if rnd % 2 else (sides[1], sides[0]),
                n,
                keys,
                in_flight,
                f"{name}-r{rnd}",
                count_lines,
            )
            for rnd in range(1, rounds + 1)
        ]
    finally:
        try:
            second.stop()
        finally:
            flush(sibling_url(ctx.redis_url))  # the second worker's queue


Window = tuple[tuple[float, tuple[int, ...]], tuple[float, tuple[int, ...]]]


def _common_window(sinks: tuple[Sink, Sink], n: int, timeout: float) -> Window | None:
    """((t0, counts), (t1, counts)): both delivering, until either is done;
    then waits for both to finish (None if they do not in `timeout`)."""
    deadline = time.perf_counter() + timeout
    start = end = None
    while time.perf_counter() < deadline:
        counts = tuple(s.count() for s in sinks)
        now = time.perf_counter()
        if start is None and all(counts):
            start = (now, counts)
        if start is not None and end is None and max(counts) >= n and now > start[0]:
            end = (now, counts)
        if min(counts) >= n:
            return (start, end) if start is not None and end is not None else None
        time.sleep(0.01)
    return None
