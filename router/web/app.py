"""The HTTP side: ingest routes from routes.yaml, health, admin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException, InternalServerException
from litestar.handlers import HTTPRouteHandler
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.config import Config, route_key
from router.config.loading import load
from router.config.settings import Settings
from router.http import raw
from router.http.auth import BearerToken, client_of
from router.http.deadline import TwoPhaseDeadline
from router.http.errors import EXCEPTION_HANDLERS, ApiError, outage_log, redis_cause
from router.http.lifespan_failure import RAW_POST, RouterApp
from router.ingest import tracecontext
from router.ingest.route import IngestRoute, Routed, store_format
from router.ops import logs, metrics, tracing
from router.ops.cancelling import cancel_and_wait
from router.ops.metrics import IngestMetrics
from router.plugin.formats import SkippedItem
from router.queue import shard_layout
from router.queue.batching import batcher
from router.queue.enqueue import EnqueueResult
from router.queue.sharded_queue import ShardedQueue
from router.redis import memory as redis_memory
from router.redis import mode as redis_mode
from router.runtime.heap import freeze_startup_heap
from router.runtime.reload import IngestSwitch
from router.runtime.wiring import Runtime
from router.web import prometheus
from router.web.admin import admin_handlers
from router.web.openapi import document as docs
from router.web.openapi.health import health_operation
from router.web.openapi.ingest import ingest_operation, verify_operation
from router.web.state import RouterState
from router.web.ui.dashboard import ui_plugins

if TYPE_CHECKING:
    from router.ops.otel_spans import IngestSpan

log = logging.getLogger("router.api")

_json = msgspec.json.Encoder()

CLOSE = raw.CLOSE  # answers after which the connection cannot carry another request
JSON = "application/json"


def _ingest_handler(state: RouterState, path: str) -> list[HTTPRouteHandler]:
    """The handler of route `path`; it serves the route as the running
    routes.yaml defines it (state.ingest, switched by a reload), and 404 once
    a reload removed it (Litestar cannot unregister a handler)."""
    read_timeout = state.settings.header_timeout
    deadline = state.settings.ingest_deadline
    key = route_key(path)
    first = state.ingest[key]

    def _unavailable(ingest: IngestRoute, exc: BaseException) -> ApiError:
        error = ingest.unavailable(exc, deadline)
        outage_log.warning(error.cause, f"ingest {ingest.route.path}")
        return error

    metrics = IngestMetrics(path)

    async def observed(
        headers: Mapping[str, str], client: str, read: Callable[[int], Awaitable[bytes]]
    ) -> tuple[bytes, str]:
        """The answer to a POST (its body and media type), counted and traced."""
        started = time.perf_counter()
        status = 500
        tracer = tracing.active
        span = None
        if tracer is not None:  # (tracing off: this check is all it costs)
            span = tracer.ingest(path, *tracecontext.from_headers(headers), client)
        try:
            answer = await _store(headers, client, read, span)
            status = 200
            return answer
        except ApiError as exc:
            status = exc.status
            raise
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            metrics.observe(status, started)
            if span is not None:
                span.end(status)

    async def _store(
        headers: Mapping[str, str],
        client: str,
        read: Callable[[int], Awaitable[bytes]],
        span: IngestSpan | None,
    ) -> tuple[bytes, str]:
        ingest = state.ingest.get(key)
        if ingest is None:
            raise ApiError(404, "no route for this path")
        _, scripts = state.require_redis()
        body: bytes | None = None
        try:
            # One timer for the two phases (a profile showed each costs,
            # asyncio.timeout's more than this one: router.http.deadline): a
            # client trickling its body must not hold the request forever,
            # and one deadline covers every Redis step of the request,
            # whatever the pool or the connection does (a frozen Redis
            # accepts connections and never answers).
            with TwoPhaseDeadline(asyncio.get_running_loop(), read_timeout, deadline) as timer:
                body = await read(ingest.route.settings.max_body)
                timer.next_phase()
                if ingest.format is not None:
                    results, skipped = await store_format(
                        ingest,
                        scripts,
                        body,
                        headers,
                        client,
                        state.limiters.get(ingest.route.path),
                        state.batcher,
                        state.batcher_many,
                        state.batcher_keep,
                    )
                    metrics.unrouted(sum(1 for r in results if _unrouted(r)))
                    if span is not None:
                        _traced(span, results)
                    _log_skipped(path, skipped, metrics)
                    if ingest.format.answer is not None:  # what the service expects back
                        own = ingest.format.answer(ingest.route.format_options)
                        return own.body, own.media_type
                    return _stored_many(results, skipped), JSON
                result = await ingest.store(
                    scripts,
                    body,
                    headers,
                    client,
                    state.limiters.get(ingest.route.path),
                    state.batcher,
                )
        except InternalServerException:
            # The client went away mid-body: nothing to store, nobody to answer.
            raise ApiError(400, "incomplete request body", CLOSE) from None
        except TimeoutError as exc:
            if body is None:
                # The rest of the body may still come: the connection cannot
                # carry another request, so say it closes.
                raise ApiError(
                    408, f"request body not received within {read_timeout:g}s", CLOSE
                ) from None
            raise _unavailable(ingest, exc) from None
        except RedisError as exc:
            raise _unavailable(ingest, exc) from None
        if span is not None:
            _traced(span, [result])
        if isinstance(result, Routed):  # a route with `when:` filters
            if result.result is None:
                metrics.unrouted()
            return _json.encode({"status": "ok", **result.answer()}), JSON
        return (
            _json.encode({"status": "ok", "id": result.id, "duplicate": result.duplicate}),
            JSON,
        )

    async def store_message(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Through Litestar: a POST the raw handler does not take (a
        trailing slash, a root path)."""
        client = request.client.host if request.client else "unknown"
        answer, media_type = await observed(
            request.headers, client, lambda limit: _read_body(request, limit)
        )
        return Response(answer, media_type=media_type)

    async def store_raw(scope: raw.Scope, receive: raw.Receive, send: raw.Send) -> None:
        """The same, as plain ASGI (router.http.raw): the usual way in."""
        headers = raw.headers_of(scope)
        try:
            answer, media_type = await observed(
                headers, raw.client_of(scope), lambda limit: raw.read_body(receive, headers, limit)
            )
        except Exception as exc:
            await raw.send_error(scope, receive, send, exc)
            return
        await raw.send_answer(send, answer, media_type)

    return [
        *_verify_handlers(state, path),
        post(
            path,
            status_code=200,
            # The route's max_body is applied by _read_body, as the running
            # routes.yaml says (a reload may change it).
            request_max_body_size=None,
            name=f"ingest:{path}",
            # Unique per route (paths are): Litestar's generated ids collide for
            # paths like /a-b and /a/b, which broke /schema.
            operation_id=f"store_message {path}",
            summary=(
                f"Store a message for {', '.join(d.name for d in first.route.destinations)}"
                if first.format is None
                else f"Store the messages of a {first.format.name} webhook"
            ),
            # As the route was when the handler was made: a reload that changes
            # it does not rewrite the document (a route it adds gets its own).
            operation_class=ingest_operation(first, state.settings),  # body, headers, answers
            opt={RAW_POST: store_raw},
        )(store_message),
    ]


