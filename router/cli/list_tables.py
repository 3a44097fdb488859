"""Tables of `router dead list`, `router dead blocked`, `router unroutable
list` and `router messages` (rich, as `router status`): times as local times with their age, long
texts cut to a column. `--json` prints what scripts read instead (the
commands' JSON lines, unchanged)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table
from rich.text import Text

from router.cli.status_table import _console, _plain
from router.config.durations import age
from router.ops import redaction
from router.queue import envelope
from router.queue.inspection import DeadLetter
from router.queue.unroutable import UnroutableItem

if TYPE_CHECKING:
    from router.web.admin_types import FoundMessage

# An error or item is cut to this many characters (the whole one: --json).
TEXT_WIDTH = 80


def when(ms: int | None, now: float | None = None) -> str:
    """A time as people read it: local date and time, and how long ago."""
    if ms is None:
        return "-"
    now = time.time() if now is None else now
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
    return f"{local} ({age(max(0.0, now - ms / 1000))} ago)"


def cut(text: str, width: int = TEXT_WIDTH) -> Text:
    """One line of outside text, at most `width` characters (… when cut)."""
    line = " ".join(text.split())
    return _plain(line if len(line) <= width else line[: width - 1] + "…")


def _message_id(letter: DeadLetter) -> str:
    try:
        return envelope.decode(letter.envelope.encode()).id
    except ValueError:  # not an envelope this version wrote
        return "?"


def dead_table(title: str, letters: list[DeadLetter]) -> Table:
    t = Table(title=_plain(title), box=box.SIMPLE_HEAVY, title_justify="left")
    for column in ("key", "message id"):
        t.add_column(column)
    t.add_column("attempts", justify="right")
    t.add_column("dead since")
    t.add_column("error")
    for d in letters:
        # Stored before a fix, an error may hold a secret.
        t.add_row(
            _plain(d.key),
            _plain(_message_id(d)),
            str(d.attempts),
            when(d.dead_at),
            cut(redaction.known(d.error)),
        )
    return t


def dead_json(letter: DeadLetter) -> str:
    """One dead letter as `--json` prints it (one line each)."""
    entry = {
        "key": letter.key,
        "error": letter.error,
        "attempts": letter.attempts,
        "dead_at": letter.dead_at,
        "seq": letter.seq,
        "envelope": envelope.with_ts(json.loads(letter.envelope)),
    }
    return redaction.known(json.dumps(entry))


def blocked_table(title: str, blocked: dict[str, dict[str, Any]]) -> Table:
    t = Table(title=_plain(title), box=box.SIMPLE_HEAVY, title_justify="left")
    t.add_column("key")
    t.add_column("attempts", justify="right")
    t.add_column("blocked since")
    t.add_column("error")
    for key, info in blocked.items():
        at = info.get("blocked_at")
        t.add_row(
            _plain(key),
            str(info.get("attempts", "-")),
            when(at if isinstance(at, int) else None),
            cut(redaction.known(str(info.get("error", "")))),
        )
    return t


def blocked_json(key: str, info: dict[str, Any]) -> str:
    return redaction.known(json.dumps({"key": key, **info}))


def unroutable_table(title: str, items: list[UnroutableItem]) -> Table:
    t = Table(title=_plain(title), box=box.SIMPLE_HEAVY, title_justify="left")
    t.add_column("kept since")
    t.add_column("reason")
    t.add_column("problem")
    t.add_column("item")
    for i in items:
        t.add_row(
            when(i.at),
            _plain(i.reason),
            cut(i.problem, TEXT_WIDTH // 2),
            cut(json.dumps(i.item, ensure_ascii=False), TEXT_WIDTH // 2),
        )
    return t


def messages_table(title: str, found: list[FoundMessage]) -> Table:
    t = Table(title=_plain(title), box=box.SIMPLE_HEAVY, title_justify="left")
    t.add_column("message id")
    t.add_column("key")
    t.add_column("state")
    t.add_column("received")
    t.add_column("attempts", justify="right")
    for f in found:
        t.add_row(_plain(f.id), _plain(f.key), f.state, when(f.received_at), str(f.attempts))
    return t


def print_table(table: Table, empty: str, rows: int) -> None:
    """The table, or one line saying there is nothing (no empty frame)."""
    if rows:
        _console().print(table)
    else:
        print(empty)
