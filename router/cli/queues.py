"""`router status`, `router retry`, `router recount`, `router pause`,
`router resume` and `router skip`: a destination's queues (or one
conversation of it), shown or acted on."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from router.cli.config_load import layout_or_exit
from router.cli.on_redis import on_queues, on_redis, record

if TYPE_CHECKING:
    from router.config.settings import Settings
    from router.queue.sharded_queue import ShardedQueue


def status(settings: Settings, args: argparse.Namespace) -> int:
    """`router status [DEST [KEY]] [--watch [S]] [--json]`."""
    from router.cli import status_table

    if args.watch is not None and not args.watch > 0:
        print("router status: --watch takes a number of seconds above 0", file=sys.stderr)
        return 2
    if args.key:
        if args.watch is not None:
            print("router status: --watch shows destinations, not one key", file=sys.stderr)
            return 2

        async def one_key(queues: ShardedQueue) -> int:
            return await status_table.show_key(queues, args.destination, args.key, args.json)

        return on_queues(settings, "status", args.destination, one_key)
    layout = layout_or_exit(settings)
    configured = None if args.destination else list(layout)  # orphans beside the whole list
    if args.destination:
        if args.destination not in layout:
            print(
                f"router status: no destination named {args.destination!r}; defined: "
                f"{', '.join(layout)}",
                file=sys.stderr,
            )
            return 2
        layout = {args.destination: layout[args.destination]}

    async def show(redis: Any, scripts: Any) -> int:
        return await status_table.show(
            redis, scripts, layout, args.watch, args.json, configured, waiting=args.destination
        )

    try:
        return on_redis(settings, "status", show)
    except KeyboardInterrupt:
        return 0


def recount(settings: Settings, args: argparse.Namespace) -> int:
    """`router recount DEST`."""

    async def act(queue: ShardedQueue) -> int:
        shards = await queue.recount(force=True)
        figures = await queue.figures()
        await record(queue, "recount", args.destination, f"{figures.messages} counted")
        print(f"{args.destination}: {figures.messages} message(s) counted in {shards} shard(s)")
        return 0

    return on_queues(settings, "recount", args.destination, act)


def retry(settings: Settings, args: argparse.Namespace) -> int:
    """`router retry DEST [KEY...]`."""
    from router.queue import operator_log

    async def act(queue: ShardedQueue) -> int:
        moved = await queue.retry_now(args.key or None)
        scope = operator_log.keys_scope(args.key, "all waiting keys")
        await record(queue, "retry", args.destination, f"{moved} resumed", scope)
        print(f"{moved} waiting key(s) of {args.destination} made due now")
        return 0

    return on_queues(settings, "retry", args.destination, act)


def pause(settings: Settings, args: argparse.Namespace) -> int:
    """`router pause DEST [KEY]` / `router resume DEST [KEY]`."""
    pausing = args.command == "pause"
    if args.key is not None:
        return _pause_key(settings, args, pausing)

    async def act(queue: ShardedQueue) -> int:
        await queue.set_paused(pausing)
        await record(queue, args.command, args.destination, "paused" if pausing else "resumed")
        print(
            f"{args.destination} paused: nothing new is attempted, attempts in flight "
            "finish, ingest goes on storing"
            if pausing
            else f"{args.destination} resumed"
        )
        return 0

    return on_queues(settings, args.command, args.destination, act)


def _pause_key(settings: Settings, args: argparse.Namespace, pausing: bool) -> int:
    """One conversation: `router pause DEST KEY` / `router resume DEST KEY`."""
    from router.ops import logs
    from router.queue import operator_log

    key, name = args.key, args.destination
    shown = logs.escape(repr(key))

    async def act(queue: ShardedQueue) -> int:
        if pausing:
            changed = await queue.pause_key(key)
            result = "paused" if changed else "already paused"
            line = (
                f"conversation {shown} of {name} paused: none of its messages is attempted "
                "(an attempt in flight finishes), ingest goes on storing"
                if changed
                else f"conversation {shown} of {name} was already paused"
            )
        else:
            changed = await queue.resume_key(key)
            result = "resumed" if changed else "not paused"
            line = (
                f"conversation {shown} of {name} resumed: its messages go on, oldest first"
                if changed
                else f"conversation {shown} of {name} was not paused"
            )
        await record(queue, args.command, name, result, operator_log.keys_scope([key], ""))
        print(line)
        return 0

    return on_queues(settings, args.command, name, act)


def skip(settings: Settings, args: argparse.Namespace) -> int:
    """`router skip DEST KEY`: the conversation's head message to the dead letters."""
    from router.ops import logs
    from router.queue import operator_log

    key, name = args.key, args.destination
    shown = logs.escape(repr(key))

    async def act(queue: ShardedQueue) -> int:
        skipped = await queue.skip(key)
        if skipped is None:
            print(
                f"router skip: conversation {shown} of {name} has no message to skip",
                file=sys.stderr,
            )
            return 2
        seq = "no sequence number" if skipped.seq is None else f"sequence number {skipped.seq}"
        result = f"skipped {skipped.message_id} ({seq}, was {skipped.was})"
        await record(queue, "skip", name, result, operator_log.keys_scope([key], ""))
        fenced = (
            " (its attempt in flight was fenced out: its outcome is ignored, though the "
            "destination may still receive it)"
            if skipped.was == "in flight"
            else ""
        )
        print(
            f"skipped message {skipped.message_id} ({seq}) of conversation {shown} of {name}: "
            f"now a dead letter{fenced}; {skipped.left} message(s) left"
        )
        return 0

    return on_queues(settings, "skip", name, act)