def _traced(span: IngestSpan, results: Sequence[EnqueueResult | Routed]) -> None:
    """The messages a request stored (or found stored), on its span."""
    stored = [r.result if isinstance(r, Routed) else r for r in results]
    found = [r for r in stored if r is not None]
    span.stored([r.id for r in found], sum(1 for r in found if r.duplicate))


def _unrouted(result: EnqueueResult | Routed) -> bool:
    return isinstance(result, Routed) and result.result is None


def _stored_many(results: Sequence[EnqueueResult | Routed], skipped: list[SkippedItem]) -> bytes:
    """The answer to a format route's request: each message stored (or a
    duplicate), in the request's order, and the items the format left out;
    on a route with `when:` filters each names its destinations (none:
    stored nowhere, id null)."""
    messages = [
        r.answer() if isinstance(r, Routed) else {"id": r.id, "duplicate": r.duplicate}
        for r in results
    ]
    answer = {
        "status": "ok",
        "messages": messages,
        "skipped": len(skipped),
        "problems": [s.problem for s in skipped],
    }
    return _json.encode(answer)


def _log_skipped(path: str, skipped: list[SkippedItem], metrics: IngestMetrics) -> None:
    """Each item a format left out of a stored request, once: logged with
    what was wrong, and counted by reason (it is kept: router.queue.unroutable).
    Only after the store: a request answered 503 and redelivered is not
    logged twice."""
    for item in skipped:
        metrics.skipped(item.reason)
        log.warning(
            "ingest %s: skipped a malformed item (%s), stored the rest; kept it for "
            "`router unroutable`: %s",
            path,
            item.reason,
            item.problem,
            extra=logs.fields(route=path, reason=item.reason, error=item.problem),
        )


