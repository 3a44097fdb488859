"""`router serve`, `router api` and `router worker`: the long-running
processes (the HTTP server, the delivery workers, or both), after the
start-up checks of routes.yaml and of the Redis they use."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from router.cli.config_load import load_or_exit
from router.cli.on_redis import EMBEDDED_URL_FILE, redis_url_or_exit
from router.config import Config
from router.redis.embedded import EmbeddedRedis

if TYPE_CHECKING:
    from router.config.settings import Settings

log = logging.getLogger("router")

# How long the start-up look at Redis waits before starting anyway.
PREFLIGHT_TIMEOUT = 3.0


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


def _log_summary(settings: Settings, config: Config, http: bool) -> None:
    """Where messages go and what this process serves, in a few lines."""
    from router.runtime import start_log

    for line in start_log.destination_lines(config):
        log.info("%s", line)
    log.info("%s", start_log.endpoints_line(settings, config, http))


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from router.http.server import protocol_class
    from router.web.app import create_app

    config = load_or_exit(settings)
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
        settings = dataclasses.replace(settings, redis_url=redis_url_or_exit(settings, "api"))
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
        # directory so each scrape adds up all of them (router.web.prometheus).
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
    from router.runtime.heap import freeze_startup_heap
    from router.runtime.wiring import Runtime

    async with Runtime.connected(settings, config) as runtime:
        if burst:
            freeze_startup_heap()
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
            freeze_startup_heap()  # the sinks' clients too
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


def worker(settings: Settings, args: argparse.Namespace) -> int:
    config = load_or_exit(settings)
    _check_claim_loops_or_exit(settings, config)
    settings = dataclasses.replace(settings, redis_url=redis_url_or_exit(settings, "worker"))
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
