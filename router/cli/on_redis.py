"""The router's Redis for the `router` commands that work on it: its URL
(REDIS_URL, or the data/redis.url of a running `router serve`), a command
run on it, a destination's queues there (configured or orphaned), and the
record of each operator action taken (router.queue.operator_log)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from router.cli.config_load import layout_or_exit
from router.ops import redaction

if TYPE_CHECKING:
    from router.config.settings import Settings
    from router.queue.sharded_queue import ShardedQueue

# Where `router serve` writes the address of its embedded server, so that
# `router dead ...`, `router api` and `router worker` can find it.
EMBEDDED_URL_FILE = "redis.url"


def redis_url_or_exit(settings: Settings, command: str) -> str:
    if settings.redis_url:
        return settings.redis_url
    url_file = Path(settings.data_dir) / EMBEDDED_URL_FILE
    if url_file.exists():
        return url_file.read_text().strip()
    print(
        f"router {command}: set REDIS_URL (the embedded server runs only inside "
        f"`router serve`, and none was found in {url_file})",
        file=sys.stderr,
    )
    raise SystemExit(2)


def on_redis(
    settings: Settings, command: str, act: Callable[[Any, Any], Coroutine[Any, Any, int]]
) -> int:
    """Run `act(redis, scripts)` on the router's Redis, then close it."""
    from router.queue.scripts import Scripts
    from router.redis import mode as redis_mode

    url = redis_url_or_exit(settings, command)

    async def run() -> int:
        redis = await redis_mode.open_client(url)
        try:
            return await act(redis, Scripts(redis))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except (OSError, RedisError) as exc:
        shown = redaction.shown_redis_url(url)
        print(f"router {command}: Redis at {shown}: {exc}", file=sys.stderr)
        return 1


def on_queues(
    settings: Settings,
    command: str,
    name: str,
    act: Callable[[ShardedQueue], Coroutine[Any, Any, int]],
    or_orphaned: bool = False,
) -> int:
    """Run `act` on the queues of destination `name` (every shard), for a
    command that reads or changes them; exit 2 on an unknown name. With
    `or_orphaned`, also of a destination removed from routes.yaml that a
    process was once configured with (router.queue.orphans)."""
    from router.queue import orphans

    layout = layout_or_exit(settings)

    def unknown() -> int:
        print(
            f"router {command}: no destination named {name!r}; defined: {', '.join(layout)}",
            file=sys.stderr,
        )
        return 2

    if name not in layout and not or_orphaned:
        return unknown()

    async def run(redis: Any, scripts: Any) -> int:
        queues = await orphans.queues_of(redis, scripts, name, layout)
        return unknown() if queues is None else await act(queues)

    return on_redis(settings, command, run)


async def record(
    queue: ShardedQueue, action: str, subject: str, result: str, scope: str = ""
) -> None:
    """Record an operator action taken here, for the servers' log
    (router.queue.operator_log)."""
    from router.queue import operator_log

    done = operator_log.OperatorAction(action, subject, result, operator_log.cli_source(), scope)
    await operator_log.record(queue.shards[0].redis, done)
