"""`router orphan move|purge`: the queued messages of a destination
removed from routes.yaml."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from router.cli.config_load import into_ok, layout_or_exit
from router.cli.on_redis import on_queues, record

if TYPE_CHECKING:
    from router.config.settings import Settings
    from router.queue.sharded_queue import ShardedQueue


def orphan(settings: Settings, args: argparse.Namespace) -> int:
    """`router orphan move SRC --into DEST` / `router orphan purge SRC`: the
    queued (not dead) messages of a destination removed from routes.yaml
    (router.queue.moving)."""
    from router.queue import moving

    name = args.destination
    layout = layout_or_exit(settings)
    if name in layout:
        print(
            f"router orphan: {name} is in routes.yaml, and its workers deliver it; "
            "only a destination removed from it is moved or purged this way",
            file=sys.stderr,
        )
        return 2
    if args.action == "move" and args.into is None:
        print(
            "router orphan: move needs --into DEST (a destination of routes.yaml)", file=sys.stderr
        )
        return 2
    if args.action == "purge" and args.into is not None:
        print("router orphan: --into goes with move", file=sys.stderr)
        return 2
    if args.into is not None and not into_ok(layout, "orphan", name, args.into):
        return 2

    async def act(queue: ShardedQueue) -> int:
        from router.queue.sharded_queue import ShardedQueue

        first = queue.shards[0]
        try:
            if args.action == "move":
                target = ShardedQueue(first.redis, first.scripts, args.into, layout[args.into])
                done = await moving.move_queued(first.scripts, queue, name, target, args.into)
                print(f"moved {done.messages} queued message(s) of {name} into {args.into}")
                result = f"{done.messages} moved into {args.into}"
            else:
                done = await moving.purge_queued(first.scripts, queue)
                print(f"purged {done.messages} queued message(s) of {name}")
                result = f"{done.messages} purged"
        except moving.MoveRefused as exc:
            print(f"router orphan: {exc}", file=sys.stderr)
            return 2
        await record(queue, args.action, name, result, "queued")
        if done.in_flight:
            print(
                f"router orphan: {len(done.in_flight)} key(s) of {name} are being delivered by "
                f"a process still configured with it, and were left: run this again once "
                f"every process has reloaded routes.yaml",
                file=sys.stderr,
            )
            return 1
        return 0

    return on_queues(settings, "orphan", name, act, or_orphaned=True)
