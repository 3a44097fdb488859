"""Operator actions (retry, pause, resume, skip, replay, purge, unblock, recount,
unroutable replay/purge), recorded once and logged once by the servers.

The CLI acts on Redis directly, the admin API and the dashboard inside one
server process: so that every action leaves a line in the servers' log,
whoever did it, each is recorded after it took effect by `record`, the one
function all three call, in a capped stream (keys.operator_log_key(),
`rt:operator`: XADD MAXLEN ~ 10,000, one key, so fine on a Cluster).

Every running `router serve`, `api` and `worker` process reads the stream
in one consumer group (`tail`): each entry goes to one process, which logs
it as one line (`operator: retry chatbot (all waiting keys) from cli
root@host: 42 resumed`) and acknowledges it. An entry read by a process that
died before acknowledging it is claimed by another after CLAIM_IDLE_MS, so
it is logged once whatever the crash (twice at most, when a process stops
between the line and its XACK). Actions taken while no server runs are
logged by the next one to start.

Off the hot path: no delivery or ingest step writes or reads the stream;
each process polls it once every POLL_SECONDS (a non-blocking read: it
holds no pooled connection while waiting, unlike the claim loops' BLPOP).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from router.ops import logs
from router.ops.cancelling import cancel_and_wait
from router.queue.keys import operator_log_key

log = logging.getLogger("router.operator")

MAX_ENTRIES = 10_000  # the stream's cap (approximate: XADD MAXLEN ~)
GROUP = "log"  # the one consumer group: every server process is a consumer
POLL_SECONDS = 1.0
READ_COUNT = 100
# An entry read this long ago and still not acknowledged: its process died
# between the read and the log line; another process takes it.
CLAIM_IDLE_MS = 60_000
# A consumer idle this long with nothing pending (a process that stopped or
# restarted under a new name) is dropped, so the group does not grow with
# every restart; a live one polls every second and is never that idle.
FORGET_CONSUMER_MS = 600_000
HOUSEKEEPING_SECONDS = 30.0  # how often the claim and the pruning run
LATE_SECONDS = 10  # an entry logged later than this after it was recorded says when it was
KEYS_SHOWN = 5  # ordering keys named in a line; the rest counted
KEY_SHOWN_CHARS = 64


@dataclass(frozen=True)
class OperatorAction:
    """One action as recorded: `subject` is the destination (or, for
    unroutable items, the route path), `scope` what of it was acted on
    ("all waiting keys", "oldest 5 dead letters"; empty: the whole of it),
    `result` what came of it ("42 resumed"), `source` who ("cli
    root@host", "admin 10.0.0.7", "ui 10.0.0.7")."""

    action: str
    subject: str
    result: str
    source: str
    scope: str = ""

    def line(self) -> str:
        scope = f" ({self.scope})" if self.scope else ""
        return f"operator: {self.action} {self.subject}{scope} from {self.source}: {self.result}"


def keys_scope(keys: Sequence[str] | None, every: str) -> str:
    """`every` without keys, else the first KEYS_SHOWN keys, quoted (they
    come from outside: a log line escapes their control characters)."""
    if not keys:
        return every
    shown = ", ".join(repr(k[:KEY_SHOWN_CHARS]) for k in keys[:KEYS_SHOWN])
    more = len(keys) - KEYS_SHOWN
    word = "key" if len(keys) == 1 else "keys"
    return f"{word} {shown}" + (f" and {more} more" if more > 0 else "")


def count_scope(count: int | None, what: str) -> str:
    """ "all dead letters" / "oldest 5 dead letters"."""
    return f"all {what}" if count is None else f"oldest {count} {what}"


def cli_source() -> str:
    """`cli user@host` for an action taken by the `router` command."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no passwd entry for the uid (containers)
        user = str(os.getuid())
    return f"cli {user}@{socket.gethostname()}"


def client_source(kind: str, client_host: str | None) -> str:
    """`admin 10.0.0.7` / `ui 10.0.0.7`: the HTTP client's address."""
    return f"{kind} {client_host or 'unknown'}"


async def record_request(
    redis: Redis,
    kind: str,
    client_host: str | None,
    action: str,
    subject: str,
    result: str,
    scope: str = "",
) -> bool:
    """Record an action taken over HTTP (`kind`: admin, ui) by the client
    at `client_host`."""
    source = client_source(kind, client_host)
    return await record(redis, OperatorAction(action, subject, result, source, scope))


async def record(redis: Redis, action: OperatorAction) -> bool:
    """Add `action` to the stream (after it took effect); False, with a
    warning, when Redis refused: the action is done all the same, and this
    process logs it itself so that it is not lost from the log."""
    entry = {
        "action": action.action,
        "subject": action.subject,
        "scope": action.scope,
        "result": action.result,
        "source": action.source,
        "at": str(int(time.time() * 1000)),
    }
    try:
        await redis.xadd(
            operator_log_key(),
            entry,  # type: ignore[arg-type]
            maxlen=MAX_ENTRIES,
            approximate=True,
        )
    except (RedisError, OSError) as exc:
        log.warning("%s (not recorded in %s: %s)", action.line(), operator_log_key(), exc)
        return False
    return True


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def log_entry(fields: dict[Any, Any], now: float | None = None) -> None:
    """One recorded action as one log line."""
    got = {_text(k): _text(v) for k, v in fields.items()}
    action = OperatorAction(
        action=got.get("action", "?"),
        subject=got.get("subject", "?"),
        scope=got.get("scope", ""),
        result=got.get("result", "?"),
        source=got.get("source", "?"),
    )
    message = action.line()
    at_text = got.get("at", "")
    recorded = int(at_text) / 1000 if at_text.isdigit() else None
    if recorded is not None and (now or time.time()) - recorded > LATE_SECONDS:
        when = datetime.fromtimestamp(recorded, UTC).isoformat(timespec="seconds")
        message += f" (recorded at {when})"
    log.info(
        "%s",
        message,
        extra=logs.fields(
            action=action.action,
            destination=action.subject,
            scope=action.scope or None,
            result=action.result,
            source=action.source,
        ),
    )


class OperatorLogTail:
    """This process's part in logging the stream: one consumer of GROUP."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.stream = operator_log_key()
        self.consumer = f"{socket.gethostname()}:{os.getpid()}"
        self.logged = 0  # entries this process logged (tests, status)
        self._group_ready = False
        self._housekept_at = 0.0

    async def _ensure_group(self) -> bool:
        """Whether the group exists (made now if the stream does). No stream
        yet: no action was ever recorded, and a router that was never
        operated leaves no key behind."""
        if self._group_ready:
            return True
        try:
            # From the stream's start: actions recorded before any server
            # ever read it are logged too (the group is created once).
            await self.redis.xgroup_create(self.stream, GROUP, id="0")
        except ResponseError as exc:
            if "requires the key to exist" in str(exc):
                return False
            if "BUSYGROUP" not in str(exc):
                raise
        # Joined explicitly: Redis before 7.2 makes a consumer only when a
        # read returns entries, so a process would be missing from the group
        # (and from XINFO CONSUMERS) until it logged something.
        await self.redis.xgroup_createconsumer(self.stream, GROUP, self.consumer)
        self._group_ready = True
        return True

    async def step(self) -> int:
        """Log what is new (and what a dead consumer left); how many lines."""
        if not await self._ensure_group():
            return 0
        done = 0
        if time.monotonic() - self._housekept_at >= HOUSEKEEPING_SECONDS:
            done += await self._claim_abandoned()
            await self._forget_idle_consumers()
            self._housekept_at = time.monotonic()
        while True:
            try:
                # RESP2 (the router's clients): [[stream, [(id, fields), ...]]]
                answer: Any = await self.redis.xreadgroup(
                    GROUP, self.consumer, {self.stream: ">"}, count=READ_COUNT
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._group_ready = False  # the stream was deleted: made again next time
                return done
            entries = answer[0][1] if answer else []
            done += await self._log_and_ack(entries)
            if len(entries) < READ_COUNT:
                return done

    async def _log_and_ack(self, entries: list[Any]) -> int:
        for _, fields in entries:
            if fields:  # None: trimmed away by MAXLEN while pending
                log_entry(fields)
        if entries:
            await self.redis.xack(self.stream, GROUP, *[entry_id for entry_id, _ in entries])
        self.logged += len(entries)
        return len(entries)

    async def _claim_abandoned(self) -> int:
        done = 0
        start: Any = "0-0"
        while True:
            answer = await self.redis.xautoclaim(
                self.stream, GROUP, self.consumer, CLAIM_IDLE_MS, start_id=start, count=READ_COUNT
            )
            start, entries = answer[0], answer[1]
            done += await self._log_and_ack(entries)
            if _text(start) == "0-0":
                return done

    async def _forget_idle_consumers(self) -> None:
        for consumer in await self.redis.xinfo_consumers(self.stream, GROUP):
            name = _text(consumer.get("name"))
            idle = int(consumer.get("idle") or 0)
            if name != self.consumer and not consumer.get("pending") and idle >= FORGET_CONSUMER_MS:
                await self.redis.xgroup_delconsumer(self.stream, GROUP, name)

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.step()
                failing = False
            except ResponseError as exc:
                # Refused (an ACL without stream commands, the key taken by
                # something else): said once, until it works again.
                if not failing:
                    log.warning("operator actions not read from Redis (%s); trying again", exc)
                failing = True
            except (RedisError, OSError) as exc:
                # Redis away: the process's own outage lines say so.
                log.debug("operator actions not read from Redis: %s", exc)
            except Exception:
                log.exception("reading operator actions failed; trying again")
            await asyncio.sleep(POLL_SECONDS)


@contextlib.asynccontextmanager
async def tailing(redis: Redis) -> AsyncIterator[OperatorLogTail]:
    """Log recorded operator actions while the block runs."""
    tail = OperatorLogTail(redis)
    task = asyncio.create_task(tail.run(), name="operator-log")
    try:
        yield tail
    finally:
        await cancel_and_wait(task)
