"""Ingest: turn a POSTed body into a stored message, or a clear refusal."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from router.config import Destination, Route, route_key
from router.config.filters import MISSING, Getter, compile_path
from router.http.auth import Authenticator
from router.http.errors import ApiError, BadRequest, StorageUnavailable, Stored, redis_cause
from router.ingest import tracecontext
from router.ingest.ratelimit import RateLimiter
from router.plugin.formats import (
    MAX_KEY_LENGTH,
    FormatRequest,
    IngestedMessage,
    IngestFormat,
    SkippedItem,
)
from router.queue import envelope
from router.queue.batching import Batcher
from router.queue.enqueue import EnqueueResult, Pending, Target, enqueue, enqueue_many
from router.queue.keys import DestinationKeys, all_shards, shard_of
from router.queue.message_log import policy
from router.queue.scripts import Scripts
from router.queue.unroutable import UnroutableStore
from router.redis.client import command_written, waiting_for_connection

GLOBAL_KEY = "*"
IDEMPOTENCY_HEADER = "idempotency-key"
WEBHOOK_ID_HEADER = "webhook-id"

_TYPE_CHECKS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "string": (str, "a string"),
    "number": ((int, float), "a number"),
    "integer": (int, "an integer"),
    "boolean": (bool, "true or false"),
    "object": (dict, "an object"),
    "array": (list, "an array"),
}


def check_shape(value: Any, max_depth: int, max_string: int | None) -> None:
    """Refuse JSON nested deeper than `max_depth` or with a string longer
    than `max_string` characters (keys included)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"JSON nested deeper than {max_depth} levels")
        values = item.values() if isinstance(item, dict) else item
        if max_string is not None:
            texts = [v for v in values if isinstance(v, str)]
            if isinstance(item, dict):
                texts += list(item)
            if any(len(t) > max_string for t in texts):
                raise BadRequest(f"a string in the body is longer than {max_string} characters")
        stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))


def _key_text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{what} must be a non-empty string")
    text = str(value)
    if not text:
        raise BadRequest(f"{what} must not be empty")
    if len(text) > MAX_KEY_LENGTH:
        raise BadRequest(f"{what} is longer than {MAX_KEY_LENGTH} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid unicode (lone surrogate)") from None
    return text


class NoMatch(ApiError):
    """A message no destination's `when:` matches, on a route with
    `on_no_match: reject`: 422, nothing stored."""

    def __init__(self, which: str = "the message") -> None:
        super().__init__(
            422,
            f"{which} matches no destination of this route (no `when:` filter matched; "
            "on_no_match: reject): nothing stored",
        )


@dataclass(frozen=True, slots=True)
class Routed:
    """What a route with `when:` filters did with one message: stored for
    the destinations it matched, or (result None) for none."""

    result: EnqueueResult | None
    destinations: tuple[str, ...]

    def answer(self) -> dict[str, Any]:
        """The message's part of a 200 body."""
        r = self.result
        return {
            "id": None if r is None else r.id,
            "duplicate": False if r is None else r.duplicate,
            "destinations": list(self.destinations),
        }


