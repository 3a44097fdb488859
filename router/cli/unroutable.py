"""`router unroutable list|replay|purge`: the kept items of requests a
route answered 200 but could not route."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from router.cli.config_load import load_or_exit
from router.cli.on_redis import on_redis

if TYPE_CHECKING:
    from router.config.settings import Settings


def unroutable(settings: Settings, args: argparse.Namespace) -> int:
    """`router unroutable list|replay|purge ROUTE [--count N]`: the items of
    requests answered 200 that the route could not route (router.queue.unroutable)."""
    from router.cli import list_tables
    from router.config import route_key
    from router.queue import operator_log
    from router.queue.unroutable import UnroutableStore

    route = route_key(args.route)
    if args.json and args.action != "list":
        print("router unroutable: --json goes with list", file=sys.stderr)
        return 2
    # Replay reads items as the running router would: routes.yaml whole,
    # with the format's options (list and purge need no config at all).
    ingest = None
    if args.action == "replay":
        from router.ingest.route import IngestRoute

        config = load_or_exit(settings)
        found = [r for r in config.routes if route_key(r.path) == route]
        if not found:
            paths = ", ".join(r.path for r in config.routes)
            print(f"router unroutable: no route {args.route!r}; defined: {paths}", file=sys.stderr)
            return 2
        if found[0].format is None:
            print(
                f"router unroutable: route {found[0].path} has no `format:`: nothing to replay "
                "(only a format route keeps unroutable items)",
                file=sys.stderr,
            )
            return 2
        ingest = IngestRoute.of(found[0])

    async def act(redis: Any, scripts: Any) -> int:
        store = UnroutableStore(scripts, route)
        if args.action == "list":
            items = [
                i for _, i in await store.items(0, args.count if args.count is not None else 100)
            ]
            if args.json:
                for item in items:
                    print(json.dumps(msgspec.structs.asdict(item)))
            else:
                list_tables.print_table(
                    list_tables.unroutable_table(
                        f"unroutable items of {route}, oldest first", items
                    ),
                    f"no unroutable items kept for {route}",
                    len(items),
                )
        elif args.action == "purge":
            purged = await store.purge(args.count)
            print(f"purged {purged} unroutable item(s) of {route}")
            await _record_route(redis, "purge", f"{purged} purged")
        else:
            from router.ingest.route import replay_unroutable

            assert ingest is not None
            done = await replay_unroutable(ingest, scripts, args.count)
            print(
                f"replayed {done.replayed} unroutable item(s) of {route}; "
                f"{done.still} still not routable (kept)"
            )
            result = f"{done.replayed} replayed, {done.still} kept"
            await _record_route(redis, "replay", result)
        return 0

    async def _record_route(redis: Any, action: str, result: str) -> None:
        scope = operator_log.count_scope(args.count, "unroutable items")
        done = operator_log.OperatorAction(
            f"unroutable {action}", route, result, operator_log.cli_source(), scope
        )
        await operator_log.record(redis, done)

    return on_redis(settings, "unroutable", act)
