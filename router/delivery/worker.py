"""The delivery loop of one destination (one per shard): it claims keys and
delivers each in a task of its own (router.delivery.attempt); a process's set
of loops is router.delivery.workers.

A loop keeps up to `max_in_flight` deliveries running, each for a different
ordering key; the lanes in Redis make sure no two deliveries of one key run
at once anywhere. A key waiting out a backoff holds no task: it sits in the
`delayed` set until due, and the loop serves other keys meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.config import Destination
from router.delivery.attempt import Attempts
from router.delivery.health import DestinationHealth
from router.ops.cancelling import cancel_and_wait
from router.plugin.sinks import Sink
from router.queue import shard_layout
from router.queue.keys import shard_share
from router.queue.lanes import Claim, DestinationQueue
from router.queue.outbound_rate import shard_rate
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from router.redis.client import POOL_TIMEOUT, SOCKET_TIMEOUT

log = logging.getLogger("router.worker")

# Longest a loop sleeps without looking at Redis (also bounds how late a
# backoff or an expired lease of a dead instance is noticed).
MAX_IDLE = 1.0
# How long stop() waits for the loop's claim: its idle wait, a batch ahead
# of it, a connection, then its own batch.
STOP_CLAIM_WAIT = MAX_IDLE + 2 * SOCKET_TIMEOUT + POOL_TIMEOUT + 1

# BLPOP's timeout is only as precise as the Redis server's timer (100 ms at
# the default hz 10): a rate-limited loop waiting for a start less than this
# away sleeps here instead (router.queue.outbound_rate).
SERVER_TIMER = 0.1


class LayoutGate:
    """The shard-count check (router.queue.shard_layout) made once for all the
    shard loops of a destination in this process."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._agreed = False

    async def agreed(self, worker: DestinationWorker, burst: bool) -> bool:
        async with self._lock:
            if not self._agreed:
                self._agreed = await worker._check_layout(burst)
            return self._agreed


