"""Delivery workers: one loop per destination claims keys and delivers them.

A loop keeps up to `max_in_flight` deliveries running, each for a different
ordering key; the lanes in Redis make sure no two deliveries of one key run
at once anywhere. A key waiting out a backoff holds no task: it sits in the
`delayed` set until due, and the loop serves other keys meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.config import Destination
from router.config.plugins import OpenSink, open_sink
from router.delivery import retry
from router.ops import logs
from router.ops.cancelling import cancel_and_wait, outlast
from router.ops.metrics import DeliveryMetrics
from router.plugin.client import DeliveryTransport
from router.plugin.sinks import Delivery, DeliveryFailed, Sink
from router.plugin.status_codes import matches, parse_statuses
from router.queue import envelope, shard_layout
from router.queue.keys import shard_share
from router.queue.lanes import BREAKER_OFF, Blame, Breaker, Claim, DestinationQueue, Failed, Outcome
from router.queue.outbound_rate import shard_rate
from router.queue.scripts import Scripts
from router.queue.sharded_queue import ShardedQueue
from router.redis.client import SOCKET_TIMEOUT

log = logging.getLogger("router.worker")

T = TypeVar("T")

# Longest a loop sleeps without looking at Redis (also bounds how late a
# backoff or an expired lease of a dead instance is noticed).
MAX_IDLE = 1.0

# BLPOP's timeout is only as precise as the Redis server's timer (100 ms at
# the default hz 10): a rate-limited loop waiting for a start less than this
# away sleeps here instead (router.queue.outbound_rate).
SERVER_TIMER = 0.1


class LeaseLost(Exception):
    pass


def _age(env: envelope.Envelope) -> float:
    """Seconds since the message arrived."""
    return time.time() - env.ts / 1000


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
        self.queue = DestinationQueue(redis, scripts, destination.name, shard, shards, rate)
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
        self._metrics = DeliveryMetrics(destination.name)
        self._breaker = breaker_of(destination)
        # HTTP answers that are the message's fault, not the destination's.
        self._ignored = parse_statuses(self.settings.circuit_breaker.ignore_statuses)

    # -- the loop ----------------------------------------------------------

    async def run(self, burst: bool = False) -> None:
        """Deliver until stopped; with `burst`, return once nothing is left
        that could be attempted now (nothing ready, in flight or due)."""
        self.running = True
        self._loop_exited.clear()
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
                        self._new_token(), free, self.lease_ms, self.max_in_flight, self._breaker.on
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
                    task = asyncio.create_task(self._deliver(claim))
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

    # -- one key -----------------------------------------------------------

    async def _deliver(self, claim: Claim) -> None:
        """Deliver the head of a claimed key, and its successors while the
        claim is kept (see ack.lua)."""
        head: bytes | None = claim.head
        attempts = claim.attempts
        while head is not None and not self._stopping:
            env = envelope.decode(head)
            if attempts:
                # Failures counted without an answer (a lease that ran out:
                # claim.lua counts it) and a max_age that passed during the
                # backoff are decided here, before trying again: a message
                # that kills its worker ends instead of killing workers forever.
                # Not a second decision about the failure _failed() decided:
                # only a give-up is acted on (its delay is dropped, the count
                # is not raised), and one comes only from what changed since
                # (a lease expiry, the clock passing max_age, a lowered limit).
                decision = retry.decide(self.settings.retry, attempts, _age(env))
                if decision.gives_up:
                    # Which of the two brought the count here is not
                    # recorded: name both.
                    error = (
                        f"not tried again after {attempts} attempts: the last one's lease "
                        "expired (its worker crashed or stalled?), or retry.max_attempts "
                        "was lowered since"
                        if decision.rule == "max_attempts"
                        else "not tried again: too old"
                    )
                    await self._record_failure(
                        claim, attempts, decision, error, env.id, None, counted=False
                    )
                    return
            delivery = Delivery(
                id=env.id,
                body=bytes(env.body),
                key=claim.key,
                attempt=attempts + 1,
                received_at_ms=env.ts,
                destination=self.destination.name,
                traceparent=env.tp,
                tracestate=env.tst,
            )
            started = time.perf_counter()
            try:
                await self._attempt(claim, delivery)
            except LeaseLost:
                log.warning(
                    "destination %s key %s: lease lost during delivery of %s; another "
                    "worker owns the key now",
                    self.destination.name,
                    claim.key,
                    env.id,
                )
                return
            except DeliveryFailed as exc:
                await self._failed(claim, env, attempts + 1, exc.reason, started, exc)
                return
            except Exception as exc:
                # A plugin bug is a failed attempt, never a dead worker.
                log.exception(
                    "destination %s: plugin %s raised on message %s",
                    self.destination.name,
                    self.settings.plugin,
                    env.id,
                )
                error = f"{type(exc).__name__}: {exc}"
                await self._failed(claim, env, attempts + 1, error, started)
                return
            seconds = time.perf_counter() - started
            # The destination took it: an ok attempt, whatever the ack meets.
            self._metrics.attempted("ok", seconds)
            acked = await self._settle(
                functools.partial(
                    self.queue.ack, claim, head, self.lease_ms, keep=not self._stopping
                )
            )
            if acked is False:
                return  # not recorded (Redis away past the lease): logged by _settle
            if acked.lease_lost:
                log.warning(
                    "destination %s key %s: ack of %s refused: the lease was lost (it "
                    "will be delivered again), or a retried ack had already landed",
                    self.destination.name,
                    claim.key,
                    env.id,
                )
                return
            self._metrics.acknowledged(env.ts)
            if acked.resumed is not None:
                self._log_up(acked.resumed, "an attempt succeeded")
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "delivered",
                    extra=logs.fields(
                        message_id=env.id,
                        destination=self.destination.name,
                        key=claim.key,
                        attempt=attempts + 1,
                        outcome="ok",
                        duration_ms=round(seconds * 1000, 1),
                    ),
                )
            head = acked.next_head
            attempts = 0
        if head is not None:
            # Stopping while the key is still ours (an ack that raced stop()
            # kept it, or the claim came back after stop began): hand it back
            # untried instead of leaving it leased until the lease runs out.
            with contextlib.suppress(RedisError):
                await self.queue.release(claim)

    async def _timed(self, delivery: Delivery) -> None:
        async with asyncio.timeout(self.settings.timeout):
            await self.sink.deliver(delivery)

    async def _attempt(self, claim: Claim, delivery: Delivery) -> None:
        """Run one attempt while renewing the lease; a lost lease aborts it."""
        interval = self.settings.lease / 3
        if self.settings.timeout <= interval:
            # The attempt times out before the lease needs renewing (the
            # default: timeout 10s, lease 30s): no renewal task per message.
            try:
                await self._timed(delivery)
            except TimeoutError:
                raise DeliveryFailed(f"timed out after {self.settings.timeout:g}s") from None
            return
        # The sink's own coroutine is the task (no wait_for between): when
        # it has ended, nothing of the attempt runs on.
        attempt = asyncio.create_task(self._timed(delivery))
        try:
            while True:
                done, _ = await asyncio.wait({attempt}, timeout=interval)
                if done:
                    try:
                        attempt.result()
                    except TimeoutError:
                        raise DeliveryFailed(
                            f"timed out after {self.settings.timeout:g}s"
                        ) from None
                    return
                try:
                    renewed = await self.queue.renew(claim, self.lease_ms)
                except RedisError:
                    continue  # the lease may still hold; try again next interval
                if not renewed:
                    raise LeaseLost()
        finally:
            if not attempt.done():
                # Its cleanup (a plugin's abort) ends before the claim is
                # handed back or the sink closed, however often a stopping
                # process cancels this task meanwhile (router.ops.cancelling).
                attempt.cancel()
                await outlast(attempt)
            if not attempt.cancelled():
                # It ended (e.g. timed out) while the lease was being lost:
                # its outcome no longer counts, and retrieving it keeps
                # asyncio from logging "Task exception was never retrieved".
                attempt.exception()

    async def _failed(
        self,
        claim: Claim,
        env: envelope.Envelope,
        attempts: int,
        error: str,
        started: float,
        failure: DeliveryFailed | None = None,
    ) -> None:
        """Attempt number `attempts` (begun at perf_counter `started`) failed
        with `error` (`failure`: what the sink raised, when it said more: a
        Retry-After, whether it holds the destination, a permanent failure):
        decide and record."""
        seconds = time.perf_counter() - started
        retry_after = failure.retry_after if failure else None
        decision = retry.decide(
            self.settings.retry,
            attempts,
            _age(env),
            retry_after,
            permanent=failure is not None and failure.permanent,
        )
        hold = retry_after if failure is not None and failure.hold_destination else None
        await self._record_failure(
            claim,
            attempts,
            decision,
            error,
            env.id,
            hold,
            seconds=seconds,
            blame=(
                Blame.PERMANENT
                if decision.rule == "permanent"
                else Blame.MESSAGE
                if self._blames_message(failure)
                else Blame.DESTINATION
            ),
        )

    def _blames_message(self, failure: DeliveryFailed | None) -> bool:
        """Whether a failure is the message's own, not the destination's (it
        never counts toward the circuit breaker): the plugin's word, else
        the answer's status against `circuit_breaker.ignore_statuses`."""
        if failure is None:
            return False
        if failure.message_fault is not None:
            return failure.message_fault
        return failure.status is not None and matches(self._ignored, failure.status)

    async def _record_failure(
        self,
        claim: Claim,
        attempts: int,
        decision: retry.Decision,
        error: str,
        message_id: str,
        hold: float | None,
        counted: bool = True,
        seconds: float | None = None,
        blame: Blame = Blame.DESTINATION,
    ) -> None:
        """Record the decision in Redis (fail.lua counts the attempt, and
        keeps the destination's health), then log it once. `hold`: the
        seconds the destination asked all deliveries to wait; `seconds`: how
        long the attempt that failed took (None: the worker gave up before
        trying again: counted=False); `blame`: whose fault it was, for the
        destination's health."""
        # Every plugin's reason (and an exception's text) is stored, logged
        # and shown: the destination's secrets go before any of it.
        error = self.destination.redactor(error)
        recorded: Failed | Literal[False] = await self._settle(
            lambda: self.queue.fail(
                claim,
                int(decision.delay * 1000),
                error[:1000],
                decision.outcome,
                counted,
                self._breaker,
                hold,
                blame=blame,
            )
        )
        outcome = "failed"  # also when the lease was lost: nothing else was recorded
        if decision.gives_up and recorded is not False and not recorded.lease_lost:
            outcome = "blocked" if decision.outcome is Outcome.BLOCK else "dead"
        if seconds is not None or outcome != "failed":  # a give-up is counted as such
            self._metrics.attempted(outcome, seconds)
        if recorded is False:
            return  # not recorded (Redis away past the lease): logged by _settle
        name, key = self.destination.name, claim.key
        # The attempt's fields on its one line (LOG_FORMAT=json makes them keys).
        extra = logs.fields(
            message_id=message_id,
            destination=name,
            key=key,
            attempt=attempts,
            outcome=outcome,
            duration_ms=round(seconds * 1000, 1) if seconds is not None else None,
            error=error,
        )
        if recorded.event == "up":
            self._log_up(recorded.resumed or 0, "an answer blamed its message, so it answers")
        elif recorded.event:
            self._log_health(recorded.event, error, hold)
        if recorded.lease_lost:
            # Logged once, instead of a "retrying" line for an attempt whose
            # outcome no longer counts (e.g. a process paused past its lease).
            log.warning(
                "destination %s key %s: attempt %d failed (%s) after the lease was lost: "
                "another worker owns the key now (or a retried write had already landed)",
                name,
                key,
                attempts,
                error,
                extra=extra,
            )
        elif decision.gives_up:
            log.error(
                "destination %s key %s: %s after %d attempts (%s): %s",
                name,
                key,
                "blocked (see `router dead unblock`)"
                if decision.outcome is Outcome.BLOCK
                else "dead-lettered",
                attempts,
                decision.reason,
                error,
                extra=extra,
            )
        else:
            log.warning(
                "destination %s key %s: attempt %d failed (%s); %s",
                name,
                key,
                attempts,
                error,
                decision.reason,
                extra=extra,
            )

    def _log_up(self, resumed: int, why: str) -> None:
        """The one line of a destination that was down and is up again."""
        log.warning(
            "destination %s is up again (%s): %d waiting conversations resume now",
            self.destination.name,
            why,
            resumed,
            extra=logs.fields(destination=self.destination.name, health="up"),
        )

    def _log_health(self, event: str, error: str, hold: float | None) -> None:
        """One line per transition of the destination's health: fail.lua
        reports it to the one attempt that caused it."""
        name, cb = self.destination.name, self.settings.circuit_breaker
        extra = logs.fields(destination=name, health=event, error=error)
        if event == "down":
            log.error(
                "destination %s is down: attempts failed on %d conversations within %gs "
                "with no success (last: %s); only one probe goes out every %gs (up to "
                "%gs) until one succeeds",
                name,
                cb.failing_keys,
                cb.window,
                error,
                cb.probe_interval,
                cb.probe_interval_max,
                extra=extra,
            )
        else:
            log.warning(
                "destination %s asked to wait (Retry-After %gs): nothing is attempted for %gs",
                name,
                hold or 0,
                self._breaker.args(hold)[-1] / 1000,
                extra=extra,
            )

    async def _settle(self, op: Callable[[], Awaitable[T]]) -> T | Literal[False]:
        """Record an outcome in Redis, retrying through a short outage. If
        Redis stays away past the lease, give up: the lease expires and the
        message is attempted again (at-least-once, never lost)."""
        deadline = time.monotonic() + self.settings.lease
        delay = 0.05
        while True:
            try:
                return await op()
            except RedisError as exc:
                if time.monotonic() + delay > deadline:
                    log.error(
                        "destination %s: could not record an outcome in Redis (%s); the "
                        "message will be attempted again",
                        self.destination.name,
                        exc,
                    )
                    return False
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loop_exited.wait(), MAX_IDLE + SOCKET_TIMEOUT + 1)
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


def breaker_of(destination: Destination) -> Breaker:
    """The destination's circuit breaker settings as the scripts take them."""
    if not destination.circuit_breaker:
        return BREAKER_OFF
    cb = destination.settings.circuit_breaker
    return Breaker(
        failing_keys=cb.failing_keys,
        window_ms=int(cb.window * 1000),
        probe_ms=max(1, int(cb.probe_interval * 1000)),
        probe_max_ms=max(1, int(cb.probe_interval_max * 1000)),
        max_hold_ms=int(cb.max_hold * 1000),
    )


class Workers:
    """The delivery workers of a set of destinations, with their sinks."""

    def __init__(
        self,
        redis: Redis,
        destinations: Iterable[Destination],
        transport: DeliveryTransport = "aiohttp",
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
    transport: DeliveryTransport = "aiohttp",
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
