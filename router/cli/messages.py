"""`router trace ID` and `router messages DEST`: the message log
(docs/message-log.md) as the operator reads it. `--json` prints what the
admin API answers (GET /admin/messages/{id}, GET
/admin/destinations/{name}/messages), the same objects."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

from router.cli.config_load import layout_or_exit
from router.cli.on_redis import on_queues, on_redis

if TYPE_CHECKING:
    from router.config.settings import Settings
    from router.queue.sharded_queue import ShardedQueue
    from router.web.admin_types import AttemptAnswer, DeliveryAnswer

# The start of an answer shown under its attempt (the whole of it: --json).
RESPONSE_SHOWN = 100
ERROR_SHOWN = 100


def trace(settings: Settings, args: argparse.Namespace) -> int:
    """`router trace ID [--json]`: the message's story at every destination
    that has one. Exit 1 when none has it (as grep finding nothing)."""
    from router.ops import redaction
    from router.queue.stories import stories
    from router.web.admin_types import MessageStory

    layout = layout_or_exit(settings)

    async def show(redis: Any, scripts: Any) -> int:
        found = await stories(redis, scripts, args.id, layout)
        if not found:
            print(
                f"router trace: no destination's message log has a message {args.id!r}",
                file=sys.stderr,
            )
            return 1
        story = MessageStory.of(args.id, found, redaction.known)
        if args.json:
            print(msgspec.json.encode(story).decode())
        else:
            print(_story_text(story, time.time()))
        return 0

    return on_redis(settings, "trace", show)


def messages(settings: Settings, args: argparse.Namespace) -> int:
    """`router messages DEST [--key K] [--failed] [--since S] [--limit N]
    [--json]`: a destination's logged messages, newest first."""
    from router.cli import list_tables
    from router.config.durations import since_ms
    from router.web.admin_types import FoundMessage, FoundMessages

    start = None if args.since is None else since_ms(args.since, time.time())
    if args.since is not None and start is None:
        print(
            f"router messages: --since {args.since!r}: write an ISO 8601 time, ms since "
            "the epoch, or a duration back from now (15m, 2h, 7d)",
            file=sys.stderr,
        )
        return 2
    name = args.destination

    async def show(queue: ShardedQueue) -> int:
        found = await queue.search(args.key, args.failed, start, args.limit)
        answer = FoundMessages([FoundMessage.of(f) for f in found])
        if args.json:
            print(msgspec.json.encode(answer).decode())
            return 0
        list_tables.print_table(
            list_tables.messages_table(f"messages of {name}, newest first", answer.messages),
            f"no logged messages in {name} match",
            len(found),
        )
        return 0

    return on_queues(settings, "messages", name, show, or_orphaned=True)


def _story_text(story: Any, now: float) -> str:
    """The story as lines: per destination its state, key, seq and arrival,
    then one line per attempt and, indented, the start of its answer."""
    lines = [f"message {_plain(story.id)}"]
    for name, d in story.deliveries.items():
        lines.append("")
        lines.append(_delivery_line(name, d, now))
        if not d.attempts:
            lines.append("  no attempt yet")
        for a in d.attempts:
            lines.append(_attempt_line(a, now))
            if a.response:
                lines.append(f"        answer: {_short(a.response, RESPONSE_SHOWN)}")
    return "\n".join(lines)


def _delivery_line(name: str, d: DeliveryAnswer, now: float) -> str:
    from router.cli.list_tables import when

    seq = "-" if d.seq is None else str(d.seq)
    return (
        f"{_plain(name)}: {d.state.upper()}  key {_plain(d.key)}  seq {seq}  "
        f"received {when(d.received_at, now)}"
    )


def _attempt_line(a: AttemptAnswer, now: float) -> str:
    from router.cli.list_tables import when

    status = "-" if a.status is None else str(a.status)
    took = "-" if a.duration_ms is None else f"{a.duration_ms:g}ms"
    started = "not started" if a.started_at is None else when(a.started_at, now)
    line = f"  #{a.attempt:<3} {a.outcome:<8} {status:>3}  {took:>9}  {started}"
    if a.error:
        line += f"  {_short(a.error, ERROR_SHOWN)}"
    return line


def _plain(text: str) -> str:
    from router.ops import logs

    return logs.escape(text)


def _short(text: str, width: int) -> str:
    """One line of outside text, at most `width` characters (… when cut)."""
    line = _plain(" ".join(text.split()))
    return line if len(line) <= width else line[: width - 1] + "…"
