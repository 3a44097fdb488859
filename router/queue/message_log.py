"""The message log: each message's story at each destination (every attempt,
its outcome, the HTTP status and the start of the destination's answer),
what `router trace`, `router messages`, the admin API and the dashboard
show (docs/message-log.md).

Written by the scripts that move a message, in the same call and so in the
same round trip: its record when it is stored (store_message), an entry
with each outcome (ack.lua, fail.lua; claim.lua for a lease that ran out),
its state again on a replay. The worker builds each entry's JSON; the
scripts only append it. Layout (router.queue.keys `log` and `logged`) and
retention (_lib.lua's log_trim): per destination shard, at most its share
of `message_log.max_messages` stories, none older than `max_age`, the
oldest dropped first as new messages arrive.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from router.config import MessageLogSettings
from router.ops.redaction import Redactor
from router.queue.keys import DestinationKeys, shard_share

# What an entry's `outcome` is: the destination took it (ok); the attempt
# failed and will be retried (failed); the message was given up (dead) or
# its conversation stopped (blocked) by the retry policy; an operator
# skipped it (skipped).
OUTCOMES = ("ok", "failed", "dead", "blocked", "skipped")
# A message's `state` at a destination.
STATES = ("waiting", "delivered", "dead", "blocked")

# Stories one search reads at most per shard, newest first, looking for
# matches: bounds what one request costs Redis whatever the filter.
SEARCH_SCAN = 20_000
_SEARCH_PAGE = 500


@cache
def policy(settings: MessageLogSettings | None, shard: int, shards: int) -> str:
    """A shard's log policy as the scripts take it: '' (off), or its share of
    `max_messages` and `max_age` in ms (_lib.lua's log_trim)."""
    if settings is None:
        return ""
    share = max(1, shard_share(settings.max_messages, shard, shards))
    return f"{share} {int(settings.max_age * 1000)}"


def entry(
    attempt: int,
    outcome: str,
    *,
    started_at_ms: int | None = None,
    duration_ms: float | None = None,
    status: object = None,
    error: str | None = None,
    response: object = None,
    response_bytes: int = 0,
    redactor: Redactor | None = None,
) -> bytes:
    """One entry of a story, as JSON: the start of `response` (its first
    `response_bytes` bytes as text, the destination's secrets starred).
    `status` and `response` come from a plugin: a status that is no int,
    or a response that is neither bytes nor text, is left out."""
    text = None
    if isinstance(response, str):
        response = response.encode()
    if response_bytes > 0 and isinstance(response, _BINARY) and response:
        # Secrets starred before the cut, so none straddles it half shown.
        text = (response if type(response) is bytes else bytes(response)).decode("utf-8", "replace")
        text = redactor.cut(text, response_bytes) if redactor else text[:response_bytes]
        if not text.isascii():  # (ASCII: as many bytes as characters, cut already)
            raw = text.encode()
            if len(raw) > response_bytes:  # characters beyond ASCII take more bytes
                text = raw[:response_bytes].decode("utf-8", "ignore")
    return _encode(
        Attempt(
            attempt,
            outcome,
            started_at_ms,
            None if duration_ms is None else round(duration_ms, 1),
            status if isinstance(status, int) and not isinstance(status, bool) else None,
            error,
            text,
        )
    )


class Attempt(msgspec.Struct, omit_defaults=True):
    """One entry of a message's story at a destination."""

    attempt: int
    outcome: str  # one of OUTCOMES
    started_at: int | None = None  # ms since the epoch (none: nobody finished it)
    duration_ms: float | None = None
    status: int | None = None  # the HTTP status, where there was one
    error: str | None = None
    response: str | None = None  # the start of the destination's answer


class Record(msgspec.Struct):
    """A message's record at a destination shard (the `<id>` field of `log`)."""

    key: str
    received_at: int
    state: str
    n: int = 0  # entries
    failed: int = 0  # entries that were failures
    seq: int | None = None


class Delivery(msgspec.Struct, omit_defaults=True):
    """A message's story at one destination: `GET /admin/messages/{id}`'s
    `deliveries` values."""

    state: str  # one of STATES
    key: str
    received_at: int
    attempts: list[Attempt]
    seq: int | None = None


class Found(msgspec.Struct):
    """One message a search found (newest first)."""

    id: str
    key: str
    state: str
    received_at: int
    attempts: int
    seq: int | None = None


_encode = msgspec.json.Encoder().encode
_BINARY = (bytes, bytearray, memoryview)
_record = msgspec.json.Decoder(Record)
_attempt = msgspec.json.Decoder(Attempt)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def story(redis: Any, keys: DestinationKeys, message_id: str) -> Delivery | None:
    """The message's story at this destination shard; None when it has none
    (never stored here, trimmed, or stored while the log was off)."""
    raw = await redis.hget(keys.log, message_id)
    if raw is None:
        return None
    record = _record.decode(raw)
    fields = [f"{message_id}:{i}" for i in range(1, record.n + 1)]
    items = await redis.hmget(keys.log, fields) if fields else []
    attempts = [_attempt.decode(item) for item in items if item is not None]
    state = record.state
    if state == "blocked" and not await redis.hexists(keys.blocked, record.key):
        state = "waiting"  # unblocked since; its next attempt says more
    return Delivery(state, record.key, record.received_at, attempts, record.seq)


async def search(
    redis: Any,
    keys: DestinationKeys,
    key: str | None,
    failed: bool,
    since_ms: int | None,
    limit: int,
) -> list[Found]:
    """This shard's stories that match, newest first: of ordering key `key`
    (None: any), with at least one failed attempt (`failed`), received at or
    after `since_ms`; at most `limit`, from at most SEARCH_SCAN read."""
    found: list[Found] = []
    low = "-inf" if since_ms is None else since_ms
    # Paged by score, newest first: a message stored meanwhile (newer than
    # the first page) never shifts a page. Ids of one millisecond may span
    # two pages: each id is taken once.
    high: float | str = "+inf"
    seen: set[bytes] = set()
    read = 0
    while len(found) < limit and read < SEARCH_SCAN:
        page = await redis.zrevrangebyscore(
            keys.logged, high, low, start=0, num=_SEARCH_PAGE, withscores=True
        )
        fresh = [(i, score) for i, score in page if i not in seen]
        if not fresh:
            if len(page) < _SEARCH_PAGE:
                break
            high = f"({page[-1][1]:.0f}"  # a full page of one millisecond: step past it
            continue
        read += len(fresh)
        high = fresh[-1][1]
        ids = [i for i, _ in fresh]
        seen.update(ids)
        records = await redis.hmget(keys.log, ids)
        for message_id, raw in zip(ids, records, strict=True):
            if raw is None:
                continue
            record = _record.decode(raw)
            if key is not None and record.key != key:
                continue
            if failed and record.failed == 0:
                continue
            state = record.state
            if state == "blocked" and not await redis.hexists(keys.blocked, record.key):
                state = "waiting"  # unblocked since, as story() says
            found.append(
                Found(
                    _text(message_id),
                    record.key,
                    state,
                    record.received_at,
                    record.n,
                    record.seq,
                )
            )
            if len(found) == limit:
                break
    return found
