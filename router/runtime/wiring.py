"""One router process's running parts, wired in one place for every kind
of process: `router serve` and `router api` (from the HTTP app's
lifespan), `router worker` and `router worker --burst` (from the CLI).

    async with Runtime.connected(settings, config) as runtime:  # Redis, scripts, status
        async with runtime.running(deliver=True):  # workers, reload, operator log
            ...

The two steps are apart so that what builds on the connection (ingest's
batchers and limiters, a metrics port) is ready before the reload watch
can apply a new routes.yaml to it. The HTTP side and delivery are
siblings: the app gets a Runtime and owns no workers; the workers know
nothing of HTTP (a reload reaches the app through `ingest`, router.runtime.reload).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from router.config import Config
from router.config.settings import Settings
from router.delivery.workers import Workers, running_workers
from router.ops import logs, tracing
from router.queue import operator_log
from router.queue.scripts import Scripts
from router.queue.status import StatusReader, layout_of
from router.redis import mode as redis_mode
from router.runtime.reload import IngestSwitch, Reloader


class Runtime:
    """Redis, its scripts and the status reader of one process; its delivery
    workers and routes.yaml watch while `running`."""

    def __init__(self, settings: Settings, config: Config, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.scripts = Scripts(redis)
        # The figures of the destinations configured now (reloads included).
        self.status = StatusReader(
            redis, self.scripts, lambda: layout_of(self.config.destinations.values())
        )
        self.workers: Workers | None = None  # while running, when this process delivers
        self.reloader: Reloader | None = None  # while running
        self._started_with = config

    @property
    def delivering(self) -> bool:
        """Whether the delivery workers run now (the readiness check)."""
        return self.workers is not None and self.workers.running

    @property
    def config(self) -> Config:
        """The running config: the last routes.yaml a reload applied."""
        return self.reloader.config if self.reloader is not None else self._started_with

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(cls, settings: Settings, config: Config) -> AsyncIterator[Runtime]:
        """A Runtime on settings.redis_url; the client closed on leaving.
        With an OTLP endpoint set, tracing runs as long (router.ops.tracing):
        the spans still queued are sent on leaving."""
        if settings.redis_url is None:
            raise ValueError("a Runtime needs settings.redis_url (the CLI starts the embedded one)")
        endpoint = settings.traces_endpoint
        if endpoint is not None:
            tracing.start(endpoint, settings.otel_service_name)
        try:
            redis = await redis_mode.open_client(settings.redis_url, settings.redis_connections)
            try:
                yield cls(settings, config, redis)
            finally:
                await redis.aclose()
        finally:
            if endpoint is not None:
                await tracing.stop()

    @contextlib.asynccontextmanager
    async def running(
        self, *, deliver: bool, ingest: IngestSwitch | None = None
    ) -> AsyncIterator[Runtime]:
        """While the block runs: the delivery workers (when `deliver`), the
        routes.yaml watch (applying a reload to the workers and to `ingest`,
        the HTTP side, when given) and this process's part in logging
        operator actions. Stopped in the reverse order on leaving: the
        operator-log tail, then the watch (a reload being applied finishes
        first), then the workers, so no reload meets workers that stop."""
        async with contextlib.AsyncExitStack() as stack:
            # Last on leaving: the lines of the last deliveries written.
            stack.callback(logs.flush)
            if deliver:
                self.workers = await stack.enter_async_context(
                    running_workers(
                        self.redis,
                        self._started_with.destinations.values(),
                        self.settings.shutdown_grace,
                        self.settings.delivery_transport,
                    )
                )
            self.reloader = await stack.enter_async_context(
                Reloader(
                    self.settings,
                    self._started_with,
                    self.redis,
                    workers=self.workers,
                    ingest=ingest,
                ).running()
            )
            # Operator actions, from the CLI too, logged once by one of the
            # processes (router.queue.operator_log).
            await stack.enter_async_context(operator_log.tailing(self.redis))
            yield self

    async def burst(self) -> None:
        """Deliver what every destination holds now, then return (`router
        worker --burst`: tests, cron jobs)."""
        try:
            await Workers(
                self.redis,
                self._started_with.destinations.values(),
                self.settings.delivery_transport,
            ).run_burst()
        finally:
            logs.flush()  # the lines of the last deliveries