def _verify_handlers(state: RouterState, path: str) -> list[HTTPRouteHandler]:
    """GET on a route whose format has a handshake (WhatsApp's subscription
    check); registered once a route needs it (at start or by a reload) and
    answering as the running routes.yaml defines the route: 405 once it no
    longer has one, as a route without a GET answers."""
    key = route_key(path)
    route = state.ingest[key].route
    if route.format is None or route.format.verify is None:
        return []

    async def verify(request: Request[Any, Any, Any]) -> Response[bytes]:
        ingest = state.ingest.get(key)
        if ingest is None:
            raise ApiError(404, "no route for this path")
        fmt = ingest.format
        if fmt is None or fmt.verify is None:
            raise ApiError(405, "method not allowed for this path", {"Allow": "POST"})
        answer = fmt.verify(ingest.route.format_options, request.query_params)
        # The answer echoes what the caller sent: never sniffed as a page.
        return Response(
            answer.encode(), media_type="text/plain", headers={"X-Content-Type-Options": "nosniff"}
        )

    return [
        get(
            path,
            name=f"verify:{path}",
            operation_id=f"verify {path}",
            # As the route was when the handler was made (as the POST's).
            operation_class=verify_operation(state.ingest[key]),
        )(verify)
    ]


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes: up front from
    Content-Length, else while it streams in (never held whole in memory)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise raw.too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise raw.too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _health_handlers(state: RouterState) -> list[HTTPRouteHandler]:
    @get("/healthz", sync_to_thread=False, operation_class=health_operation("healthz"))
    def healthz() -> dict[str, str]:
        """Alive: the process answers HTTP."""
        return {"status": "ok"}

    @get("/readyz", operation_class=health_operation("readyz"))
    async def readyz() -> Response[dict[str, Any]]:
        """Ready: Redis answers (`redis_mode` says single or cluster), is not out of memory and
        does not evict queued messages, with ROUTER_REDIS_WAIT its replicas are
        in sync (router.ingest.writable), and the delivery workers run (when this
        process runs them)."""
        checks: dict[str, Any] = {}
        warnings: list[str] = []
        try:
            redis, _ = state.require_redis()
            async with asyncio.timeout(state.settings.ingest_deadline):
                problem = await _redis_problem(redis, state, warnings)
        except ApiError as exc:
            problem = exc.message
        except (RedisError, OSError, TimeoutError) as exc:
            problem = redis_cause(exc, state.settings.ingest_deadline)
        checks["redis"] = problem or "ok"
        if state.redis is not None:
            checks["redis_mode"] = redis_mode.mode(state.redis)
        if warnings:
            checks["warnings"] = warnings
        ok = problem is None
        if state.settings.run_workers:
            running = state.delivering
            checks["workers"] = "running" if running else "stopped"
            ok = ok and running
        return Response(
            {"status": "ready" if ok else "not ready", **checks}, status_code=200 if ok else 503
        )

    return [healthz, readyz]


def _metrics_handlers(state: RouterState) -> list[HTTPRouteHandler]:
    if not state.settings.metrics:
        return []
    token = state.settings.metrics_token
    bearer = BearerToken(token, "ROUTER_METRICS_TOKEN", state.wrong_tokens) if token else None

    @get("/metrics", include_in_schema=False)
    async def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Prometheus metrics (router.web.prometheus)."""
        if bearer is not None:
            bearer.check(request.headers.get("authorization"), client_of(request), "/metrics")
        statuses = None
        if state.status is not None:
            statuses = await state.status.read_or_none(state.settings.ingest_deadline)
        body = prometheus.exposition(statuses, state.settings.metrics_multiproc_dir)
        return Response(body, media_type=prometheus.CONTENT_TYPE)

    return [scrape]


async def _redis_problem(redis: Redis, state: RouterState, warnings: list[str]) -> str | None:
    """Why Redis cannot take messages now, or None; `warnings` gets what
    limits it without stopping it."""
    memory = await redis_memory.read(redis)  # doubles as the ping
    if memory is not None:  # None: INFO not allowed
        refusal = redis_memory.refusal(memory, state.settings.allow_eviction)
        if refusal is not None:
            return refusal
        if memory.full:
            return redis_memory.out_of_memory(memory)
    if not redis_mode.is_cluster(redis) and await redis_mode.is_cluster_node(redis):
        return redis_mode.LATE_CLUSTER
    replicas = await state.writes.problem(redis)
    if replicas is not None:
        if not redis_mode.is_cluster(redis) or not state.writes.writable:
            # One Redis: every write waits out the deadline. Not writable
            # yet (a Cluster just formed): the first writes would.
            return replicas
        # On a Cluster once writable, only that master's slots wait (a
        # failover): the process still takes the others' (a balancer
        # dropping it would stop them all). router.ingest.writable
        warnings.append(replicas)
    # The start-up check of the shard counts, again: it is skipped when
    # Redis did not answer at start.
    return await shard_layout.refusal(redis, state.config.destinations.values(), record=False)


async def _count_queues(state: RouterState) -> None:
    """Count the queues stored by a version without counts, before this
    process stores anything (recount.lua; workers do it too, for `router
    worker` alone). Redis away now: the workers' loops do it once it is back."""
    redis, scripts = state.require_redis()
    try:
        async with asyncio.timeout(state.settings.ingest_deadline):
            for d in state.config.destinations.values():
                await ShardedQueue.of(redis, scripts, d).recount()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("queue counts not checked at start: %s", exc or "timeout")