class DestinationWorker:
    """The delivery loop of one shard of a destination."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        destination: Destination,
        sink: Sink,
        shard: int = 0,
        layout: LayoutGate | None = None,
    ):
        self._layout = layout or LayoutGate()
        self.destination = destination
        self.settings = destination.settings
        shards = self.settings.shards
        rate = shard_rate(self.settings.rate_limit, shard, shards)  # router.queue.outbound_rate
        self.queue = DestinationQueue(
            redis, scripts, destination.name, shard, shards, rate, destination.message_log
        )
        self._rate_limited = rate is not None
        # A shard's part of max_in_flight: the parts add up to it, so the
        # cap holds over all shards and processes (each claim counts the
        # shard's leases, which every process shares).
        self.max_in_flight = shard_share(self.settings.max_in_flight, shard, shards)
        self.sink = sink
        self.lease_ms = int(self.settings.lease * 1000)
        self._tasks: dict[asyncio.Task[None], Claim] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._worker_id = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        self._claims = 0
        self._paused = False
        self.running = False
        self._loop_exited = asyncio.Event()
        self._health = DestinationHealth(destination)
        self._attempts = Attempts(
            destination, self.queue, sink, self.lease_ms, self._health, lambda: self._stopping
        )

    # -- the loop ----------------------------------------------------------

    async def run(self, burst: bool = False) -> None:
        """Deliver until stopped; with `burst`, return once nothing is left
        that could be attempted now (nothing ready, in flight or due)."""
        self.running = True
        self._loop_exited.clear()
        # Asked once: asyncio.create_task() asks for the running loop, a
        # getpid() system call on Python 3.11, and a task starts per claim.
        loop = asyncio.get_running_loop()
        errors = 0
        try:
            if not await self._layout.agreed(self, burst):
                return
            while not self._stopping:
                free = self.max_in_flight - len(self._tasks)
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                try:
                    result = await self.queue.claim(
                        self._new_token(),
                        free,
                        self.lease_ms,
                        self.max_in_flight,
                        self._health.breaker.on,
                    )
                    errors = 0
                except RedisError as exc:
                    errors += 1
                    await self._redis_down(exc, errors)
                    continue
                if result.paused != self._paused:
                    self._paused = result.paused
                    if self.queue.keys.shard == 0:  # one line per destination
                        log.info(
                            "destination %s %s",
                            self.destination.name,
                            "paused: nothing new is attempted (attempts in flight finish)"
                            if self._paused
                            else "resumed",
                        )
                for claim in result.claims:
                    task = loop.create_task(self._attempts.deliver(claim))
                    self._tasks[task] = claim
                    task.add_done_callback(self._task_done)
                if result.claims and result.ready_left > 0:
                    continue
                # Nothing more is ready: wait for a nudge (enqueue and ack
                # send one when a key becomes ready) or the next due time,
                # instead of a claim that would find nothing (a round trip
                # per wake-up at steady low rates).
                if burst and not self._tasks and result.ready_left <= 0:
                    # Nothing can be attempted now; keys waiting out a
                    # backoff stay queued for the next run.
                    return
                if burst and self._tasks:
                    # A slot freeing, or the claim's deadline (a backoff, a
                    # lease, the rate limit's next start), whichever is first.
                    self._slot_freed.clear()
                    wait = MAX_IDLE
                    if result.next_deadline_ms >= 0:
                        due = (result.next_deadline_ms - result.now_ms) / 1000
                        wait = min(MAX_IDLE, max(0.002, due))
                    await self._wait_slot(wait)
                    continue
                due = (result.next_deadline_ms - result.now_ms) / 1000
                if self._rate_limited and result.ready_left > 0 and 0 <= due < SERVER_TIMER:
                    await asyncio.sleep(due)  # the next start the limit allows
                    continue
                timeout = MAX_IDLE
                if result.next_deadline_ms >= 0:
                    timeout = (result.next_deadline_ms - result.now_ms) / 1000 + 0.002
                    timeout = min(MAX_IDLE, max(0.01, timeout))
                try:
                    await self.queue.wait(timeout)
                except RedisError as exc:
                    errors += 1
                    await self._redis_down(exc, errors)
        finally:
            self.running = False
            self._loop_exited.set()

    async def _check_layout(self, burst: bool) -> bool:
        """Claim nothing until the stored messages follow this shard count
        (router.queue.shard_layout; checked at start too, unless Redis did not
        answer then): claiming new shards while a conversation's earlier
        messages wait in the old ones would deliver it out of order."""
        errors = refusals = 0
        while not self._stopping:
            try:
                problem = await shard_layout.refusal(self.queue.redis, [self.destination])
                if problem is None:
                    # A queue stored by a version without counts gets them
                    # here, once (recount.lua); later starts find them.
                    await self._recount()
            except RedisError as exc:
                errors += 1
                await self._redis_down(exc, errors)
                continue
            if problem is None:
                return True
            if refusals % 60 == 0:
                log.error("%s; not delivering until it is fixed", problem)
            if burst:
                return False
            refusals += 1
            await asyncio.sleep(1.0)
        return False

    async def _recount(self) -> None:
        """Every shard of the destination (the gate runs this once for all)."""
        d = self.destination
        counted = await ShardedQueue.of(self.queue.redis, self.queue.scripts, d).recount()
        if counted:
            log.info("destination %s: counted the queue's messages (%d shards)", d.name, counted)

    async def _wait_slot(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), timeout)

    async def _redis_down(self, exc: Exception, errors: int) -> None:
        # Capped at 1 s: delivery resumes within a second of Redis coming back.
        delay = min(1.0, 0.1 * 2 ** min(errors, 6))
        if errors == 1 or errors % 20 == 0:
            log.warning(
                "destination %s: Redis unavailable (%s); retrying in %.1fs",
                self.destination.name,
                exc,
                delay,
            )
        await asyncio.sleep(delay)

    def _new_token(self) -> str:
        self._claims += 1
        return f"{self._worker_id}:{self._claims}"

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "destination %s: delivery task crashed",
                self.destination.name,
                exc_info=task.exception(),
            )

    # -- stopping ------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Stop claiming; let deliveries finish for up to `grace` seconds, then
        cancel the rest and hand their keys back, untried, to the queue."""
        self._stopping = True
        self._slot_freed.set()
        # The grace period counts from now: deliveries run on while the loop
        # below is awaited, so waiting for it must not extend their time.
        deadline = time.monotonic() + grace
        if self.running:
            # Let the loop finish the claim or wait it is in (at most
            # MAX_IDLE, or a Redis timeout), so every key it claimed has a
            # task here to finish or hand back, and none is left leased.
            # A claim may wait behind another batch of the shared batcher
            # (router.queue.scripts) and for a connection before its own.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loop_exited.wait(), STOP_CLAIM_WAIT)
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        left = {t: c for t, c in self._tasks.items() if not t.done()}
        await cancel_and_wait(*left, log_errors=False)  # _task_done logs a crash
        for claim in left.values():
            with contextlib.suppress(RedisError):
                await self.queue.release(claim)
        if left:
            log.warning(
                "destination %s: handed %d in-flight deliveries back to the queue",
                self.destination.name,
                len(left),
            )
