"""`router status`, `router retry`, `router recount`, `router pause` and
`router resume`: a destination's queues, shown or acted on."""

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
    """`router pause DEST` / `router resume DEST`."""
    pausing = args.command == "pause"

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
