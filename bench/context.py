"""What every measurement of one run shares."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from destination import Sink
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