@dataclass(frozen=True)
class IngestRoute:
    """A route prepared for the hot path."""

    route: Route
    keys: tuple[list[DestinationKeys], ...]  # per destination: its shards
    auth: Authenticator | None
    # An ingest format's route: every destination its messages may go to
    # (the route's, then the format's), by name, with its shards.
    named: dict[str, tuple[Destination, list[DestinationKeys]]] = field(default_factory=dict)
    # Per destination: its ordering key's reader (router.config.filters), or None
    # for one global order.
    ordering: tuple[Getter | None, ...] = ()

    @classmethod
    def of(cls, route: Route) -> IngestRoute:
        auth = Authenticator(route.settings.auth) if route.settings.auth else None
        shards = tuple(all_shards(d.name, d.settings.shards) for d in route.destinations)
        named = {
            d.name: (d, all_shards(d.name, d.settings.shards))
            for d in (*route.destinations, *route.format_destinations)
        }
        ordering = tuple(
            None if d.ordering_key is None else compile_path(d.ordering_key)
            for d in route.destinations
        )
        return cls(route, shards, auth, named if route.format is not None else {}, ordering)

    def matching(self, message: Any) -> list[int]:
        """The places (in `destinations:`) of the destinations whose `when:`
        the decoded message matches (a route with filters only)."""
        return [i for i, f in enumerate(self.route.filters) if f is None or f(message)]

    @property
    def format(self) -> IngestFormat | None:
        return self.route.format

    def sender(self, message: dict[str, Any], client: str) -> str:
        """Who counts against the rate limit: a body field, or the client address."""
        limit = self.route.settings.rate_limit
        if limit is None or limit.per == "client":
            return client
        value = message.get(limit.per)
        return str(value) if isinstance(value, str | int) and value != "" else client

    def parse(self, body: bytes) -> dict[str, Any]:
        settings = self.route.settings
        message = decode_object(
            body, settings.max_body, settings.max_depth, settings.max_string_length
        )
        for name, kind in settings.fields.items():
            if name not in message:
                raise BadRequest(f"missing field `{name}`")
            if kind == "any":
                continue
            typ, label = _TYPE_CHECKS[kind]
            value = message[name]
            if not isinstance(value, typ) or (isinstance(value, bool) and kind != "boolean"):
                raise BadRequest(f"field `{name}` must be {label}, got {_json_type(value)}")
        return message

    def targets(self, message: dict[str, Any], chosen: Sequence[int] | None = None) -> list[Target]:
        """Where the message goes: every destination of the route, or those
        at the places `chosen` (the ones its filters matched), each in the
        lane of its ordering key's value."""
        out = []
        for i in range(len(self.keys)) if chosen is None else chosen:
            dest, shards, get = self.route.destinations[i], self.keys[i], self.ordering[i]
            if get is None:
                key = GLOBAL_KEY
            else:
                field = dest.ordering_key
                value = get(message)
                if value is MISSING:
                    hint = ""
                    if field in message:  # a top-level key with a dot in its name
                        escaped = field.replace(".", "\\.")
                        hint = (
                            "; a dot in ordering_key reads a nested field: "
                            f"`{escaped}` names this one"
                        )
                    raise BadRequest(f"missing field `{field}` (ordering key of {dest.name}){hint}")
                key = _key_text(value, f"field `{field}`")
            shard = shard_of(key, len(shards))
            out.append(Target(shards[shard], key, policy(dest.message_log, shard, len(shards))))
        return out

    def _id_header(self) -> tuple[str, str]:
        """The header carrying a message's dedup id on this route: its
        lower-case name and its name as written. On a standard-webhooks
        route the signed `webhook-id` (the spec's idempotency key: a
        provider's redelivery is the same message)."""
        if self.auth is not None and self.auth.type == "standard-webhooks":
            return WEBHOOK_ID_HEADER, "webhook-id"
        return IDEMPOTENCY_HEADER, "Idempotency-Key"

    def dedup_id(self, message: dict[str, Any], headers: Mapping[str, str]) -> str | None:
        """The id that makes a repeat of this message a duplicate, first
        found of: the route's `id_field` in the body (configured on purpose,
        so it wins), the route's id header. None: no dedup. Ids share the
        ordering keys' limits."""
        field = self.route.settings.id_field
        if field is not None and message.get(field) is not None:
            return _key_text(message[field], f"field `{field}`")
        header, written = self._id_header()
        value = headers.get(header)
        return None if value is None else _key_text(value.strip(), f"header {written}")

    def unavailable(self, exc: BaseException, deadline: float) -> StorageUnavailable:
        """The 503 for a Redis failure while storing, saying whether the
        message is certainly not stored."""
        stored: Stored
        if isinstance(exc, ResponseError):
            # Redis answered with an error: it refused the script before it
            # wrote anything (out of memory, read-only replica, ...); an OOM
            # refusal is only ever at a script's first write.
            stored = "no"
        else:
            stored = "unknown" if command_written.get() else "no"
        field = self.route.settings.id_field
        same = f"`{field}` field" if field is not None else f"{self._id_header()[1]} header"
        if self.route.format is not None:
            same = "message ids (send the same request again)"
        return StorageUnavailable(redis_cause(exc, deadline), stored, same)

    async def store(
        self,
        scripts: Scripts,
        body: bytes,
        headers: Mapping[str, str],
        client: str,
        limiter: RateLimiter | None = None,
        batcher: Batcher | None = None,
    ) -> EnqueueResult | Routed:
        """Authenticate, validate, rate-limit and store; each step refuses
        before anything is written. A route with `when:` filters answers
        a Routed: the destinations the message matched and was stored for."""
        if self.auth is not None:
            self.auth.check(headers, body)
        message = self.parse(body)
        chosen: list[int] | None = None
        if self.route.filters:
            chosen = self.matching(message)
            if not chosen and self.route.settings.on_no_match == "reject":
                raise NoMatch()
        targets = self.targets(message, chosen)
        dedup = self.dedup_id(message, headers)
        command_written.set(False)
        waiting_for_connection.set(0)
        if limiter is not None:
            # Last check before the write, so an invalid request does not
            # use up the sender's allowance.
            try:
                await limiter.check(self.sender(message, client))
            finally:
                # A failure up to here stored nothing, whatever the limiter sent.
                command_written.set(False)
        if chosen is not None and not chosen:
            return Routed(None, ())  # on_no_match: accept; nothing to store
        now_ms = int(time.time() * 1000)
        message_id = envelope.new_message_id(now_ms)
        traceparent, tracestate = tracecontext.for_message(headers)
        result = await enqueue(
            scripts,
            targets,
            envelope.encode(message_id, now_ms, body, traceparent, tracestate),
            message_id,
            dedup,
            math.ceil(self.route.settings.dedup_ttl),
            batcher,
            reencode=lambda stored_id: envelope.encode(
                stored_id, now_ms, body, traceparent, tracestate
            ),
        )
        if chosen is None:
            return result
        return Routed(result, tuple(self.route.destinations[i].name for i in chosen))


