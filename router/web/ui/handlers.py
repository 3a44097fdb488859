"""The dashboard's pages and actions, under /ui.

Pages are rendered on the server (Jinja2, autoescaped: message bodies,
keys and errors come from outside). Every action is a POST form answered
with a 303 back to the page (post/redirect/get: reloading does not repeat
it), guarded by the session and, for CSRF, by SameSite=Strict and a check
of the Origin header. The Content-Security-Policy allows only the router's
own origin: no inline script or style, no third party.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from redis.exceptions import RedisError

from router.config.durations import age
from router.http import paging
from router.http.auth import BearerToken, client_of
from router.http.errors import ApiError, redis_cause
from router.http.throttle import TooManyWrongTokens
from router.queue import envelope, operator_log, unroutable
from router.queue.keys import shard_count_key
from router.queue.sharded_queue import ShardedQueue
from router.queue.status import DestinationStatus, StatusReader, layout_of, read_status
from router.web.state import RouterState
from router.web.ui import messages as message_log
from router.web.ui import sessions
from router.web.ui.history import History, chart
from router.web.ui.messages import when as _when

HERE = Path(__file__).parent
STATIC = HERE / "static"

REFRESH_SECONDS = 5  # how often an open page refreshes its figures
DEAD_PAGE = 50  # dead letters per page
BLOCKED_SHOWN = 100  # blocked keys listed (each costs two reads for its head)
PAUSED_SHOWN = 100  # paused conversations listed (each costs a few reads for its state)
BODY_SHOWN = 64 * 1024  # characters of a message body shown (the rest: "… N more")

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # same-origin: same-origin POSTs carry a real Origin (no-referrer would
    # make the browser send "Origin: null"), other sites learn nothing.
    "referrer-policy": "same-origin",
}

# What an action did, shown once on the page it redirects to. Codes, not
# text, in the URL: a link cannot make the page say what its author wants.
DONE = {
    "paused": "Paused: nothing new is attempted; attempts in flight finish.",
    "resumed": "Resumed: waiting messages go out, oldest first per key.",
    "replayed": "Replayed {n} dead letter(s): each is back in its key's lane, where it arrived.",
    "purged": "Purged {n} dead letter(s).",
    "unblocked": "Unblocked: the key's head message is attempted again.",
    "not-blocked": "That key is no longer blocked.",
    "retried": "Retrying now: {n} waiting key(s) made due; the destination is marked up.",
    "key-paused": "Conversation paused: none of its messages is attempted; an attempt in "
    "flight finishes.",
    "key-already-paused": "That conversation was already paused.",
    "key-resumed": "Conversation resumed: its messages go on, oldest first.",
    "key-not-paused": "That conversation was not paused.",
    "skipped": "Skipped the conversation's head message (sequence number {n}): it is a dead "
    "letter now, and the next message goes next.",
    "skipped-unnumbered": "Skipped the conversation's head message: it is a dead letter now, "
    "and the next message goes next.",
    "nothing-to-skip": "That conversation has no message to skip.",
}


def ui_router(state: RouterState, history: History) -> Router:
    token = state.settings.admin_token
    assert token, "the dashboard needs ROUTER_ADMIN_TOKEN"
    admin = BearerToken(token, "ROUTER_ADMIN_TOKEN", state.wrong_tokens)

    def status() -> StatusReader:
        if state.status is None:  # set by the app's lifespan
            raise ApiError(503, "Starting up.", {"retry-after": "1"})
        return state.status

    # -- guards ---------------------------------------------------------------

    async def guard(request: Request[Any, Any, Any]) -> Response[Any] | None:
        if request.method not in ("GET", "HEAD") and not sessions.same_origin(request):
            return _error(request, 403, "This form was sent from another site: refused.")
        if request.route_handler.opt.get("public"):
            return None
        given = sessions.bearer(request)
        if given is not None:  # a script: the admin API's check, throttled alike
            if admin.accepts(given, client_of(request), request.url.path):
                return None
            return _error(request, 401, "Wrong token.", {"www-authenticate": "Bearer"})
        if sessions.has_session(request, token):
            return None
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = request.headers.get("referer", "/ui")  # back where the form was
            target = sessions.safe_next(_path_of(target))
        return Redirect(f"/ui/login?{urlencode({'next': target})}", status_code=303)

    def after(response: Response[Any]) -> Response[Any]:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # -- login ----------------------------------------------------------------

    @get("/login", opt={"public": True}, name="ui:login")
    async def login_form(
        request: Request[Any, Any, Any], next: FromQuery[str | None] = None
    ) -> Response[Any]:
        if sessions.has_session(request, token):
            return Redirect(sessions.safe_next(next), status_code=303)
        return _page("login.html", {"next": sessions.safe_next(next), "error": None})

    @post("/login", opt={"public": True}, status_code=303)
    async def login(request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        target = sessions.safe_next(form.get("next"))
        given = form.get("token")
        try:
            accepted = isinstance(given, str) and admin.accepts(
                given.strip(), client_of(request), "/ui/login"
            )
        except TooManyWrongTokens as exc:
            page = _page("login.html", {"next": target, "error": exc.message}, status=429)
            page.headers.update(exc.headers)
            return page
        if not accepted:
            return _page(
                "login.html",
                {"next": target, "error": "That is not the admin token."},
                status=401,
            )
        cookie = Cookie(
            key=sessions.COOKIE,
            value=sessions.new_session(token),
            path="/ui",
            max_age=sessions.SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=sessions.is_https(request),
        )
        return Redirect(target, status_code=303, cookies=[cookie])

    @post("/logout", opt={"public": True}, status_code=303)
    async def logout() -> Response[Any]:
        gone = Cookie(
            key=sessions.COOKIE, value="", path="/ui", max_age=0, httponly=True, samesite="strict"
        )
        return Redirect("/ui/login", status_code=303, cookies=[gone])

    # -- pages ----------------------------------------------------------------

    async def figures(fresh: bool = False) -> list[DestinationStatus]:
        """The reader's figures (at most a second old), or, on the page that
        answers an action (`fresh`), read now: a pause must show at once."""
        if fresh:
            redis, scripts = state.require_redis()
            layout = layout_of(state.config.destinations.values())
            current = await read_status(redis, scripts, layout, layout)  # orphans too
        else:
            current = await status().read()
        return sorted(current, key=lambda s: (s.orphaned, s.name))

    def row(s: DestinationStatus) -> dict[str, Any]:
        return {"s": s, "rate": history.rate(s.name, s), "age": age(s.oldest_age_seconds)}

    @get("/", name="ui:overview")
    async def overview(done: FromQuery[str | None] = None, n: FromQuery[int] = 0) -> Response[Any]:
        current = await figures(fresh=done is not None)
        now = time.time()
        names = [s.name for s in current]
        charts = [
            chart("Messages stored", [(n, history.series(n, "messages")) for n in names], now),
            chart("Delivered per second", [(n, history.rates(n)) for n in names], now),
        ]
        _, scripts = state.require_redis()
        # A few O(1) reads per route that ever kept one (router.queue.unroutable).
        kept = [c for c in await unroutable.counts(scripts) if c.kept or c.trimmed]
        return _page(
            "overview.html",
            {
                "rows": [row(s) for s in current],
                "unroutable": kept,
                "charts": charts,
                "as_of": _clock(now),
                "refresh": REFRESH_SECONDS,
                "done": DONE.get(done or "", "").format(n=n) or None,
            },
        )

    async def find(name: str, fresh: bool = False) -> tuple[DestinationStatus, ShardedQueue]:
        """A destination's figures and queues: one of routes.yaml, or an
        orphan (no longer there, still holding messages)."""
        match = [s for s in await figures(fresh) if s.name == name]
        if not match:
            raise ApiError(404, f"No destination named {name!r}.")
        redis, scripts = state.require_redis()
        destination = state.config.destinations.get(name)
        if destination is not None:
            return match[0], ShardedQueue.of(redis, scripts, destination)
        client: Any = redis
        shards = int(await client.get(shard_count_key(name)) or 1)
        return match[0], ShardedQueue(redis, scripts, name, shards)

    @get("/destinations/{name:str}", name="ui:destination")
    async def destination(
        name: FromPath[str],
        start: FromQuery[int] = 0,
        done: FromQuery[str | None] = None,
        n: FromQuery[int] = 0,
        key: FromQuery[str | None] = None,
        failed: FromQuery[str | None] = None,
    ) -> Response[Any]:
        start = paging.start_of(start)  # before any Redis read: a 400, not a 503
        current, queues = await find(name, fresh=done is not None)
        now = time.time()
        # The message log's newest (of one key, or failed only: the filter form).
        recent = await message_log.recent(queues, key or None, bool(failed), now)
        dead = await queues.dead_letters(start, DEAD_PAGE)
        # Counted now, with the list (the figures may be a second old).
        dead_total = sum([int(await q.redis.llen(q.keys.dead)) for q in queues.shards])
        blocked = await queues.blocked_keys()
        blocked_rows = []
        for key in sorted(blocked)[:BLOCKED_SHOWN]:
            shard = queues.of_key(key)
            head = await shard.redis.lindex(shard.keys.lane(key), 0)
            blocked_rows.append(
                {
                    "key": key,
                    "error": state.config.redactor(str(blocked[key].get("error", ""))),
                    "attempts": blocked[key].get("attempts"),
                    "when": _when(blocked[key].get("blocked_at"), now),
                    "waiting": await shard.lane_length(key),
                    "body": _body(head) if head is not None else None,
                }
            )
        paused = await queues.paused_keys()
        paused_rows = []
        for p in paused[:PAUSED_SHOWN]:
            found = await queues.key_state(p.key)
            paused_rows.append(
                {
                    "key": p.key,
                    "when": _when(p.since_ms, now),
                    "state": found.state,
                    "waiting": found.messages,
                    "head": found.head_id,
                }
            )
        charts = [
            chart(
                "Messages",
                [
                    ("stored", history.series(name, "messages")),
                    ("dead letters", history.series(name, "dead")),
                ],
                now,
            ),
            chart("Delivered per second", [("delivered/s", history.rates(name))], now),
        ]
        return _page(
            "destination.html",
            {
                "r": row(current),
                "charts": charts,
                "dead": [
                    {
                        "key": d.key,
                        # Stored before a fix, an error may hold a secret.
                        "error": state.config.redactor(d.error),
                        "attempts": d.attempts,
                        "when": _when(d.dead_at, now),
                        "body": _body(d.envelope.encode()),
                    }
                    for _, d in dead
                ],
                "dead_total": dead_total,
                "start": start,
                "page": DEAD_PAGE,
                "blocked": blocked_rows,
                "blocked_total": len(blocked),
                "paused": paused_rows,
                "paused_total": len(paused),
                "recent": recent,
                "recent_shown": message_log.RECENT,
                "key": key or "",
                "failed": bool(failed),
                "done": DONE.get(done or "", "").format(n=n) or None,
                "as_of": _clock(now),
                "refresh": REFRESH_SECONDS,
            },
        )

    def layout() -> dict[str, int]:
        return {n: d.settings.shards for n, d in state.config.destinations.items()}

    @get("/messages/{id:str}", name="ui:message")
    async def message(id: FromPath[str]) -> Response[Any]:
        """A message's story at each destination (the message log)."""
        redis, scripts = state.require_redis()
        found = await message_log.story_of(redis, scripts, id, layout())
        if not found:
            raise ApiError(404, f"No destination's message log has a message {id[:200]!r}.")
        rows = message_log.story_rows(found, state.config.redactor, time.time())
        return _page("message.html", {"id": id, "deliveries": rows})

    @get("/search", name="ui:search")
    async def search(
        q: FromQuery[str] = "", destination: FromQuery[str | None] = None
    ) -> Response[Any]:
        """The search box: a message id leads to its page; else `q` is a
        conversation key, whose messages are listed (of `destination`, on
        its page; else of every destination of routes.yaml)."""
        q = q.strip()
        if not q:
            raise ApiError(400, "Type a message id or a conversation key.")
        redis, scripts = state.require_redis()
        if await message_log.story_of(redis, scripts, q, layout()):
            return Redirect(f"/ui/messages/{_quote(q)}", status_code=303)
        if destination:
            query = urlencode({"key": q})
            page = f"/ui/destinations/{_quote(destination)}?{query}#messages"
            return Redirect(page, status_code=303)
        now = time.time()
        results = []
        for name, d in state.config.destinations.items():
            queues = ShardedQueue.of(redis, scripts, d)
            shown = message_log.FOUND_PER_DESTINATION
            found = await message_log.recent(queues, q, False, now, shown)
            results.append({"destination": name, "messages": found})
        return _page("search.html", {"q": q, "results": results})

    # -- actions --------------------------------------------------------------

    def back(name: str, done: str, n: int = 0, overview: bool = False) -> Redirect:
        query = urlencode({"done": done, "n": n} if n else {"done": done})
        page = "/ui" if overview else f"/ui/destinations/{_quote(name)}"
        return Redirect(f"{page}?{query}", status_code=303)

    async def recorded(
        request: Request[Any, Any, Any], action: str, name: str, result: str, scope: str = ""
    ) -> None:
        """Record an action taken on the page (router.queue.operator_log)."""
        redis, _ = state.require_redis()
        host = request.client and request.client.host
        await operator_log.record_request(redis, "ui", host, action, name, result, scope)

    async def configured(name: str) -> ShardedQueue:
        """Queues a delivery action may touch: a destination of routes.yaml
        (an orphan has nobody to deliver to; it can only be purged)."""
        current, queues = await find(name)
        if current.orphaned or name not in state.config.destinations:
            raise ApiError(409, f"{name} is not in routes.yaml: only purging its dead letters.")
        return queues

    @post("/destinations/{name:str}/pause", status_code=303)
    async def pause(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        await (await configured(name)).set_paused(True)
        await recorded(request, "pause", name, "paused")
        return back(name, "paused", overview=(await request.form()).get("back") == "overview")

    @post("/destinations/{name:str}/resume", status_code=303)
    async def resume(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        await (await configured(name)).set_paused(False)
        await recorded(request, "resume", name, "resumed")
        return back(name, "resumed", overview=(await request.form()).get("back") == "overview")

    @post("/destinations/{name:str}/dead/replay", status_code=303)
    async def replay(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        count = _count(await request.form())
        replayed = await (await configured(name)).replay_oldest(count)
        scope = operator_log.count_scope(count, "dead letters")
        await recorded(request, "replay", name, f"{replayed} replayed", scope)
        return back(name, "replayed", replayed)

    @post("/destinations/{name:str}/dead/purge", status_code=303)
    async def purge(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        count = _count(await request.form())
        _, queues = await find(name)
        purged = await queues.purge_dead(count)
        scope = operator_log.count_scope(count, "dead letters")
        await recorded(request, "purge", name, f"{purged} purged", scope)
        return back(name, "purged", purged)

    @post("/destinations/{name:str}/blocked/unblock", status_code=303)
    async def unblock(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        key = (await request.form()).get("key")
        if not isinstance(key, str):
            raise ApiError(400, "The form names no key.")
        unblocked = await (await configured(name)).unblock(key)
        if unblocked:
            scope = operator_log.keys_scope([key], "")
            await recorded(request, "unblock", name, "1 unblocked", scope)
        return back(name, "unblocked" if unblocked else "not-blocked")

    async def form_key(request: Request[Any, Any, Any]) -> str:
        key = (await request.form()).get("key")
        if not isinstance(key, str) or not key:
            raise ApiError(400, "The form names no conversation (ordering key).")
        return key

    async def pause_conversation(
        request: Request[Any, Any, Any], name: str, pausing: bool
    ) -> Response[Any]:
        queues = await configured(name)
        key = await form_key(request)
        if pausing:
            changed = await queues.pause_key(key)
            result, done = (
                ("paused", "key-paused") if changed else ("already paused", "key-already-paused")
            )
        else:
            changed = await queues.resume_key(key)
            result, done = (
                ("resumed", "key-resumed") if changed else ("not paused", "key-not-paused")
            )
        action = "pause" if pausing else "resume"
        await recorded(request, action, name, result, operator_log.keys_scope([key], ""))
        return back(name, done)

    @post("/destinations/{name:str}/conversations/pause", status_code=303)
    async def pause_key(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        """`router pause DEST KEY`: one conversation held, the others go on."""
        return await pause_conversation(request, name, True)

    @post("/destinations/{name:str}/conversations/resume", status_code=303)
    async def resume_key(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        return await pause_conversation(request, name, False)

    @post("/destinations/{name:str}/conversations/skip", status_code=303)
    async def skip(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        """`router skip DEST KEY`: the conversation's head to the dead letters."""
        queues = await configured(name)
        key = await form_key(request)
        done = await queues.skip(key)
        if done is None:
            return back(name, "nothing-to-skip")
        seq = "no sequence number" if done.seq is None else f"sequence number {done.seq}"
        result = f"skipped {done.message_id} ({seq}, was {done.was})"
        await recorded(request, "skip", name, result, operator_log.keys_scope([key], ""))
        if done.seq is None:
            return back(name, "skipped-unnumbered")
        return back(name, "skipped", done.seq)

    @post("/destinations/{name:str}/retry", status_code=303)
    async def retry(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        """`router retry DEST`: a destination down (its circuit breaker) or
        held by a Retry-After is marked up, and every waiting key made due."""
        resumed = await (await configured(name)).retry_now(None)
        await recorded(request, "retry", name, f"{resumed} resumed", "all waiting keys")
        overview = (await request.form()).get("back") == "overview"
        return back(name, "retried", resumed, overview=overview)

    handlers: list[Any] = [
        login_form,
        login,
        logout,
        overview,
        destination,
        message,
        search,
        pause,
        resume,
        replay,
        purge,
        unblock,
        pause_key,
        resume_key,
        skip,
        retry,
        create_static_files_router(
            path="/static", directories=[STATIC], opt={"public": True}, name="ui:static"
        ),
    ]
    return Router(
        path="/ui",
        route_handlers=handlers,
        before_request=guard,
        after_request=after,
        exception_handlers={ApiError: _api_error, RedisError: _redis_error},
        include_in_schema=False,
    )


def _page(name: str, context: dict[str, Any], status: int = 200) -> Template:
    return Template(
        template_name=name,
        context={"done": None, **context},
        status_code=status,
        # Here too, not only in the router's after_request: error pages
        # (exception handlers) do not pass through that hook.
        headers={"cache-control": "no-store", **SECURITY_HEADERS},
    )


def _error(
    request: Request[Any, Any, Any],
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    page = _page("error.html", {"status": status, "message": message}, status)
    page.headers.update(headers or {})
    return page


def _api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _error(request, exc.status, exc.message, exc.headers)


def _redis_error(request: Request[Any, Any, Any], exc: RedisError) -> Response[Any]:
    return _error(request, 503, f"Redis: {redis_cause(exc)}", {"retry-after": "1"})


def _count(form: Any) -> int | None:
    """The form's count: a whole number of at least 1, or empty for all."""
    text = str(form.get("count") or "").strip()
    if not text or text == "all":
        return None
    digits = text.isascii() and text.isdigit() and len(text) <= 10  # int() of 5000 digits raises
    if not digits or not 1 <= int(text) <= paging.MAX_INDEX:
        raise ApiError(
            400,
            f"Count {text[:20]!r}: write a whole number from 1 to {paging.MAX_INDEX}, "
            "or leave empty.",
        )
    return int(text)


def _quote(name: str) -> str:
    return quote(name, safe="")


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S UTC")


def _body(raw: bytes) -> dict[str, Any]:
    """A stored message for display: its id, when it arrived, its body
    pretty-printed when it is JSON (it always is, unless damaged), cut at
    BODY_SHOWN characters."""
    try:
        env = envelope.decode(raw)
    except Exception:  # a damaged entry is shown, not a reason to fail the page
        text = raw.decode(errors="replace")
        return {"id": None, "text": text[:BODY_SHOWN], "more": 0, "summary": text[:120]}
    body = bytes(env.body)
    try:
        text = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        text = body.decode(errors="replace")
    return {
        "id": env.id,
        "text": text[:BODY_SHOWN],
        "more": max(0, len(text) - BODY_SHOWN),
        "summary": " ".join(text.split())[:120],
    }
