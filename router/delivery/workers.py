"""The delivery workers of a process: one DestinationWorker per destination
and shard, with the destinations' sinks; started and stopped together
(running_workers), and swapped destination by destination on a routes.yaml
reload (Workers.prepare/switch, router.runtime.reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from router.config import Destination
from router.config.plugins import OpenSink, open_sink
from router.delivery.worker import DestinationWorker, LayoutGate
from router.ops.cancelling import cancel_and_wait
from router.plugin.client import DeliveryTransport
from router.queue.scripts import Scripts

# The delivery path's logger (operators filter on it).
log = logging.getLogger("router.worker")


class Workers:
    """The delivery workers of a set of destinations, with their sinks."""

    def __init__(
        self,
        redis: Redis,
        destinations: Iterable[Destination],
        transport: DeliveryTransport = "h1",
    ) -> None:
        self.redis = redis
        self.transport = transport
        self.scripts = Scripts(redis)
        self.destinations = list(destinations)
        self.workers: list[DestinationWorker] = []
        self._sinks: list[OpenSink] = []
        self._loops: list[asyncio.Task[None]] = []  # one per worker, in the same order
        self._started = False

    async def _open_sinks(self) -> None:
        """Open every destination's sink; if a plugin's factory raises, close
        the ones already open (their HTTP clients) before re-raising."""
        try:
            for dest in self.destinations:
                self.workers += await self._open(dest, self._sinks)
        except BaseException:
            await self._close_sinks()
            self.workers.clear()
            raise

    async def _open(self, dest: Destination, sinks: list[OpenSink]) -> list[DestinationWorker]:
        """Open a destination's sink (appended to `sinks`) and build its
        workers, one loop per shard, not yet running."""
        opened = await open_sink(dest, self.transport)
        sinks.append(opened)
        layout = LayoutGate()
        return [
            DestinationWorker(self.redis, self.scripts, dest, opened.sink, shard, layout)
            for shard in range(dest.settings.shards)
        ]

    async def _close_sinks(self) -> None:
        for opened in self._sinks:
            await opened.aclose()
        self._sinks.clear()

    async def start(self) -> None:
        await self._open_sinks()
        self._started = True
        for w in self.workers:
            self._loops.append(asyncio.create_task(w.run(), name=f"worker:{w.destination.name}"))

    # -- a routes.yaml reload (router.runtime.reload) --------------------------------

    async def prepare(self, destinations: Iterable[Destination]) -> Reconfiguration:
        """Open the sinks of the destinations that are new or changed in
        `destinations`; nothing runs or stops yet. A plugin that refuses to
        start raises here, with nothing changed."""
        wanted = list(destinations)
        running = {d.name: d for d in self.destinations}
        changed = [d for d in wanted if running.get(d.name) != d]
        plan = Reconfiguration(wanted, {d.name for d in changed}, [], [])
        try:
            for dest in changed:
                plan.workers += await self._open(dest, plan.sinks)
        except BaseException:
            await plan.abandon()
            raise
        # Changed and removed destinations stop; unchanged ones run on.
        plan.stopping |= set(running) - {d.name for d in wanted}
        return plan

    async def switch(self, plan: Reconfiguration, grace: float) -> None:
        """Run what `plan` prepared: changed and removed destinations stop
        the way shutdown stops them (no new claims; deliveries in flight get
        `grace` seconds, the rest are handed back untried), then changed and
        new ones start with their new settings. Unchanged destinations are
        not touched. The lanes in Redis keep every key's order across the
        switch: a key still leased by a stopping worker cannot be claimed by
        the new one until it is acknowledged or handed back."""
        pairs = list(zip(self.workers, self._loops, strict=True))
        leaving = [(w, t) for w, t in pairs if w.destination.name in plan.stopping]
        # Out of the lists first, so `running` (and /readyz) speak of the
        # destinations that go on while the others wind down.
        self.workers = [w for w, t in pairs if w.destination.name not in plan.stopping]
        self._loops = [t for w, t in pairs if w.destination.name not in plan.stopping]
        await asyncio.gather(*(w.stop(grace) for w, _ in leaving))
        await cancel_and_wait(*(loop for _, loop in leaving))
        gone = {id(w.sink) for w, _ in leaving}
        for opened in [o for o in self._sinks if id(o.sink) in gone]:
            self._sinks.remove(opened)
            await opened.aclose()
        self.workers += plan.workers
        self._loops += [
            asyncio.create_task(w.run(), name=f"worker:{w.destination.name}") for w in plan.workers
        ]
        self._sinks += plan.sinks
        self.destinations = plan.destinations

    async def run_burst(self) -> None:
        """Drain every destination once and return (tests, cron jobs)."""
        await self._open_sinks()
        try:
            await asyncio.gather(*(w.run(burst=True) for w in self.workers))
        finally:
            await self.stop(grace=0)

    @property
    def running(self) -> bool:
        return self._started and all(not t.done() for t in self._loops)

    async def stop(self, grace: float) -> None:
        await asyncio.gather(*(w.stop(grace) for w in self.workers))
        await cancel_and_wait(*self._loops)
        await self._close_sinks()


@dataclass
class Reconfiguration:
    """What Workers.prepare opened for a reload, for Workers.switch to run."""

    destinations: list[Destination]  # all of them, in routes.yaml's order
    stopping: set[str]  # names of the running destinations to stop
    workers: list[DestinationWorker]  # of the new and changed destinations
    sinks: list[OpenSink]

    async def abandon(self) -> None:
        """Close what was opened (the reload is refused)."""
        for opened in self.sinks:
            await opened.aclose()
        self.sinks.clear()
        self.workers.clear()


@contextlib.asynccontextmanager
async def running_workers(
    redis: Redis,
    destinations: Iterable[Destination],
    grace: float,
    transport: DeliveryTransport = "h1",
) -> AsyncIterator[Workers]:
    """The one lifecycle of a process's workers (`router serve`'s lifespan
    and `router worker` alike): started on entry; on exit, in-flight
    deliveries get `grace` seconds, then are handed back to the queue."""
    workers = Workers(redis, destinations, transport)
    await workers.start()
    log.info(
        "delivery workers started for %s",
        ", ".join(d.name for d in workers.destinations) or "nothing",
    )
    try:
        yield workers
    finally:
        log.info("stopping workers (grace %.0fs)", grace)
        await workers.stop(grace)