def decode_object(
    body: bytes, max_body: int, max_depth: int, max_string: int | None
) -> dict[str, Any]:
    """The body as a JSON object within the route's limits, or the 4xx
    naming what is wrong (shared by JSON routes and ingest formats)."""
    if len(body) > max_body:
        raise ApiError(413, f"request body too large: the limit is {max_body} bytes")
    if not body.strip():
        raise BadRequest("empty body: send a JSON object")
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(_invalid_json(body, exc)) from None
    except UnicodeDecodeError:
        raise BadRequest(_invalid_utf8(body)) from None
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {max_depth} levels") from None
    if not isinstance(message, dict):
        raise BadRequest(f"body must be a JSON object, got {_json_type(message)}")
    check_shape(message, max_depth, max_string)
    return message


def _format_names(ingest: IngestRoute, message: IngestedMessage) -> tuple[str, ...]:
    """The destinations a format's message goes to: those the format names,
    else the route's, those whose `when:` its body (as stored, decoded)
    matches on a route with filters."""
    if message.destinations is not None:
        return message.destinations
    route = ingest.route
    if not route.filters:
        return tuple(d.name for d in route.destinations)
    try:
        decoded = msgspec.json.decode(message.body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        decoded = None  # not JSON: every path is missing
    return tuple(route.destinations[i].name for i in ingest.matching(decoded))


def _format_targets(
    ingest: IngestRoute, message: IngestedMessage, names: tuple[str, ...]
) -> list[Target]:
    """Where a format's message goes: its destinations `names`, each in
    the shard of its ordering key; a destination without `ordering_key`
    keeps one global order, as on a JSON route."""
    key = _key_text(message.ordering_key, "the message's ordering key")
    out = []
    for name in names:
        found = ingest.named.get(name)
        if found is None:  # the format named a destination its options did not
            raise RuntimeError(f"ingest format sent a message to {name!r}, not one of the route's")
        dest, shards = found
        k = GLOBAL_KEY if dest.ordering_key is None else key
        shard = shard_of(k, len(shards))
        out.append(Target(shards[shard], k, policy(dest.message_log, shard, len(shards))))
    return out


async def store_format(
    ingest: IngestRoute,
    scripts: Scripts,
    body: bytes,
    headers: Mapping[str, str],
    client: str,
    limiter: RateLimiter | None = None,
    batcher: Batcher | None = None,
    batcher_many: Batcher | None = None,
    batcher_keep: Batcher | None = None,
) -> tuple[Sequence[EnqueueResult | Routed], list[SkippedItem]]:
    """A format route's request: authenticated by the format, parsed into
    its messages, and all of them stored in one atomic step (or none), with
    the items the format skipped, which are kept for the operator first
    (router.queue.unroutable: a failure to keep them is a Redis error, a 503,
    never a 200). Every refusal comes before anything is written. On a
    route with `when:` filters each message is a Routed (one its filters
    matched nowhere: stored for none), else an EnqueueResult; a message the
    format drops is not listed."""
    fmt = ingest.route.format
    assert fmt is not None
    settings = ingest.route.settings
    if len(body) > settings.max_body:
        raise ApiError(413, f"request body too large: the limit is {settings.max_body} bytes")
    if fmt.authenticate is not None:
        fmt.authenticate(ingest.route.format_options, headers, body)
    request = _format_request(ingest, body, headers)
    routed = _route_format(ingest, fmt.parse(request))
    command_written.set(False)
    waiting_for_connection.set(0)
    if limiter is not None:
        try:
            await limiter.check(client)
        finally:
            command_written.set(False)
    if request.skipped:
        # Before the messages: a redelivery after a failure here finds
        # them stored (their ids) and keeps these once (their markers).
        await UnroutableStore(scripts, route_key(ingest.route.path)).keep(
            request.skipped, math.ceil(settings.dedup_ttl), batcher_keep
        )
        # A 503's "stored" speaks of the messages: none is written yet.
        command_written.set(False)
    out = await _store_routed(ingest, scripts, routed, headers, batcher, batcher_many)
    return out, request.skipped


def _format_request(ingest: IngestRoute, body: bytes, headers: Mapping[str, str]) -> FormatRequest:
    settings = ingest.route.settings
    return FormatRequest(
        body,
        headers,
        ingest.route.format_options,
        lambda raw: decode_object(
            raw, settings.max_body, settings.max_depth, settings.max_string_length
        ),
    )


_Routing = list[tuple[IngestedMessage, tuple[str, ...], list[Target]]]


def _route_format(ingest: IngestRoute, messages: list[IngestedMessage]) -> _Routing:
    """Each message a format read, the destinations it goes to and its
    targets; a refusal (400, 422) before anything is written."""
    routed = []
    for k, m in enumerate(messages):
        names = _format_names(ingest, m)
        if not names and m.destinations is None and ingest.route.settings.on_no_match == "reject":
            raise NoMatch(m.where or f"message {k + 1} of {len(messages)} the format read")
        routed.append((m, names, _format_targets(ingest, m, names)))
    for m, _, _ in routed:
        if m.dedup_id is not None:
            _key_text(m.dedup_id, "a message id")
    return routed


async def _store_routed(
    ingest: IngestRoute,
    scripts: Scripts,
    routed: _Routing,
    headers: Mapping[str, str],
    batcher: Batcher | None,
    batcher_many: Batcher | None,
) -> Sequence[EnqueueResult | Routed]:
    """Store routed messages in one atomic step (router.queue.enqueue.enqueue_many)."""
    now_ms = int(time.time() * 1000)
    traceparent, tracestate = tracecontext.for_message(headers)
    pending = []
    for m, _, targets in routed:
        if not targets:
            continue  # dropped (e.g. WhatsApp statuses with `statuses: drop`), or unrouted
        message_id = envelope.new_message_id(now_ms)

        def reencode(stored_id: str, body: bytes = m.body) -> bytes:
            return envelope.encode(stored_id, now_ms, body, traceparent, tracestate)

        pending.append(
            Pending(
                targets,
                envelope.encode(message_id, now_ms, m.body, traceparent, tracestate),
                message_id,
                m.dedup_id,
                reencode,
            )
        )
    results: list[EnqueueResult] = []
    if pending:
        results = await enqueue_many(
            scripts, pending, math.ceil(ingest.route.settings.dedup_ttl), batcher, batcher_many
        )
    if not ingest.route.filters:
        return results
    stored = iter(results)
    out: list[EnqueueResult | Routed] = []
    for m, names, targets in routed:
        if targets:
            out.append(Routed(next(stored), names))
        elif m.destinations is None:
            out.append(Routed(None, ()))  # matched no destination (on_no_match: accept)
    return out


@dataclass(frozen=True, slots=True)
class Replayed:
    """What `router unroutable replay` did with a route's oldest items."""

    replayed: int  # parsed and stored now (or duplicates of what was): removed from the list
    still: int  # still not understood (or not replayable): left in the list


async def replay_unroutable(
    ingest: IngestRoute, scripts: Scripts, count: int | None = None
) -> Replayed:
    """Parse the oldest `count` kept items (all when None) of a format route
    again, each from the request with only it, as the running router reads
    it: one it now understands is stored for its destinations (its message
    id dedups a replay done twice) and removed from the list; one it still
    cannot route stays, as it is. Not authenticated again: the router
    checked the signature when the request came."""
    fmt = ingest.route.format
    if fmt is None:
        raise ApiError(409, f"route {ingest.route.path} has no `format:`: nothing to replay")
    store = UnroutableStore(scripts, route_key(ingest.route.path))
    total = (await store.count()).kept if count is None else count
    replayed = still = 0
    for raw, item in await store.items(0, max(0, total)):
        if item.body is None:
            still += 1
            continue
        request = _format_request(ingest, item.body.encode(), {})
        try:
            routed = _route_format(ingest, fmt.parse(request))
        except ApiError:
            still += 1  # refused as a request (400, 422): still not routable
            continue
        if request.skipped:
            still += 1
            continue
        await _store_routed(ingest, scripts, routed, {}, None, None)
        await store.remove([raw])
        replayed += 1
    return Replayed(replayed, still)


# A \uD800-\uDFFF escape that is not half of a high+low pair.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<![0-9a-fA-F]{4})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _invalid_json(body: bytes, exc: msgspec.DecodeError) -> str:
    # msgspec 0.23 reports bytes that are not UTF-8 as a DecodeError
    # ("Invalid UTF-8 encoded string"; earlier releases raised
    # UnicodeDecodeError): name the byte either way.
    if "UTF-8" in str(exc):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return _invalid_utf8(body)
    # msgspec reports a lone surrogate escape as "truncated" (at the end) or
    # as a bad pair: name the real problem and where it is.
    lone = _LONE_SURROGATE.search(body)
    if lone is not None and ("truncated" in str(exc) or "surrogate" in str(exc)):
        return (
            f"invalid JSON: lone UTF-16 surrogate escape {lone.group().decode()} at byte "
            f"{lone.start()}; escape a character outside the BMP as a \\uD8xx\\uDCxx pair"
        )
    return f"invalid JSON: {exc}"


def _invalid_utf8(body: bytes) -> str:
    # msgspec's offset is inside the string it was decoding; the body's own
    # decode gives the offset from the start of the body.
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"body is not valid UTF-8 (byte {exc.start}: {exc.reason})"
    return "body is not valid UTF-8"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for _, (typ, label) in _TYPE_CHECKS.items():
        if isinstance(value, typ):
            return label
    return type(value).__name__
