"""The `router` command: serve, api, worker, check, status, retry, dead, orphan,
unroutable, pause, resume, plugins."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError

from router.config import Config, ConfigError
from router.config.loading import load
from router.config.settings import Settings, SettingsError
from router.ops import logs, redaction
from router.redis.embedded import EmbeddedRedis

if TYPE_CHECKING:
    from router.queue.sharded_queue import ShardedQueue

log = logging.getLogger("router")

# Where `router serve` writes the address of its embedded server, so that
# `router dead ...`, `router api` and `router worker` can find it.
EMBEDDED_URL_FILE = "redis.url"

# How long the start-up look at Redis waits before starting anyway.
PREFLIGHT_TIMEOUT = 3.0


def _load_or_exit(settings: Settings) -> Config:
    try:
        config = load(settings.routes_file)
    except ConfigError as exc:
        print(f"router: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in config.warnings:
        log.warning("config: %s", warning)
    return config


def _check_redis_or_exit(settings: Settings, url: str, config: Config) -> None:
    """Refuse to start on a Redis that would lose queued messages, or with a
    shard count the stored messages do not follow; a Redis that does not
    answer yet is not a reason to refuse (it may come later: /readyz says
    not ready until it does)."""
    from router.queue import shard_layout
    from router.redis import memory as redis_memory
    from router.redis import mode as redis_mode

    async def look() -> tuple[str, redis_memory.MemoryState | None, str | None]:
        redis = await redis_mode.open_client(url)
        try:
            async with asyncio.timeout(PREFLIGHT_TIMEOUT):
                memory = await redis_memory.read(redis)
                if memory is not None and redis_memory.refusal(memory, settings.allow_eviction):
                    return redis_mode.describe(redis), memory, None
                shards = await shard_layout.refusal(redis, config.destinations.values())
                # (Replicas too few for ROUTER_REDIS_WAIT: the app's own
                # watch logs it, and when they are in sync: router.ingest.writable.)
                return redis_mode.describe(redis), memory, shards
        finally:
            await redis.aclose()

    try:
        mode, memory, shards = asyncio.run(look())
    except (OSError, TimeoutError, RedisError) as exc:
        log.warning("Redis does not answer at start (%s); starting anyway", exc or "timeout")
        return
    refusal = memory and redis_memory.refusal(memory, settings.allow_eviction)
    for problem in (refusal, shards):
        if problem:
            print(f"router: {problem}", file=sys.stderr)
            raise SystemExit(2)
    log.info("Redis: %s", mode)
    warning = memory and redis_memory.warning(memory, settings.allow_eviction)
    if warning:
        log.warning("%s", warning)


def _redis_url_or_exit(settings: Settings, command: str) -> str:
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


def _log_summary(settings: Settings, config: Config, http: bool) -> None:
    """Where messages go and what this process serves, in a few lines."""
    from router.runtime import start_log

    for line in start_log.destination_lines(config):
        log.info("%s", line)
    log.info("%s", start_log.endpoints_line(settings, config, http))


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from router.http.server import protocol_class
    from router.web.app import create_app

    config = _load_or_exit(settings)
    if settings.run_workers:
        _check_claim_loops_or_exit(settings, config)
    embedded = None
    url_file = Path(settings.data_dir) / EMBEDDED_URL_FILE
    if settings.redis_url is None and args.command == "serve":
        embedded = EmbeddedRedis(settings.data_dir, appendfsync=settings.embedded_fsync)
        embedded.start()
        url_file.write_text(embedded.url + "\n")
        log.info(
            "REDIS_URL not set: started embedded Valkey at %s, data in %s "
            "(append-only file, appendfsync %s)",
            embedded.url,
            embedded.data_dir,
            settings.embedded_fsync,
        )
        settings = dataclasses.replace(settings, redis_url=embedded.url)
    elif settings.redis_url is None:
        settings = dataclasses.replace(settings, redis_url=_redis_url_or_exit(settings, "api"))
    assert settings.redis_url is not None
    _check_redis_or_exit(settings, settings.redis_url, config)
    log.info(
        "routes: %s",
        "; ".join(
            f"{r.path} -> {', '.join(d.name for d in r.destinations)}" for r in config.routes
        ),
    )
    _log_summary(settings, config, http=True)
    common = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
        # The router's own log format (control characters escaped) for
        # uvicorn's lines too: they propagate to the root logger.
        log_config=None,
        loop=settings.event_loop,
    )
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which
    # would end the process "killed by signal". The spec asks for exit 0 once
    # in-flight work is finished or handed back, so those signals land in a
    # handler that does nothing at that point.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    multiproc_dir = None
    if settings.processes > 1 and settings.metrics_multiproc_dir is None:
        # A scrape reaches one of the processes on the port: they share a
        # directory so each scrape adds up all of them (router.ops.metrics).
        import tempfile

        multiproc_dir = tempfile.mkdtemp(prefix="router-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    try:
        if args.reload or settings.processes > 1:
            # The server runs in spawned children (uvicorn's reloader or its
            # process supervisor), which import the app and the protocol
            # class by name and read the same environment.
            os.environ["REDIS_URL"] = settings.redis_url or ""
            os.environ["ROUTES_FILE"] = settings.routes_file
            os.environ["ROUTER_WORKERS"] = "1" if settings.run_workers else "0"
            children: dict[str, Any] = (
                {
                    "reload": True,
                    "reload_dirs": [
                        str(Path(__file__).parent.parent),
                        str(Path(settings.routes_file).parent),
                    ],
                }
                if args.reload
                else {"workers": settings.processes}
            )
            uvicorn.run(
                "router.web.app:app_from_env",
                factory=True,
                http="router.http.server:FromEnvironment",
                **children,
                **common,
            )
        else:
            uvicorn.run(
                create_app(settings, config),
                # A deadline for request headers, a cap on connections still
                # sending them, and JSON bodies on the server's own errors.
                http=protocol_class(
                    settings.header_timeout, settings.max_pending_connections, settings.http_parser
                ),
                **common,
            )
    finally:
        if multiproc_dir is not None:
            import shutil

            shutil.rmtree(multiproc_dir, ignore_errors=True)
        if embedded is not None:
            with contextlib.suppress(OSError):
                url_file.unlink()
            embedded.stop()
    return 0


async def _run_workers(settings: Settings, config: Config, burst: bool) -> None:
    from router.runtime.wiring import Runtime

    async with Runtime.connected(settings, config) as runtime:
        if burst:
            await runtime.burst()
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            if settings.metrics and settings.metrics_port is not None:
                from router.web import prometheus

                await stack.enter_async_context(
                    prometheus.served(settings, settings.metrics_port, runtime.status)
                )
                log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
            await stack.enter_async_context(runtime.running(deliver=True))
            await stop.wait()


def _run_on_loop(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """asyncio.run on ROUTER_LOOP's loop, chosen as uvicorn chooses for
    `router serve` and `router api` ("auto": uvloop when installed)."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise SystemExit("router: ROUTER_LOOP=uvloop: uvloop is not installed") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def _check_claim_loops_or_exit(settings: Settings, config: Config) -> None:
    """Refuse a Redis pool the claim loops would fill, with the fix."""
    from router.queue.shard_layout import claim_loops_problem

    problem = claim_loops_problem(
        settings.routes_file, config.destinations.values(), settings.redis_connections
    )
    if problem is not None:
        print(f"router: {problem}", file=sys.stderr)
        raise SystemExit(2)


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    config = _load_or_exit(settings)
    _check_claim_loops_or_exit(settings, config)
    settings = dataclasses.replace(settings, redis_url=_redis_url_or_exit(settings, "worker"))
    assert settings.redis_url is not None
    _check_redis_or_exit(settings, settings.redis_url, config)
    from router.config.plugins import PluginError

    if not args.burst:
        _log_summary(settings, config, http=False)
    try:
        _run_on_loop(_run_workers(settings, config, args.burst), settings.event_loop)
    except PluginError as exc:  # a destination's sink refused to start
        print(f"router: {exc}", file=sys.stderr)
        return 2
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    config = _load_or_exit(settings)
    for route in config.routes:
        print(f"route {route.path} -> {', '.join(d.name for d in route.destinations)}")
    for dest in config.destinations.values():
        s = dest.settings
        # As written (`${VAR}`s unexpanded): a token in its query stays out.
        url = "" if dest.shown_url is None else f" -> {dest.shown_url}"
        print(
            f"destination {dest.name}: plugin {s.plugin}{url}, ordered by "
            f"{s.ordering_key or '(one global order)'}, max_in_flight {s.max_in_flight}"
            + (f", {s.shards} shards" if s.shards > 1 else "")
        )
    # Each sink is built as `router serve` builds it (and closed, nothing
    # delivered): a plugin that refuses its options fails here, not at start.
    from router.config.plugins import try_sinks

    problems = asyncio.run(try_sinks(config.destinations.values(), settings.delivery_transport))
    for problem in problems:
        print(f"router: config error: {settings.routes_file}: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"{settings.routes_file}: ok")
    return 0


def _plugins(settings: Settings, args: argparse.Namespace) -> int:
    """The installed plugins, then each broken one with its reason (exit 1:
    a build or deploy step running `router plugins` stops on it)."""
    from router.config.plugins import PluginError, available, plugin_manager

    try:
        found = available(plugin_manager())
    except PluginError as exc:  # two plugins provide one name
        print(f"router plugins: {exc}", file=sys.stderr)
        return 2
    for name, st in sorted(found.sink_types.items()):
        print(f"{name}: {st.description}")
    for name, fmt in sorted(found.formats.items()):
        print(f"format {name}: {fmt.description}")
    for broken in found.broken:
        print(f"broken: {broken}")
    return 1 if found.broken else 0


def _layout_or_exit(settings: Settings) -> dict[str, int]:
    """The destinations and their shard counts, for the operator commands:
    read without the rest of routes.yaml's checks, so they need none of the
    destinations' secrets (config.load_layout)."""
    from router.config import load_layout

    try:
        layout = load_layout(settings.routes_file)
    except ConfigError as exc:
        print(f"router: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Errors they print from Redis are cleaned of the file's secrets
    # (redaction.known): its variables' values (load_layout), and, where the
    # whole file loads here, its literal ones too (header values). Only an
    # extra: whatever stops the whole load (an unset variable, a broken
    # plugin) must not stop these commands.
    with contextlib.suppress(Exception):
        load(settings.routes_file)
    return layout


def _on_redis(
    settings: Settings, command: str, act: Callable[[Any, Any], Coroutine[Any, Any, int]]
) -> int:
    """Run `act(redis, scripts)` on the router's Redis, then close it."""
    from router.queue.scripts import Scripts
    from router.redis import mode as redis_mode

    url = _redis_url_or_exit(settings, command)

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


def _on_queues(
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

    layout = _layout_or_exit(settings)

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

    return _on_redis(settings, command, run)


async def _record(
    queue: ShardedQueue, action: str, subject: str, result: str, scope: str = ""
) -> None:
    """Record an operator action taken here, for the servers' log
    (router.queue.operator_log)."""
    from router.queue import operator_log

    done = operator_log.OperatorAction(action, subject, result, operator_log.cli_source(), scope)
    await operator_log.record(queue.shards[0].redis, done)


def _status(settings: Settings, args: argparse.Namespace) -> int:
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

        return _on_queues(settings, "status", args.destination, one_key)
    layout = _layout_or_exit(settings)
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
        return await status_table.show(redis, scripts, layout, args.watch, args.json, configured)

    try:
        return _on_redis(settings, "status", show)
    except KeyboardInterrupt:
        return 0


def _recount(settings: Settings, args: argparse.Namespace) -> int:
    """`router recount DEST`."""

    async def act(queue: ShardedQueue) -> int:
        shards = await queue.recount(force=True)
        figures = await queue.figures()
        await _record(queue, "recount", args.destination, f"{figures.messages} counted")
        print(f"{args.destination}: {figures.messages} message(s) counted in {shards} shard(s)")
        return 0

    return _on_queues(settings, "recount", args.destination, act)


def _retry(settings: Settings, args: argparse.Namespace) -> int:
    """`router retry DEST [KEY...]`."""
    from router.queue import operator_log

    async def act(queue: ShardedQueue) -> int:
        moved = await queue.retry_now(args.key or None)
        scope = operator_log.keys_scope(args.key, "all waiting keys")
        await _record(queue, "retry", args.destination, f"{moved} resumed", scope)
        print(f"{moved} waiting key(s) of {args.destination} made due now")
        return 0

    return _on_queues(settings, "retry", args.destination, act)


def _pause(settings: Settings, args: argparse.Namespace) -> int:
    """`router pause DEST` / `router resume DEST`."""
    pausing = args.command == "pause"

    async def act(queue: ShardedQueue) -> int:
        await queue.set_paused(pausing)
        await _record(queue, args.command, args.destination, "paused" if pausing else "resumed")
        print(
            f"{args.destination} paused: nothing new is attempted, attempts in flight "
            "finish, ingest goes on storing"
            if pausing
            else f"{args.destination} resumed"
        )
        return 0

    return _on_queues(settings, args.command, args.destination, act)


def _dead(settings: Settings, args: argparse.Namespace) -> int:
    """`router dead list|replay|purge|blocked|unblock DEST`, for a configured
    destination or an orphaned one (removed from routes.yaml, holding
    messages): an orphan's dead letters are replayed `--into` a configured
    destination (router.queue.moving). Tables by default, `--json` for scripts."""
    from router.cli import list_tables
    from router.queue import operator_log

    name = args.destination
    layout = _layout_or_exit(settings)
    if args.into is not None and args.action != "replay":
        print("router dead: --into goes with replay", file=sys.stderr)
        return 2
    if args.into is not None and not _into_ok(layout, "dead", name, args.into):
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
            await _record(queue, "unblock", name, f"{done} unblocked", scope)
        elif args.action == "purge":
            purged = await queue.purge_dead(args.count)
            print(f"purged {purged} dead letter(s) of {name}")
            scope = operator_log.count_scope(args.count, "dead letters")
            await _record(queue, "purge", name, f"{purged} purged", scope)
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
            await _record(queue, "replay", name, f"{replayed} replayed", scope)
        return 0

    return _on_queues(settings, "dead", name, act, or_orphaned=True)


def _into_ok(layout: dict[str, int], command: str, name: str, into: str) -> bool:
    """`--into` names a configured destination other than the source."""
    if into not in layout:
        print(
            f"router {command}: --into {into!r}: no destination of that name in routes.yaml; "
            f"defined: {', '.join(layout)}",
            file=sys.stderr,
        )
        return False
    if into == name:
        print(f"router {command}: --into names {name} itself", file=sys.stderr)
        return False
    return True


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
    await _record(queue, "replay", name, f"{moved} replayed into {into}", scope)
    return 0


def _orphan(settings: Settings, args: argparse.Namespace) -> int:
    """`router orphan move SRC --into DEST` / `router orphan purge SRC`: the
    queued (not dead) messages of a destination removed from routes.yaml
    (router.queue.moving)."""
    from router.queue import moving

    name = args.destination
    layout = _layout_or_exit(settings)
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
    if args.into is not None and not _into_ok(layout, "orphan", name, args.into):
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
        await _record(queue, args.action, name, result, "queued")
        if done.in_flight:
            print(
                f"router orphan: {len(done.in_flight)} key(s) of {name} are being delivered by "
                f"a process still configured with it, and were left: run this again once "
                f"every process has reloaded routes.yaml",
                file=sys.stderr,
            )
            return 1
        return 0

    return _on_queues(settings, "orphan", name, act, or_orphaned=True)


def _unroutable(settings: Settings, args: argparse.Namespace) -> int:
    """`router unroutable list|replay|purge ROUTE [--count N]`: the items of
    requests answered 200 that the route could not route (router.queue.unroutable)."""
    from router.cli import list_tables
    from router.config import route_key
    from router.ingest.route import IngestRoute, replay_unroutable
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
        config = _load_or_exit(settings)
        found = [r for r in config.routes if route_key(r.path) == route]
        if not found:
            paths = ", ".join(r.path for r in config.routes)
            print(f"router unroutable: no route {args.route!r}; defined: {paths}", file=sys.stderr)
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

    return _on_redis(settings, "unroutable", act)


def _positive(text: str) -> int:
    """A --count: a whole number from 1 (0 or less would read as 'all')."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not at least 1 (leave --count out for all)")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The `router` command line (the README's "Commands" table lists it)."""
    parser = argparse.ArgumentParser(prog="router", description=__doc__)
    parser.add_argument("--routes", help="routes file (default: $ROUTES_FILE or routes.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("serve", "ingest API and delivery workers in one process"),
        ("api", "ingest API only (REDIS_URL, or the data/redis.url of a running serve)"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument(
            "--reload", action="store_true", help="restart on code changes (development)"
        )
        p.add_argument("--access-log", action="store_true", help="log every request")
        p.set_defaults(run=_serve)
    p = sub.add_parser(
        "worker", help="delivery workers only (REDIS_URL, or the data/redis.url of a running serve)"
    )
    p.add_argument(
        "--burst", action="store_true", help="deliver what can be delivered now, then exit"
    )
    p.set_defaults(run=_worker)
    sub.add_parser("check", help="validate routes.yaml and the plugins it names").set_defaults(
        run=_check
    )
    sub.add_parser("plugins", help="list installed delivery plugins").set_defaults(run=_plugins)
    p = sub.add_parser(
        "status", help="what every destination's queue holds (one conversation: DEST KEY)"
    )
    p.add_argument("destination", nargs="?", help="only this destination")
    p.add_argument("key", nargs="?", help="one ordering key (conversation) of DEST")
    p.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(run=_status)
    p = sub.add_parser(
        "retry",
        help="make keys waiting out a backoff due now (all, or the KEYs given); without "
        "KEYs also mark a destination that is down or held by a Retry-After up again",
    )
    p.add_argument("destination")
    p.add_argument("key", nargs="*", help="ordering keys (default: every waiting key)")
    p.set_defaults(run=_retry)
    p = sub.add_parser(
        "recount",
        help="count a destination's messages from its lanes again (after the last process "
        "of a version without counts stopped)",
    )
    p.add_argument("destination")
    p.set_defaults(run=_recount)
    p = sub.add_parser(
        "dead", help="dead letters and blocked keys: list, replay, purge, blocked, unblock"
    )
    p.add_argument("action", choices=["list", "replay", "purge", "blocked", "unblock"])
    p.add_argument("destination")
    p.add_argument("key", nargs="*", help="unblock: the ordering keys (default: all blocked)")
    p.add_argument(
        "--count",
        type=_positive,
        default=None,
        help="how many, oldest first (list: default 100; replay, purge: all)",
    )
    p.add_argument(
        "--into",
        metavar="DEST",
        help="replay: into this destination of routes.yaml, at the end of each key's lane "
        "(an orphaned destination's dead letters)",
    )
    p.add_argument("--json", action="store_true", help="list, blocked: JSON lines, not a table")
    p.set_defaults(run=_dead)
    p = sub.add_parser(
        "orphan",
        help="the queued messages of a destination removed from routes.yaml: move them "
        "into a configured one (in order per key), or purge them",
    )
    p.add_argument("action", choices=["move", "purge"])
    p.add_argument("destination", help="the orphaned destination")
    p.add_argument("--into", metavar="DEST", help="move: the destination of routes.yaml")
    p.set_defaults(run=_orphan)
    p = sub.add_parser(
        "unroutable",
        help="items of requests answered 200 that a route could not route: list, "
        "replay (read again by this version), purge",
    )
    p.add_argument("action", choices=["list", "replay", "purge"])
    p.add_argument("route", help="the route's path, e.g. /webhooks/whatsapp")
    p.add_argument(
        "--count",
        type=_positive,
        default=None,
        help="how many, oldest first (list: default 100; replay, purge: all)",
    )
    p.add_argument("--json", action="store_true", help="list: JSON lines, not a table")
    p.set_defaults(run=_unroutable)
    for name, text in [
        ("pause", "pause a destination: nothing new is attempted, ingest goes on storing"),
        ("resume", "resume a paused destination"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("destination")
        p.set_defaults(run=_pause)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"router: environment error: {exc}", file=sys.stderr)
        return 2
    overrides: dict[str, object] = {}
    if args.routes:
        overrides["routes_file"] = args.routes
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if args.command == "api":
        overrides["run_workers"] = False
    settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
    if args.command == "dead" and args.action == "list" and args.count is None:
        args.count = 100
    logs.setup(settings.log_level, settings.log_format)
    if args.command in ("serve", "api", "worker", "check"):
        for warning in settings.warnings():
            log.warning("environment: %s", warning)
    if not settings.metrics:
        from router.ops import metrics

        metrics.switch_off()
    if args.command in ("serve", "api", "worker") and not getattr(args, "burst", False):
        from router.runtime.reload import hold_sighup

        hold_sighup()  # SIGHUP reloads routes.yaml (router.runtime.reload), never ends a process
    return int(args.run(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
