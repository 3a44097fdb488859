"""`router dead list|replay|purge|blocked|unblock`: a destination's dead
letters and blocked keys."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from router.cli.config_load import into_ok, layout_or_exit
from router.cli.on_redis import on_queues, record

if TYPE_CHECKING:
    from router.config.settings import Settings
    from router.queue.sharded_queue import ShardedQueue


def dead(settings: Settings, args: argparse.Namespace) -> int:
    """`router dead list|replay|purge|blocked|unblock DEST`, for a configured
    destination or an orphaned one (removed from routes.yaml, holding
    messages): an orphan's dead letters are replayed `--into` a configured
    destination (router.queue.moving). Tables by default, `--json` for scripts."""
    from router.cli import list_tables
    from router.queue import operator_log

    name = args.destination
    layout = layout_or_exit(settings)
    if args.into is not None and args.action != "replay":
        print("router dead: --into goes with replay", file=sys.stderr)
        return 2
    if args.into is not None and not into_ok(layout, "dead", name, args.into):
        return 2
    if args.json and args.action not in ("list", "blocked"):
        print("router dead: --json goes with list and blocked", file=sys.stderr)
        return 2

    async def act(queue: ShardedQueue) -> int:
        if args.action == "blocked":
            blocked = await queue.blocked_keys()
            if args.json:
                for key, info in blocked.items():
                    print(list_tables.blocked_json(key, info))
            else:
                list_tables.print_table(
                    list_tables.blocked_table(f"blocked keys of {name}", blocked),
                    f"no blocked keys in {name}",
                    len(blocked),
                )
        elif args.action == "unblock":
            keys = args.key or list(await queue.blocked_keys())
            done = sum([await queue.unblock(k) for k in keys])
            print(f"unblocked {done} key(s) of {name}")
            scope = operator_log.keys_scope(args.key, "all blocked keys")
            await record(queue, "unblock", name, f"{done} unblocked", scope)
        elif args.action == "purge":
            purged = await queue.purge_dead(args.count)
            print(f"purged {purged} dead letter(s) of {name}")
            scope = operator_log.count_scope(args.count, "dead letters")
            await record(queue, "purge", name, f"{purged} purged", scope)
        elif args.action == "list":
            letters = [d for _, d in await queue.dead_letters(0, args.count)]
            if args.json:
                for d in letters:
                    print(list_tables.dead_json(d))
            else:
                list_tables.print_table(
                    list_tables.dead_table(f"dead letters of {name}, oldest first", letters),
                    f"no dead letters in {name}",
                    len(letters),
                )
        elif args.into is not None:
            return await _replay_into(queue, layout, name, args.into, args.count)
        elif name not in layout:
            print(
                f"router dead: {name} is not in routes.yaml (orphaned): nothing would "
                f"deliver its dead letters there; replay them into a configured "
                f"destination with --into NAME, or purge them",
                file=sys.stderr,
            )
            return 2
        else:
            replayed = await queue.replay_oldest(args.count)
            print(f"replayed {replayed} message(s) to {name}")
            scope = operator_log.count_scope(args.count, "dead letters")
            await record(queue, "replay", name, f"{replayed} replayed", scope)
        return 0

    return on_queues(settings, "dead", name, act, or_orphaned=True)


async def _replay_into(
    queue: ShardedQueue, layout: dict[str, int], name: str, into: str, count: int | None
) -> int:
    from router.queue import moving, operator_log
    from router.queue.sharded_queue import ShardedQueue

    first = queue.shards[0]
    target = ShardedQueue(first.redis, first.scripts, into, layout[into])
    try:
        moved = await moving.replay_dead_into(first.scripts, queue, name, target, into, count)
    except moving.MoveRefused as exc:
        print(f"router dead: {exc}", file=sys.stderr)
        return 2
    print(f"replayed {moved} dead letter(s) of {name} into {into}")
    scope = operator_log.count_scope(count, "dead letters")
    await record(queue, "replay", name, f"{moved} replayed into {into}", scope)
    return 0
