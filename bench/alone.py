"""Running one part of the bench by itself (`python bench/delivery.py`,
`bench/latency.py`, `bench/growth.py`): the same Redis, sink and process
bookkeeping as bench/run.py, for trying a change to one part quickly."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from context import Context
from destination import Sink
from procs import RESULTS, Procs, say
from redisdb import flush, redis_server


class Part(Protocol):
    def run(self) -> None: ...
    def report_lines(self) -> list[str]: ...


def run_alone(name: str, args: argparse.Namespace, make: Callable[[Context], Part]) -> int:
    """Build the part with `make(ctx)`, run it, print its report and any
    problems; logs go to bench/results/logs-NAME. Exit status 1 on problems."""
    logs = RESULTS / f"logs-{name}"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    running = Procs(logs)
    try:
        with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp_text:
            tmp = Path(tmp_text)
            with redis_server(tmp) as (redis_url, note):
                say(note)
                ctx = Context(args, running, redis_url, tmp, Sink(running), None)
                part = make(ctx)
                part.run()
                flush(redis_url)
    finally:
        running.stop_all()
    print("\n".join(part.report_lines()))
    if ctx.problems:
        print("\n".join(["## Problems", "", *(f"- {x}" for x in ctx.problems)]))
    return 1 if ctx.problems else 0


def rate_pair_arguments(description: str) -> argparse.Namespace:
    """The command line of a part that runs ingest and delivery pairs, on
    and off (bench/observability.py, bench/tracing.py), run alone."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=1, help="ingest rounds (median)")
    p.add_argument("--delivery-rounds", type=int, default=1, help="delivery rounds (median)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up per run")
    p.add_argument("-n", type=int, default=5000, help="delivery.py's -n (default 5000)")
    p.add_argument("--observability-n", type=int, help="messages per delivery run (default 4 x -n)")
    p.add_argument("--timeout", type=float, default=180, help="seconds any delivery run may take")
    return p.parse_args()
