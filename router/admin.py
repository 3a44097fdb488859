"""Admin endpoints: queue stats, dead letters, orphaned destinations' queues
and unroutable items.

They read and change queues, so they exist only when ROUTER_ADMIN_TOKEN is
set, and every call must carry `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from router import moving, operator_log, registry, unroutable
from router.auth import BearerToken, client_of
from router.config import route_key
from router.errors import ApiError, BadRequest
from router.ingest import IngestRoute, replay_unroutable
from router.openapi import admin_operation as doc  # the document's bearer auth and answers
from router.paging import batch_of, count_of, start_of
from router.queue import DestinationQueues
from router.state import RouterState
from router.unroutable import UnroutableStore


def admin_handlers(state: RouterState) -> list[HTTPRouteHandler]:
    token = state.settings.admin_token
    if not token:
        return []
    bearer = BearerToken(token, "ROUTER_ADMIN_TOKEN", state.wrong_tokens)

    def authorize(request: Request[Any, Any, Any]) -> None:
        bearer.check(request.headers.get("authorization"), client_of(request), "admin endpoints")

    def shown_error(info: dict[str, Any]) -> dict[str, Any]:
        """A blocked key's record with its error as the API shows errors:
        without the config's secrets (one stored before a fix may hold one)."""
        if isinstance(info.get("error"), str):
            return {**info, "error": state.config.redactor(info["error"])}
        return info

    async def recorded(
        request: Request[Any, Any, Any], action: str, subject: str, result: str, scope: str = ""
    ) -> None:
        """Record an action taken through the API (router.operator_log)."""
        redis, _ = state.require_redis()
        host = request.client and request.client.host
        await operator_log.record_request(redis, "admin", host, action, subject, result, scope)

    def queue(name: str) -> DestinationQueues:
        destination = state.config.destinations.get(name)
        if destination is None:
            raise ApiError(404, f"no destination named {name!r}")
        redis, scripts = state.require_redis()
        return DestinationQueues.of(redis, scripts, destination)

    def layout() -> dict[str, int]:
        return {n: d.settings.shards for n, d in state.config.destinations.items()}

    async def any_queue(name: str) -> DestinationQueues:
        """A configured destination's queues, or an orphan's (removed from
        routes.yaml: its dead letters and blocked keys are still reachable)."""
        redis, scripts = state.require_redis()
        found = await registry.queues_of(redis, scripts, name, layout())
        if found is None:
            raise ApiError(404, f"no destination named {name!r}")
        return found

    def into_queue(name: str, into: str) -> DestinationQueues:
        """The configured destination a move from `name` goes into."""
        if into == name:
            raise BadRequest(f"into names {name} itself")
        if into not in state.config.destinations:
            raise BadRequest(f"into: no destination named {into!r} in routes.yaml")
        return queue(into)

    @get("/admin/destinations", operation_class=doc("destinations"))
    async def destinations(request: Request[Any, Any, Any]) -> dict[str, Any]:
        """What every destination's queue holds: `messages` counts messages; `ready`,
        `in_flight`, `delayed` and `blocked` count ordering keys (conversations);
        destinations removed from routes.yaml that still hold messages are listed
        with `orphaned: true`."""
        authorize(request)
        out = {
            name: {**await queue(name).stats(), "orphaned": False}
            for name in state.config.destinations
        }
        # Removed from routes.yaml while still holding messages (router.registry).
        redis, scripts = state.require_redis()
        for name in await registry.orphaned_destinations(redis, out):
            shards = await registry.stored_shards(redis, name)
            stats = await DestinationQueues(redis, scripts, name, shards).stats()
            out[name] = {**stats, "orphaned": True}
        return out

    @post("/admin/destinations/{name:str}/pause", status_code=200, operation_class=doc("pause"))
    async def pause(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
        """Pause a destination in every process: nothing new is attempted,
        attempts in flight finish, ingest goes on storing."""
        authorize(request)
        await queue(name).set_paused(True)
        await recorded(request, "pause", name, "paused")
        return {"status": "ok", "paused": True}

    @post("/admin/destinations/{name:str}/resume", status_code=200, operation_class=doc("resume"))
    async def resume(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
        """Resume a paused destination: its waiting messages go out, oldest first."""
        authorize(request)
        await queue(name).set_paused(False)
        await recorded(request, "resume", name, "resumed")
        return {"status": "ok", "paused": False}

    @get("/admin/destinations/{name:str}/dead", operation_class=doc("dead"))
    async def dead(
        request: Request[Any, Any, Any],
        name: FromPath[str],
        start: FromQuery[int] = 0,
        count: FromQuery[int] = 100,
    ) -> dict[str, Any]:
        """Dead letters of a destination, oldest first: `count` (1 or more) from
        position `start` (0 or more), at most 1000; outside: 400."""
        authorize(request)
        entries = await (await any_queue(name)).dead_letters(start_of(start), count_of(count))
        return {
            "dead": [
                {
                    "key": d.key,
                    "envelope": d.envelope,
                    "error": state.config.redactor(d.error),
                    "attempts": d.attempts,
                    "dead_at": d.dead_at,
                }
                for _, d in entries
            ]
        }

    @post(
        "/admin/destinations/{name:str}/dead/replay", status_code=200, operation_class=doc("replay")
    )
    async def replay(
        request: Request[Any, Any, Any],
        name: FromPath[str],
        count: FromQuery[int | None] = None,
        into: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Put dead letters back in their keys' lanes, where they arrived (all, or the
        oldest `count`); with `into`, at the end of each key's lane in that
        destination of routes.yaml instead (the way out for an orphaned
        destination's dead letters)."""
        authorize(request)
        source = await any_queue(name)
        scope = operator_log.count_scope(count, "dead letters")
        if into is None:
            if name not in state.config.destinations:
                raise ApiError(
                    409,
                    f"{name} is not in routes.yaml (orphaned): nothing would deliver its dead "
                    "letters there; replay them into a configured destination with ?into=NAME, "
                    "or purge them",
                )
            replayed = await source.replay_oldest(batch_of(count))
            await recorded(request, "replay", name, f"{replayed} replayed", scope)
            return {"status": "ok", "replayed": replayed}
        target = into_queue(name, into)
        _, scripts = state.require_redis()
        try:
            moved = await moving.replay_dead_into(
                scripts, source, name, target, into, batch_of(count)
            )
        except moving.MoveRefused as exc:
            raise ApiError(409, str(exc)) from None
        await recorded(request, "replay", name, f"{moved} replayed into {into}", scope)
        return {"status": "ok", "replayed": moved}

    @post(
        "/admin/destinations/{name:str}/dead/purge", status_code=200, operation_class=doc("purge")
    )
    async def purge(
        request: Request[Any, Any, Any], name: FromPath[str], count: FromQuery[int | None] = None
    ) -> dict[str, Any]:
        """Delete dead letters for good (all, or the oldest `count`)."""
        authorize(request)
        purged = await (await any_queue(name)).purge_dead(batch_of(count))
        scope = operator_log.count_scope(count, "dead letters")
        await recorded(request, "purge", name, f"{purged} purged", scope)
        return {"status": "ok", "purged": purged}

    @post("/admin/destinations/{name:str}/retry", status_code=200, operation_class=doc("retry_now"))
    async def retry_now(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
        """Make keys waiting out a backoff due now: the ones in the JSON body
        `{"keys": [...]}`, or all of them with no body, which also marks a
        destination that is down (its circuit breaker) or held by a
        Retry-After up again. Their attempt counts stay (max_attempts still
        ends a hopeless message)."""
        authorize(request)
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
        retried = await queue(name).retry_now(keys)
        scope = operator_log.keys_scope(keys, "all waiting keys")
        await recorded(request, "retry", name, f"{retried} resumed", scope)
        return {"status": "ok", "retried": retried}

    @get("/admin/destinations/{name:str}/key", operation_class=doc("key_state"))
    async def key_state(
        request: Request[Any, Any, Any], name: FromPath[str], key: FromQuery[str]
    ) -> dict[str, Any]:
        """One conversation: where its head message stands (`?key=` URL-encoded,
        so every key is reachable)."""
        authorize(request)
        found = await queue(name).key_state(key)
        # Errors stored by an older version may hold a secret (router.redaction).
        shown = found.last_error and state.config.redactor(found.last_error)
        return dataclasses.asdict(dataclasses.replace(found, last_error=shown))

    @get("/admin/destinations/{name:str}/blocked", operation_class=doc("blocked"))
    async def blocked(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
        """Keys stopped by retry.on_exhausted: block, with their last error."""
        authorize(request)
        blocked = await (await any_queue(name)).blocked_keys()
        return {"blocked": {key: shown_error(info) for key, info in blocked.items()}}

    async def unblock_key(request: Request[Any, Any, Any], name: str, key: str) -> dict[str, Any]:
        if not await (await any_queue(name)).unblock(key):
            raise ApiError(404, f"key {key!r} of {name} is not blocked")
        await recorded(request, "unblock", name, "1 unblocked", operator_log.keys_scope([key], ""))
        return {"status": "ok"}

    @post(
        "/admin/destinations/{name:str}/blocked/unblock",
        status_code=200,
        operation_class=doc("unblock"),
    )
    async def unblock(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
        """Put a blocked key back in line: its head message is attempted again.
        The key is in the JSON body, `{"key": "..."}`, so every key is
        reachable: `/`, `%`, spaces, any unicode."""
        authorize(request)
        try:
            data = msgspec.json.decode(await request.body(), type=UnblockRequest)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f'send a JSON body {{"key": "<ordering key>"}}: {exc}') from None
        return await unblock_key(request, name, data.key)

    @post(
        "/admin/destinations/{name:str}/blocked/{key:str}/unblock",
        status_code=200,
        operation_class=doc("unblock_in_path"),
    )
    async def unblock_in_path(
        request: Request[Any, Any, Any], name: FromPath[str], key: FromPath[str]
    ) -> dict[str, Any]:
        """The same for a key without `/` in the path (URL-encoded); a `%2F`
        is decoded before routing, so keys with `/` need the body form."""
        authorize(request)
        return await unblock_key(request, name, key)

    # -- the queued messages of an orphaned destination (router.moving) ------

    async def orphan_queue(name: str) -> DestinationQueues:
        if name in state.config.destinations:
            raise ApiError(
                409,
                f"{name} is in routes.yaml, and its workers deliver it; only a destination "
                "removed from it is moved or purged this way",
            )
        return await any_queue(name)

    @post(
        "/admin/destinations/{name:str}/orphan/move",
        status_code=200,
        operation_class=doc("orphan_move"),
    )
    async def orphan_move(
        request: Request[Any, Any, Any], name: FromPath[str], into: FromQuery[str]
    ) -> dict[str, Any]:
        """Move every queued message of a destination removed from routes.yaml
        into `into` (one of routes.yaml), key by key in order, at the end of
        each key's lane there. Its dead letters stay (`dead/replay?into=`)."""
        authorize(request)
        source = await orphan_queue(name)
        target = into_queue(name, into)
        _, scripts = state.require_redis()
        try:
            done = await moving.move_queued(scripts, source, name, target, into)
        except moving.MoveRefused as exc:
            raise ApiError(409, str(exc)) from None
        await recorded(request, "move", name, f"{done.messages} moved into {into}", "queued")
        return {"status": "ok", "moved": done.messages, "in_flight": done.in_flight}

    @post(
        "/admin/destinations/{name:str}/orphan/purge",
        status_code=200,
        operation_class=doc("orphan_purge"),
    )
    async def orphan_purge(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
        """Delete every queued message of a destination removed from
        routes.yaml, for good. Its dead letters stay (`dead/purge`)."""
        authorize(request)
        _, scripts = state.require_redis()
        done = await moving.purge_queued(scripts, await orphan_queue(name))
        await recorded(request, "purge", name, f"{done.messages} purged", "queued")
        return {"status": "ok", "purged": done.messages, "in_flight": done.in_flight}

    # -- items answered 200 and not routed (router.unroutable) --------------

    def unroutable_store(route: str) -> UnroutableStore:
        _, scripts = state.require_redis()
        return UnroutableStore(scripts, route_key(route))

    def format_route(route: str) -> IngestRoute:
        ingest = state.ingest.get(route_key(route))
        if ingest is None:
            raise ApiError(404, f"no route with path {route!r} in routes.yaml")
        return ingest

    @get("/admin/unroutable", operation_class=doc("unroutable_counts"))
    async def unroutable_counts(request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Items of requests answered 200 that could not be routed, per
        route path: `kept` (listed now) and `trimmed` (dropped past the cap)."""
        authorize(request)
        _, scripts = state.require_redis()
        counted = await unroutable.counts(scripts)
        return {c.route: {"kept": c.kept, "trimmed": c.trimmed} for c in counted}

    @get("/admin/unroutable/items", operation_class=doc("unroutable_items"))
    async def unroutable_items(
        request: Request[Any, Any, Any],
        route: FromQuery[str],
        start: FromQuery[int] = 0,
        count: FromQuery[int] = 100,
    ) -> dict[str, Any]:
        """A route's kept items, oldest first (`?route=` its path): the item
        as it came, why it was not routed, and when."""
        authorize(request)
        items = await unroutable_store(route).items(start_of(start), count_of(count))
        return {"items": [msgspec.structs.asdict(i) for _, i in items]}

    @post("/admin/unroutable/replay", status_code=200, operation_class=doc("unroutable_replay"))
    async def unroutable_replay(
        request: Request[Any, Any, Any], route: FromQuery[str], count: FromQuery[int | None] = None
    ) -> dict[str, Any]:
        """Read a route's oldest kept items again (all, or `count`), as the
        running router reads them: each it now routes is stored and removed,
        each it still cannot stays."""
        authorize(request)
        _, scripts = state.require_redis()
        done = await replay_unroutable(format_route(route), scripts, batch_of(count))
        result = f"{done.replayed} replayed, {done.still} kept"
        scope = operator_log.count_scope(count, "unroutable items")
        await recorded(request, "unroutable replay", route_key(route), result, scope)
        return {"status": "ok", "replayed": done.replayed, "still_unroutable": done.still}

    @post("/admin/unroutable/purge", status_code=200, operation_class=doc("unroutable_purge"))
    async def unroutable_purge(
        request: Request[Any, Any, Any], route: FromQuery[str], count: FromQuery[int | None] = None
    ) -> dict[str, Any]:
        """Delete a route's kept items for good (all, or the oldest `count`)."""
        authorize(request)
        purged = await unroutable_store(route).purge(batch_of(count))
        scope = operator_log.count_scope(count, "unroutable items")
        await recorded(request, "unroutable purge", route_key(route), f"{purged} purged", scope)
        return {"status": "ok", "purged": purged}

    return [
        unroutable_counts,
        unroutable_items,
        unroutable_replay,
        unroutable_purge,
        destinations,
        pause,
        resume,
        dead,
        replay,
        purge,
        orphan_move,
        orphan_purge,
        retry_now,
        key_state,
        blocked,
        unblock,
        unblock_in_path,
    ]


class UnblockRequest(msgspec.Struct, forbid_unknown_fields=True):
    key: str


class RetryRequest(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[str]
