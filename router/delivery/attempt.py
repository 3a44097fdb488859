"""One attempt at a time of a claimed key: its head posted to the sink while
the lease is renewed, then the outcome recorded in Redis (ack.lua takes the
next message of the key while the claim is kept; fail.lua counts a failure,
decides the backoff with router.delivery.retry's decision, and keeps the
destination's health), counted in the metrics and logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from redis.exceptions import RedisError

from router.config import Destination
from router.delivery import retry
from router.delivery.deadlines import Deadlines
from router.delivery.health import DestinationHealth
from router.ops import logs, tracing
from router.ops.cancelling import outlast
from router.ops.metrics import DeliveryMetrics
from router.plugin.sinks import Delivery, DeliveryFailed, DeliveryResponse, Sink
from router.queue import envelope, message_log
from router.queue.lanes import Blame, Claim, DestinationQueue, Failed, Group, Outcome

if TYPE_CHECKING:
    from router.ops.otel_spans import AttemptSpan

# The delivery path's logger (operators filter on it).
log = logging.getLogger("router.worker")

T = TypeVar("T")


class LeaseLost(Exception):
    pass


def _age(env: envelope.Envelope) -> float:
    """Seconds since the message arrived."""
    return time.time() - env.ts / 1000


def _coalesced(first: Delivery, members: list[tuple[int | None, envelope.Envelope]]) -> Delivery:
    """A coalesced request: `first` (its head's Delivery) carrying every
    message, its body the JSON array of their bodies, in order."""
    parts = tuple(
        dataclasses.replace(
            first,
            id=env.id,
            body=bytes(env.body),
            received_at_ms=env.ts,
            traceparent=env.tp,
            tracestate=env.tst,
            sequence=sequence,
        )
        for sequence, env in members
    )
    body = b"[" + b",".join(part.body for part in parts) + b"]"
    return dataclasses.replace(first, body=body, coalesced=parts)


class Attempts:
    """The attempts of one delivery loop (a destination's shard): each claimed
    key's messages delivered in order, one attempt at a time, and every
    outcome recorded."""

    def __init__(
        self,
        destination: Destination,
        queue: DestinationQueue,
        sink: Sink,
        lease_ms: int,
        health: DestinationHealth,
        stopping: Callable[[], bool],
    ) -> None:
        self.destination = destination
        self.settings = destination.settings
        self.queue = queue
        self.sink = sink
        self.lease_ms = lease_ms
        self._health = health
        self._stopping = stopping  # whether the loop is stopping
        self._metrics = DeliveryMetrics(destination.name)
        self._log = queue.log  # the message log's settings; None: off
        # Every attempt's timeout, on one timer (router.delivery.deadlines).
        self._deadlines = Deadlines(self.settings.timeout)

    async def deliver(self, claim: Claim) -> None:
        """Deliver the head of a claimed key, and its successors while the
        claim is kept (see ack.lua)."""
        head: bytes | None = claim.head
        attempts = claim.attempts
        coalesce = self.settings.coalesce
        while head is not None and not self._stopping():
            group: Group | None = None
            if coalesce is None:
                # The entry's sequence number (none: stored before numbers existed).
                sequence, env = envelope.decode_entry(head)
            else:
                gathered = await self._gather(claim)
                if gathered is None:
                    return  # waiting for more messages, or not ours any more
                group, members = gathered
                head = group.entries[0]
                sequence, env = members[0]
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
                        claim, attempts, decision, error, env.id, None, counted=False, group=group
                    )
                    return
            started_at_ms = int(time.time() * 1000)
            tracer = tracing.active
            span = None
            if tracer is not None:  # (tracing off: this check is all it costs)
                span = tracer.attempt(
                    self.destination.name,
                    self.settings.plugin,
                    claim.key,
                    attempts + 1,
                    env.id,
                    sequence,
                    env.tp,
                    env.tst,
                    [(m.id, m.tp, m.tst) for _, m in members[1:]] if group is not None else (),
                )
            delivery = Delivery(
                id=env.id,
                body=bytes(env.body),
                key=claim.key,
                attempt=attempts + 1,
                received_at_ms=env.ts,
                destination=self.destination.name,
                # With tracing on, the attempt's span: the destination's
                # trace continues under it.
                traceparent=env.tp if span is None else span.traceparent,
                tracestate=env.tst,
                sequence=sequence,
            )
            if group is not None:
                delivery = _coalesced(delivery, members)
            started = time.perf_counter()
            try:
                answer = await self._attempt(claim, delivery)
            except LeaseLost:
                if span is not None:
                    span.end("lease_lost", error="the lease was lost during the attempt")
                log.warning(
                    "destination %s key %s: lease lost during delivery of %s; another "
                    "worker owns the key now",
                    self.destination.name,
                    claim.key,
                    env.id,
                )
                return
            except DeliveryFailed as exc:
                await self._failed(
                    claim, env, attempts + 1, exc.reason, started, started_at_ms, exc, group, span
                )
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
                await self._failed(
                    claim, env, attempts + 1, error, started, started_at_ms, group=group, span=span
                )
                return
            except asyncio.CancelledError:
                # The process stops mid-attempt: the message is handed back.
                if span is not None:
                    span.end("cancelled", error="the process stopped during the attempt")
                raise
            seconds = time.perf_counter() - started
            # The destination took it: an ok attempt, whatever the ack meets.
            self._metrics.attempted("ok", seconds)
            if span is not None:
                span.end(
                    "ok", seconds, answer.status if isinstance(answer, DeliveryResponse) else None
                )
            # (Whatever else a plugin returns is no answer to log.)
            said = answer if isinstance(answer, DeliveryResponse) else None
            logged = self._logged(
                attempts + 1,
                "ok",
                started_at_ms,
                seconds,
                said.status if said else None,
                said.body if said else None,
            )
            acked = await self._settle(
                functools.partial(
                    self.queue.ack,
                    claim,
                    head,
                    self.lease_ms,
                    keep=not self._stopping(),
                    message_id=env.id,
                    logged=logged,
                    group=group,
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
            if group is None:
                self._metrics.acknowledged(env.ts)
            else:
                for _, member in members:
                    self._metrics.acknowledged(member.ts)
            if acked.resumed is not None:
                self._health.log_up(acked.resumed, "an attempt succeeded")
            if log.isEnabledFor(logging.INFO):
                # The line per delivery: its text made with the others of
                # the next 0.1 s when only the router's own handler would
                # see a record (router.ops.logs).
                logs.delivered(
                    log,
                    env.id,
                    self.destination.name,
                    claim.key,
                    attempts + 1,
                    round(seconds * 1000, 1),
                )
            head = acked.next_head
            attempts = 0
        if head is not None:
            # Stopping while the key is still ours (an ack that raced stop()
            # kept it, or the claim came back after stop began): hand it back
            # untried instead of leaving it leased until the lease runs out.
            with contextlib.suppress(RedisError):
                await self.queue.release(claim)

    async def _gather(
        self, claim: Claim
    ) -> tuple[Group, list[tuple[int | None, envelope.Envelope]]] | None:
        """Coalescing: the messages of the claim's next request, each entry's
        sequence number and envelope (gather.lua); None when the key went
        back to wait for more, or the claim was lost."""
        coalesce = self.settings.coalesce
        assert coalesce is not None
        gathered = await self._settle(
            lambda: self.queue.gather(claim, int(coalesce.window * 1000), coalesce.max_messages)
        )
        if gathered is False or isinstance(gathered, int):
            return None  # waits in `delayed` (gathered: its due time), or Redis away
        if not gathered:
            if gathered is None:
                log.warning(
                    "destination %s key %s: the lease was lost before delivery; another "
                    "worker owns the key now",
                    self.destination.name,
                    claim.key,
                )
            return None
        members = [envelope.decode_entry(entry) for entry in gathered]
        return Group(gathered, [env.id for _, env in members]), members

    def _logged(
        self,
        attempt: int,
        outcome: str,
        started_at_ms: int | None,
        seconds: float | None,
        status: object,
        response: object,
        error: str | None = None,
    ) -> bytes:
        """The attempt's message log entry (router.queue.message_log.entry),
        as ack.lua and fail.lua take it; b"" while the log is off."""
        if self._log is None:
            return b""
        return message_log.entry(
            attempt,
            outcome,
            started_at_ms=started_at_ms,
            duration_ms=None if seconds is None else seconds * 1000,
            status=status,
            error=error,
            response=response,
            response_bytes=self._log.response_bytes,
            redactor=self.destination.redactor,
        )

    async def _timed(self, delivery: Delivery) -> DeliveryResponse | None:
        """The sink's answer; TimeoutError past the destination's timeout."""
        deadline = self._deadlines.start()
        try:
            answer = await self.sink.deliver(delivery)
        except asyncio.CancelledError:
            if deadline.end(cancelled=True):
                raise TimeoutError from None
            raise
        except BaseException:
            deadline.end(cancelled=False)
            raise
        deadline.end(cancelled=False)
        return answer

    async def _attempt(self, claim: Claim, delivery: Delivery) -> DeliveryResponse | None:
        """Run one attempt while renewing the lease; a lost lease aborts it.
        What the destination answered, when the sink says."""
        interval = self.settings.lease / 3
        if self.settings.timeout <= interval:
            # The attempt times out before the lease needs renewing (the
            # default: timeout 10s, lease 30s): no renewal task per message.
            try:
                return await self._timed(delivery)
            except TimeoutError:
                raise DeliveryFailed(f"timed out after {self.settings.timeout:g}s") from None
        # The sink's own coroutine is the task (no wait_for between): when
        # it has ended, nothing of the attempt runs on.
        attempt = asyncio.create_task(self._timed(delivery))
        try:
            while True:
                done, _ = await asyncio.wait({attempt}, timeout=interval)
                if done:
                    try:
                        return attempt.result()
                    except TimeoutError:
                        raise DeliveryFailed(
                            f"timed out after {self.settings.timeout:g}s"
                        ) from None
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
        started_at_ms: int,
        failure: DeliveryFailed | None = None,
        group: Group | None = None,
        span: AttemptSpan | None = None,
    ) -> None:
        """Attempt number `attempts` (begun at perf_counter `started`, and
        `started_at_ms` on the clock) failed
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
            started_at_ms=started_at_ms,
            failure=failure,
            blame=(
                Blame.PERMANENT
                if decision.rule == "permanent"
                else Blame.MESSAGE
                if self._health.blames_message(failure)
                else Blame.DESTINATION
            ),
            group=group,
            span=span,
        )

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
        started_at_ms: int | None = None,
        failure: DeliveryFailed | None = None,
        group: Group | None = None,
        span: AttemptSpan | None = None,
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
        # What the log says of it: the script acts on the same decision.
        ending = "failed"
        if decision.gives_up:
            ending = "blocked" if decision.outcome is Outcome.BLOCK else "dead"
        logged = self._logged(
            attempts,
            ending,
            started_at_ms,
            seconds,
            failure.status if failure else None,
            failure.response if failure else None,
            error[:1000],
        )
        recorded: Failed | Literal[False] = await self._settle(
            lambda: self.queue.fail(
                claim,
                int(decision.delay * 1000),
                error[:1000],
                decision.outcome,
                counted,
                self._health.breaker,
                hold,
                blame=blame,
                message_id=message_id,
                logged=logged,
                group=group,
            )
        )
        outcome = "failed"  # also when the lease was lost: nothing else was recorded
        if decision.gives_up and recorded is not False and not recorded.lease_lost:
            outcome = ending
        if seconds is not None or outcome != "failed":  # a give-up is counted as such
            self._metrics.attempted(outcome, seconds)
        if span is not None:  # (`span`: the attempt that failed, with tracing on)
            span.end(outcome, seconds, failure.status if failure else None, error)
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
            self._health.log_up(
                recorded.resumed or 0, "an answer blamed its message, so it answers"
            )
        elif recorded.event:
            self._health.log_transition(recorded.event, error, hold)
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
