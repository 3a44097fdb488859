"""What every measurement of one run shares."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from destination import Sink, Window
from procs import Procs


@dataclass
class Context:
    args: argparse.Namespace
    procs: Procs
    redis_url: str
    tmp: Path
    sink: Sink
    pyspy: str | None  # py-spy's path with --profile
    problems: list[str] = field(default_factory=list)  # any one fails the run
    profiles: list[str] = field(default_factory=list)  # markdown, one per profile
    notes: list[str] = field(default_factory=list)  # said in the report, fail nothing


def window_problems(ctx: Context, what: str, w: Window, n: int) -> None:
    """A drain that timed out, lost count or failed goes in the report's problems."""
    if w.timed_out:
        ctx.problems.append(f"{what}: killed after {ctx.args.timeout:g} s")
    if w.delivered != n:
        ctx.problems.append(f"{what}: the sink counted {w.delivered}, expected {n}")
    if w.returncode:
        ctx.problems.append(f"{what}: exited with {w.returncode} (see bench/results/logs)")
