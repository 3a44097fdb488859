"""The rows fault tests report, and the Markdown table they become."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass, field

import pytest

from router.redis.embedded import server_binary

COMMAND = "make faults   # = .venv/bin/pytest -q -m faults tests/faults"


@dataclass
class Row:
    fault: str
    injected: str
    sent: int
    accepted: int
    delivered: int
    duplicated: int
    lost: int
    order_violations: int
    recovery: str
    notes: str = ""
    size: str = ""
    nodeid: str = ""
    outcome: str = "running"


@dataclass
class MemoryRow:
    what: str
    messages: int
    keys: int
    body_bytes: int
    envelope_bytes: int
    used_before: int
    used_after: int
    size: str = ""
    nodeid: str = ""
    outcome: str = "running"

    @property
    def per_message(self) -> float:
        return (self.used_after - self.used_before) / self.messages


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)


class Recorder:
    def __init__(self, results: Results, item: pytest.Item) -> None:
        self.results = results
        self.item = item
        callspec = getattr(item, "callspec", None)
        self.size = str(callspec.params.get("size", "")) if callspec else ""

    def row(self, row: Row) -> None:
        row.size, row.nodeid = self.size, self.item.nodeid
        self.results.rows.append(row)
        print(
            f"RESULT {row.fault}: sent {row.sent} accepted {row.accepted} delivered "
            f"{row.delivered} duplicated {row.duplicated} lost {row.lost} order "
            f"{row.order_violations} recovery {row.recovery} | {row.notes}"
        )

    def memory(self, row: MemoryRow) -> None:
        row.size, row.nodeid = self.size, self.item.nodeid
        self.results.memory.append(row)
        print(f"RESULT memory {row.what}: {row.per_message:.0f} B/message over {row.messages}")


def _machine() -> str:
    try:
        version = subprocess.run(
            [server_binary(), "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2]
    except (OSError, IndexError, RuntimeError):
        version = "?"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, valkey-server {version.removeprefix('v=')}"
    )


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row], memory: list[MemoryRow]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Reliability: fault-injection results",
        "",
        f"Measured {now} on {_machine()} (load average {os.getloadavg()[0]:.1f} at the",
        "end: other jobs shared the machine). Reproduce with:",
        "",
        "```",
        COMMAND,
        "```",
        "",
        "Every test runs real processes on loopback: `python -m router serve` as a",
        "subprocess configured by environment (REDIS_URL, PORT, ROUTES_FILE, ...), a real",
        "valkey-server with an append-only file on a fixed port and data directory (so a",
        "restart reloads it), and a real HTTP bot. A load generator posts messages per",
        "wa_id in a defined order (the next message of a key only after the previous one",
        "was answered 200; refused or failed posts are retried with the same",
        "Idempotency-Key). The file is written by `tests/faults/conftest.py` at the end",
        "of a full run; `make test` runs small variants of the same tests and leaves it",
        "alone. Numbers are from one run on a small shared machine: timings are noisy.",
        "",
        "Checked in every test: every message answered 200 is delivered at least once;",
        "per wa_id the bot's acknowledged sequence has no gap and never goes back;",
        "duplicates (redeliveries) are counted.",
        "",
        "| fault | how injected | sent | accepted (200) | delivered | duplicated | lost "
        "| order violations | recovery | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        out.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    r.fault,
                    r.injected,
                    r.sent,
                    r.accepted,
                    r.delivered,
                    r.duplicated,
                    r.lost,
                    r.order_violations,
                    r.recovery,
                    r.outcome,
                )
            )
            + " |"
        )
    out += ["", "## Details", ""]
    for r in rows:
        out.append(f"- **{r.fault}** ({r.outcome}): {r.notes}")
    if memory:
        out += [
            "",
            "## Redis memory per queued message",
            "",
            "Messages written with `router.queue.enqueue.enqueue` (the ingest path's Lua script,",
            "64 at a time) straight into an empty valkey-server (append-only file off for",
            "this measurement), 10 per wa_id, nothing delivered; `used_memory` from",
            "`INFO memory` before and after (`FLUSHDB SYNC` between the two runs). These",
            "are the numbers measured at the size shown, not an extrapolation.",
            "",
            "| what | messages | keys | body bytes | envelope bytes | used_memory delta "
            "| bytes per message | result |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for m in memory:
            out.append(
                f"| {_cell(m.what)} | {m.messages} | {m.keys} | {m.body_bytes} | "
                f"{m.envelope_bytes} | {m.used_after - m.used_before} | "
                f"{m.per_message:.0f} | {m.outcome} |"
            )
    out += [
        "",
        "## Columns",
        "",
        "- **sent**: distinct messages the generator posted; **accepted**: of those,"
        " answered 200 (a retried post counts once).",
        "- **delivered**: accepted messages the bot acknowledged at least once;"
        " **duplicated**: acknowledgements beyond the first (at-least-once redeliveries);"
        " **lost**: accepted and never acknowledged.",
        "- **order violations**: acknowledgements that went back to an earlier message of"
        " the key, skipped one, or were never sent.",
        "- **recovery**: how long until deliveries resumed after the fault; what exactly"
        " is measured is said in each cell.",
        "",
    ]
    return "\n".join(out)
