"""Admin endpoints: queue stats, dead letters, orphaned destinations' queues
and unroutable items.

They read and change queues, so they exist only when ROUTER_ADMIN_TOKEN is
set, and every call must carry `Authorization: Bearer <token>`: one guard
on the controller checks it before any handler runs (or its parameters are
read). The answers are the structs of router/web/admin_types.py, from which
Litestar documents them; router/web/openapi/admin.py adds the errors and the bearer
auth (`operation_class=doc(...)`, naming each handler's own errors).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import msgspec
from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath, FromQuery

from router.config import route_key
from router.config.durations import since_ms
from router.http.auth import BearerToken, client_of
from router.http.errors import ApiError, BadRequest
from router.http.paging import batch_of, count_of, limit_of, start_of
from router.ingest.route import IngestRoute, replay_unroutable
from router.queue import envelope, moving, operator_log, orphans, unroutable
from router.queue.sharded_queue import ShardedQueue
from router.queue.stories import stories
from router.queue.unroutable import UnroutableStore
from router.web.admin_types import (
    BlockedKey,
    BlockedKeys,
    ConversationPaused,
    ConversationRequest,
    ConversationResumed,
    ConversationSkipped,
    DeadLetters,
    Done,
    FoundMessage,
    FoundMessages,
    KeyStateAnswer,
    MessageStory,
    OrphanMoved,
    OrphanPurged,
    Paused,
    PausedConversation,
    PausedConversations,
    Purged,
    QueueStats,
    Replayed,
    Resumed,
    Retried,
    RetryRequest,
    UnblockRequest,
    UnroutableCount,
    UnroutableItems,
    UnroutableReplayed,
)
from router.web.openapi.admin import ADMIN_SCHEME
from router.web.openapi.admin import admin_operation as doc  # each handler's errors, its body
from router.web.state import RouterState

AnyRequest = Request[Any, Any, Any]


def admin_handlers(state: RouterState) -> list[type[Controller]]:
    """What app.py mounts: the admin controller serving `state`, guarded by
    its token; nothing when ROUTER_ADMIN_TOKEN is not set."""
    token = state.settings.admin_token
    if not token:
        return []
    bearer = BearerToken(token, "ROUTER_ADMIN_TOKEN", state.wrong_tokens)

    def admin_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        """The one guard: 401 (WWW-Authenticate: Bearer) without the token,
        429 after too many wrong ones (router.http.auth.BearerToken)."""
        bearer.check(
            connection.headers.get("authorization"), client_of(connection), "admin endpoints"
        )

    class Admin(AdminController):
        _state = state
        guards = [admin_token]

    return [Admin]


class AdminController(Controller):
    """The admin endpoints, below /admin. Mounted through admin_handlers,
    which gives it the router's state and the token guard."""

    path = "/admin"
    tags = ["admin"]
    security = [{ADMIN_SCHEME: []}]
    _state: ClassVar[RouterState]  # set by admin_handlers

    # -- helpers -----------------------------------------------------------

    def _shown(self, error: str) -> str:
        """An error as the API shows errors: without the config's secrets (one
        stored before a fix, or by an older version, may hold one)."""
        return self._state.config.redactor(error)

    async def _recorded(
        self, request: AnyRequest, action: str, subject: str, result: str, scope: str = ""
    ) -> None:
        """Record an action taken through the API (router.queue.operator_log)."""
        redis, _ = self._state.require_redis()
        host = request.client and request.client.host
        await operator_log.record_request(redis, "admin", host, action, subject, result, scope)

    def _queue(self, name: str) -> ShardedQueue:
        destination = self._state.config.destinations.get(name)
        if destination is None:
            raise ApiError(404, f"no destination named {name!r}")
        redis, scripts = self._state.require_redis()
        return ShardedQueue.of(redis, scripts, destination)

    async def _any_queue(self, name: str) -> ShardedQueue:
        """A configured destination's queues, or an orphan's (removed from
        routes.yaml: its dead letters and blocked keys are still reachable)."""
        redis, scripts = self._state.require_redis()
        layout = {n: d.settings.shards for n, d in self._state.config.destinations.items()}
        found = await orphans.queues_of(redis, scripts, name, layout)
        if found is None:
            raise ApiError(404, f"no destination named {name!r}")
        return found

    def _into_queue(self, name: str, into: str) -> ShardedQueue:
        """The configured destination a move from `name` goes into."""
        if into == name:
            raise BadRequest(f"into names {name} itself")
        if into not in self._state.config.destinations:
            raise BadRequest(f"into: no destination named {into!r} in routes.yaml")
        return self._queue(into)

    async def _orphan_queue(self, name: str) -> ShardedQueue:
        if name in self._state.config.destinations:
            raise ApiError(
                409,
                f"{name} is in routes.yaml, and its workers deliver it; only a destination "
                "removed from it is moved or purged this way",
            )
        return await self._any_queue(name)

    def _unroutable_store(self, route: str) -> UnroutableStore:
        _, scripts = self._state.require_redis()
        return UnroutableStore(scripts, route_key(route))

    def _format_route(self, route: str) -> IngestRoute:
        ingest = self._state.ingest.get(route_key(route))
        if ingest is None:
            raise ApiError(404, f"no route with path {route!r} in routes.yaml")
        return ingest

    # -- destinations ----------------------------------------------------------

    @get("/destinations", operation_class=doc())
    async def destinations(self) -> dict[str, QueueStats]:
        """What every destination's queue holds: `messages` counts messages; `ready`,
        `in_flight`, `delayed` and `blocked` count ordering keys (conversations);
        destinations removed from routes.yaml that still hold messages are listed
        with `orphaned: true`."""
        out = {
            name: QueueStats.of(await self._queue(name).figures(), orphaned=False)
            for name in self._state.config.destinations
        }
        # Removed from routes.yaml while still holding messages (router.queue.orphans).
        redis, scripts = self._state.require_redis()
        for name in await orphans.orphaned_destinations(redis, out):
            shards = await orphans.stored_shards(redis, name)
            figures = await ShardedQueue(redis, scripts, name, shards).figures()
            out[name] = QueueStats.of(figures, orphaned=True)
        return out

    @post("/destinations/{name:str}/pause", status_code=200, operation_class=doc("destination"))
    async def pause(self, request: AnyRequest, name: FromPath[str]) -> Paused:
        """Pause a destination in every process: nothing new is attempted,
        attempts in flight finish, ingest goes on storing."""
        await self._queue(name).set_paused(True)
        await self._recorded(request, "pause", name, "paused")
        return Paused("ok", True)

    @post("/destinations/{name:str}/resume", status_code=200, operation_class=doc("destination"))
    async def resume(self, request: AnyRequest, name: FromPath[str]) -> Resumed:
        """Resume a paused destination: its waiting messages go out, oldest first."""
        await self._queue(name).set_paused(False)
        await self._recorded(request, "resume", name, "resumed")
        return Resumed("ok", False)

    # -- one conversation (an ordering key): its key in a JSON body, so every
    # key is reachable (`/`, `%`, spaces, any unicode) ---------------------

    @staticmethod
    async def _conversation(request: AnyRequest) -> str:
        try:
            return msgspec.json.decode(await request.body(), type=ConversationRequest).key
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f'send a JSON body {{"key": "<ordering key>"}}: {exc}') from None

    @post(
        "/destinations/{name:str}/conversations/pause",
        status_code=200,
        operation_class=doc("key_body", "destination", body=ConversationRequest),
    )
    async def pause_conversation(
        self, request: AnyRequest, name: FromPath[str]
    ) -> ConversationPaused:
        """Pause one conversation, in every process: none of its messages is
        attempted (an attempt in flight finishes), ingest goes on storing, other
        conversations go on. A key with no message yet may be paused too: what
        arrives for it waits. Kept in Redis until resumed."""
        key, changed = await self._pause_conversation(request, name, True)
        return ConversationPaused("ok", key, True, changed)

    @post(
        "/destinations/{name:str}/conversations/resume",
        status_code=200,
        operation_class=doc("key_body", "destination", body=ConversationRequest),
    )
    async def resume_conversation(
        self, request: AnyRequest, name: FromPath[str]
    ) -> ConversationResumed:
        """Resume a paused conversation: its messages go on, oldest first."""
        key, changed = await self._pause_conversation(request, name, False)
        return ConversationResumed("ok", key, False, changed)

    async def _pause_conversation(
        self, request: AnyRequest, name: str, pausing: bool
    ) -> tuple[str, bool]:
        """Pause (or resume) the conversation the body names, recorded in the
        operator log; the key, and whether anything changed."""
        queue = self._queue(name)
        key = await self._conversation(request)
        if pausing:
            changed = await queue.pause_key(key)
            result = "paused" if changed else "already paused"
        else:
            changed = await queue.resume_key(key)
            result = "resumed" if changed else "not paused"
        action = "pause" if pausing else "resume"
        await self._recorded(request, action, name, result, operator_log.keys_scope([key], ""))
        return key, changed

    @get("/destinations/{name:str}/conversations/paused", operation_class=doc("destination"))
    async def paused_conversations(self, name: FromPath[str]) -> PausedConversations:
        """The conversations an operator paused, paused longest first."""
        found = await self._queue(name).paused_keys()
        return PausedConversations([PausedConversation.of(p) for p in found])

    @post(
        "/destinations/{name:str}/conversations/skip",
        status_code=200,
        operation_class=doc("key_body", "no_message", body=ConversationRequest),
    )
    async def skip_conversation(
        self, request: AnyRequest, name: FromPath[str]
    ) -> ConversationSkipped:
        """Move one conversation's head message to the dead letters (error
        "skipped by an operator", its sequence number kept): its next message
        goes next. Wherever the conversation is: ready, waiting out a backoff,
        blocked, paused, or in flight; an attempt in flight is fenced out (its
        outcome is ignored), though the destination may still receive it."""
        queue = self._queue(name)
        key = await self._conversation(request)
        done = await queue.skip(key)
        if done is None:
            raise ApiError(404, f"conversation {key!r} of {name} has no message to skip")
        seq = "no sequence number" if done.seq is None else f"sequence number {done.seq}"
        result = f"skipped {done.message_id} ({seq}, was {done.was})"
        await self._recorded(request, "skip", name, result, operator_log.keys_scope([key], ""))
        return ConversationSkipped.of(done)

    @get("/destinations/{name:str}/dead", operation_class=doc("query", "destination"))
    async def dead(
        self, name: FromPath[str], start: FromQuery[int] = 0, count: FromQuery[int] = 100
    ) -> DeadLetters:
        """Dead letters of a destination, oldest first: `count` (1 or more) from
        position `start` (0 or more), at most 1000; outside: 400."""
        queues = await self._any_queue(name)
        entries = await queues.dead_letters(start_of(start), count_of(count))
        # (The envelope as it always read: with its `ts`, router.queue.envelope.)
        shown = [
            msgspec.structs.replace(
                d, error=self._shown(d.error), envelope=envelope.with_ts_text(d.envelope)
            )
            for _, d in entries
        ]
        return DeadLetters(shown)

    @post(
        "/destinations/{name:str}/dead/replay",
        status_code=200,
        operation_class=doc("into", "destination", "conflict"),
    )
    async def replay(
        self,
        request: AnyRequest,
        name: FromPath[str],
        count: FromQuery[int | None] = None,
        into: FromQuery[str | None] = None,
    ) -> Replayed:
        """Put dead letters back in their keys' lanes, where they arrived (all, or the
        oldest `count`); with `into`, at the end of each key's lane in that
        destination of routes.yaml instead (the way out for an orphaned
        destination's dead letters)."""
        source = await self._any_queue(name)
        scope = operator_log.count_scope(count, "dead letters")
        if into is None:
            if name not in self._state.config.destinations:
                raise ApiError(
                    409,
                    f"{name} is not in routes.yaml (orphaned): nothing would deliver its dead "
                    "letters there; replay them into a configured destination with ?into=NAME, "
                    "or purge them",
                )
            replayed = await source.replay_oldest(batch_of(count))
            await self._recorded(request, "replay", name, f"{replayed} replayed", scope)
            return Replayed("ok", replayed)
        target = self._into_queue(name, into)
        _, scripts = self._state.require_redis()
        try:
            moved = await moving.replay_dead_into(
                scripts, source, name, target, into, batch_of(count)
            )
        except moving.MoveRefused as exc:
            raise ApiError(409, str(exc)) from None
        await self._recorded(request, "replay", name, f"{moved} replayed into {into}", scope)
        return Replayed("ok", moved)

    @post(
        "/destinations/{name:str}/dead/purge",
        status_code=200,
        operation_class=doc("count", "destination"),
    )
    async def purge(
        self, request: AnyRequest, name: FromPath[str], count: FromQuery[int | None] = None
    ) -> Purged:
        """Delete dead letters for good (all, or the oldest `count`)."""
        purged = await (await self._any_queue(name)).purge_dead(batch_of(count))
        scope = operator_log.count_scope(count, "dead letters")
        await self._recorded(request, "purge", name, f"{purged} purged", scope)
        return Purged("ok", purged)

    @post(
        "/destinations/{name:str}/retry",
        status_code=200,
        operation_class=doc("keys", "destination", body=RetryRequest, body_optional=True),
    )
    async def retry_now(self, request: AnyRequest, name: FromPath[str]) -> Retried:
        """Make keys waiting out a backoff due now: the ones in the JSON body
        `{"keys": [...]}`, or all of them with no body, which also marks a
        destination that is down (its circuit breaker) or held by a
        Retry-After up again. Their attempt counts stay (max_attempts still
        ends a hopeless message)."""
        body = await request.body()
        keys: list[str] = []
        if body.strip():
            try:
                keys = msgspec.json.decode(body, type=RetryRequest).keys
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(
                    f'send no body, or a JSON body {{"keys": ["<ordering key>", ...]}}: {exc}'
                ) from None
            if not keys:
                raise BadRequest('"keys" is empty: leave the body out to retry every key')
        retried = await self._queue(name).retry_now(keys)
        scope = operator_log.keys_scope(keys, "all waiting keys")
        await self._recorded(request, "retry", name, f"{retried} resumed", scope)
        return Retried("ok", retried)

    @get("/destinations/{name:str}/key", operation_class=doc("key", "destination"))
    async def key_state(self, name: FromPath[str], key: FromQuery[str]) -> KeyStateAnswer:
        """One conversation: where its head message stands (`?key=` URL-encoded,
        so every key is reachable)."""
        found = await self._queue(name).key_state(key)
        # Errors stored by an older version may hold a secret (router.ops.redaction).
        return KeyStateAnswer.of(found, found.last_error and self._shown(found.last_error))

    @get("/destinations/{name:str}/blocked", operation_class=doc("destination"))
    async def blocked(self, name: FromPath[str]) -> BlockedKeys:
        """Keys stopped by retry.on_exhausted: block, with their last error."""
        blocked = await (await self._any_queue(name)).blocked_keys()
        return BlockedKeys(
            {
                key: msgspec.structs.replace(b, error=self._shown(b.error))
                for key, b in msgspec.convert(blocked, dict[str, BlockedKey]).items()
            }
        )

    async def _unblock_key(self, request: AnyRequest, name: str, key: str) -> Done:
        if not await (await self._any_queue(name)).unblock(key):
            raise ApiError(404, f"key {key!r} of {name} is not blocked")
        scope = operator_log.keys_scope([key], "")
        await self._recorded(request, "unblock", name, "1 unblocked", scope)
        return Done("ok")

    @post(
        "/destinations/{name:str}/blocked/unblock",
        status_code=200,
        operation_class=doc("key_body", "not_blocked", body=UnblockRequest),
    )
    async def unblock(self, request: AnyRequest, name: FromPath[str]) -> Done:
        """Put a blocked key back in line: its head message is attempted again.
        The key is in the JSON body, `{"key": "..."}`, so every key is
        reachable: `/`, `%`, spaces, any unicode."""
        try:
            data = msgspec.json.decode(await request.body(), type=UnblockRequest)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f'send a JSON body {{"key": "<ordering key>"}}: {exc}') from None
        return await self._unblock_key(request, name, data.key)

    @post(
        "/destinations/{name:str}/blocked/{key:str}/unblock",
        status_code=200,
        operation_class=doc("not_blocked"),
    )
    async def unblock_in_path(
        self, request: AnyRequest, name: FromPath[str], key: FromPath[str]
    ) -> Done:
        """The same for a key without `/` in the path (URL-encoded); a `%2F`
        is decoded before routing, so keys with `/` need the body form."""
        return await self._unblock_key(request, name, key)

    # -- the message log (router.queue.message_log) ------------------------------

    @get("/messages/{id:str}", operation_class=doc("message"))
    async def message(self, id: FromPath[str]) -> MessageStory:
        """A message's story at each destination that has one: its state
        there, and every attempt (outcome, HTTP status, duration, error, the
        start of the answer), oldest first (docs/message-log.md)."""
        redis, scripts = self._state.require_redis()
        layout = {n: d.settings.shards for n, d in self._state.config.destinations.items()}
        found = await stories(redis, scripts, id, layout)
        if not found:
            raise ApiError(404, f"no destination's message log has a message {id!r}")
        return MessageStory.of(id, found, self._shown)

    @get("/destinations/{name:str}/messages", operation_class=doc("search", "destination"))
    async def messages(
        self,
        name: FromPath[str],
        key: FromQuery[str | None] = None,
        outcome: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        limit: FromQuery[int] = 50,
    ) -> FoundMessages:
        """A destination's logged messages, newest first: of one conversation
        (`key`), with a failed attempt (`outcome=failed`, delivered later or
        not), received since `since` (an ISO 8601 time, ms since the epoch, or
        a duration back from now: `15m`, `2h`, `7d`); `limit` 1 to 1000."""
        if outcome not in (None, "failed"):
            raise BadRequest(f"outcome {outcome[:40]!r}: only `failed` is searched for")
        start = None if since is None else since_ms(since, time.time())
        if since is not None and start is None:
            raise BadRequest(
                f"since {since[:40]!r}: write an ISO 8601 time, ms since the epoch, "
                "or a duration back from now (15m, 2h, 7d)"
            )
        limit = limit_of(limit)
        found = await (await self._any_queue(name)).search(key, outcome == "failed", start, limit)
        return FoundMessages([FoundMessage.of(f) for f in found])

    # -- the queued messages of an orphaned destination (router.queue.moving) ------

    @post(
        "/destinations/{name:str}/orphan/move",
        status_code=200,
        operation_class=doc("into", "destination", "conflict"),
    )
    async def orphan_move(
        self, request: AnyRequest, name: FromPath[str], into: FromQuery[str]
    ) -> OrphanMoved:
        """Move every queued message of a destination removed from routes.yaml
        into `into` (one of routes.yaml), key by key in order, at the end of
        each key's lane there. Its dead letters stay (`dead/replay?into=`)."""
        source = await self._orphan_queue(name)
        target = self._into_queue(name, into)
        _, scripts = self._state.require_redis()
        try:
            done = await moving.move_queued(scripts, source, name, target, into)
        except moving.MoveRefused as exc:
            raise ApiError(409, str(exc)) from None
        result = f"{done.messages} moved into {into}"
        await self._recorded(request, "move", name, result, "queued")
        return OrphanMoved("ok", done.messages, done.in_flight)

    @post(
        "/destinations/{name:str}/orphan/purge",
        status_code=200,
        operation_class=doc("destination", "conflict"),
    )
    async def orphan_purge(self, request: AnyRequest, name: FromPath[str]) -> OrphanPurged:
        """Delete every queued message of a destination removed from
        routes.yaml, for good. Its dead letters stay (`dead/purge`)."""
        _, scripts = self._state.require_redis()
        done = await moving.purge_queued(scripts, await self._orphan_queue(name))
        await self._recorded(request, "purge", name, f"{done.messages} purged", "queued")
        return OrphanPurged("ok", done.messages, done.in_flight)

    # -- items answered 200 and not routed (router.queue.unroutable) --------------

    @get("/unroutable", operation_class=doc())
    async def unroutable_counts(self) -> dict[str, UnroutableCount]:
        """Items of requests answered 200 that could not be routed, per
        route path: `kept` (listed now) and `trimmed` (dropped past the cap)."""
        _, scripts = self._state.require_redis()
        counted = await unroutable.counts(scripts)
        return {c.route: UnroutableCount(c.kept, c.trimmed) for c in counted}

    @get("/unroutable/items", operation_class=doc("query"))
    async def unroutable_items(
        self, route: FromQuery[str], start: FromQuery[int] = 0, count: FromQuery[int] = 100
    ) -> UnroutableItems:
        """A route's kept items, oldest first (`?route=` its path): the item
        as it came, why it was not routed, and when."""
        items = await self._unroutable_store(route).items(start_of(start), count_of(count))
        return UnroutableItems([i for _, i in items])

    @post(
        "/unroutable/replay",
        status_code=200,
        operation_class=doc("query", "no_route", "no_format"),
    )
    async def unroutable_replay(
        self, request: AnyRequest, route: FromQuery[str], count: FromQuery[int | None] = None
    ) -> UnroutableReplayed:
        """Read a route's oldest kept items again (all, or `count`), as the
        running router reads them: each it now routes is stored and removed,
        each it still cannot stays."""
        _, scripts = self._state.require_redis()
        done = await replay_unroutable(self._format_route(route), scripts, batch_of(count))
        result = f"{done.replayed} replayed, {done.still} kept"
        scope = operator_log.count_scope(count, "unroutable items")
        await self._recorded(request, "unroutable replay", route_key(route), result, scope)
        return UnroutableReplayed("ok", done.replayed, done.still)

    @post("/unroutable/purge", status_code=200, operation_class=doc("query"))
    async def unroutable_purge(
        self, request: AnyRequest, route: FromQuery[str], count: FromQuery[int | None] = None
    ) -> Purged:
        """Delete a route's kept items for good (all, or the oldest `count`)."""
        purged = await self._unroutable_store(route).purge(batch_of(count))
        scope = operator_log.count_scope(count, "unroutable items")
        result = f"{purged} purged"
        await self._recorded(request, "unroutable purge", route_key(route), result, scope)
        return Purged("ok", purged)