def _start_batchers(state: RouterState) -> None:
    """Ingest's group commit (router.queue.batching), when on. WAIT must follow
    the writes on their connection: the batcher's pipelines carry it, so
    ROUTER_REDIS_WAIT keeps the batcher on."""
    settings = state.settings
    if not (settings.ingest_batching or settings.redis_wait):
        return
    redis, scripts = state.require_redis()
    state.batcher, state.batcher_many, state.batcher_keep = (
        batcher(
            redis, script, replicas=settings.redis_wait, replica_timeout=settings.ingest_deadline
        )
        # One message; the several of one request (an ingest format's);
        # unroutable items kept.
        for script in (scripts.enqueue, scripts.enqueue_many, scripts.keep_unroutable)
    )


def create_app(
    settings: Settings,
    config: Config | None = None,
    on_started: Callable[[RouterState], Coroutine[Any, Any, None]] | None = None,
) -> Litestar:
    """Build the app; its lifespan runs the process's Runtime (Redis, and
    the delivery workers when settings.run_workers: router.runtime.wiring)."""
    if config is None:
        config = load(settings.routes_file)
    state = RouterState(settings, config)
    if settings.redis_url is None:
        raise ValueError("create_app needs settings.redis_url (the CLI starts the embedded server)")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with Runtime.connected(settings, config) as runtime:
            state.runtime = runtime
            await _count_queues(state)
            _start_batchers(state)
            state.build_limiters()
            # A reload (router.runtime.reload) reaches the routes through `ingest`.
            ingest = IngestSwitch(app, state, lambda path: _ingest_handler(state, path))
            async with (
                runtime.running(deliver=settings.run_workers, ingest=ingest),
                contextlib.AsyncExitStack() as stack,
            ):
                if settings.redis_wait:  # logs when writes can be answered
                    watch = asyncio.create_task(
                        state.writes.watch(runtime.redis), name="redis-writable"
                    )
                    stack.push_async_callback(cancel_and_wait, watch)
                if on_started is not None:
                    await on_started(state)
                freeze_startup_heap()  # Litestar's routes and schemas too
                yield

    handlers = [h for r in config.routes for h in _ingest_handler(state, r.path)]
    handlers += _health_handlers(state)
    handlers += _metrics_handlers(state)
    return RouterApp(  # Litestar, its start-up failures in one line
        route_handlers=[*handlers, *admin_handlers(state)],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        plugins=ui_plugins(state),  # the dashboard, /ui: only with ROUTER_ADMIN_TOKEN
        openapi_config=docs.openapi_config(config, admin=bool(settings.admin_token)),
        logging_config=None,  # the CLI configures logging once for the process
        debug=False,
    )


def app_from_env() -> Litestar:
    """Factory for `uvicorn --factory` (`router serve --reload`, and each
    server process of ROUTER_PROCESSES > 1)."""
    # A spawned server process starts with SIGHUP at its default (end the
    # process): ignored from here until its Reloader handles it. (One
    # arriving in the moment before this line, while the interpreter
    # starts, still ends the process; uvicorn's supervisor starts another.)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = Settings.from_env()
    logs.setup(settings.log_level, settings.log_format)
    if not settings.metrics:
        metrics.switch_off()
    return create_app(settings)
