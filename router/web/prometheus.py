"""GET /metrics: what a scrape answers. This process's instruments
(router.ops.metrics) and the queue gauges, read from Redis at the scrape
(at most once a second, O(1) per destination: router.queue.status), so
every process reports the same gauge values; aggregate them with max(),
not sum(). The API serves it (router.web.app); `router worker`, which has
no API port, serves it on ROUTER_METRICS_PORT (`served`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.config.settings import Settings
from router.http.auth import BearerToken, bearer_token
from router.http.throttle import FailedAuthThrottle, TooManyWrongTokens, client_key
from router.ops.metrics import REGISTRY
from router.queue.status import DestinationStatus, StatusReader

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Gauge name -> (help, the figure of a DestinationStatus).
QUEUE_GAUGES: dict[str, tuple[str, str]] = {
    "router_queue_messages": (
        "Messages stored and not yet acknowledged (in flight, waiting and blocked included).",
        "messages",
    ),
    "router_ready_keys": ("Ordering keys whose head message can be attempted now.", "ready"),
    "router_in_flight": ("Ordering keys being attempted now.", "in_flight"),
    "router_delayed_keys": ("Ordering keys waiting out a retry backoff.", "delayed"),
    "router_blocked_keys": ("Ordering keys stopped by on_exhausted: block.", "blocked"),
    "router_dead_letters": ("Dead-lettered messages.", "dead"),
    "router_oldest_message_age_seconds": (
        "Age of the oldest message not yet acknowledged (0 when there is none).",
        "oldest_age_seconds",
    ),
    "router_destination_paused": ("1 while the destination is paused.", "paused"),
    "router_destination_state": (
        "The destination's health (its circuit breaker): 0 up, 1 down (only probes go out), "
        "2 held by a Retry-After.",
        "health_code",
    ),
    "router_destination_orphaned": (
        "1 for a destination no longer in routes.yaml whose queue still holds messages.",
        "orphaned",
    ),
}


class _QueueGauges(Collector):
    """The queue gauges of one reading (None: Redis did not answer)."""

    def __init__(self, statuses: list[DestinationStatus] | None) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "router_redis_up", "1 when the queue gauges could be read from Redis at this scrape."
        )
        up.add_metric([], 0 if self._statuses is None else 1)
        yield up
        for name, (doc, field) in QUEUE_GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=["destination"])
            for s in self._statuses or []:
                family.add_metric([s.name], float(getattr(s, field) or 0))
            yield family


def exposition(statuses: list[DestinationStatus] | None, multiprocess_dir: str | None) -> bytes:
    """The text a scrape answers: this process's (or, in multiprocess mode,
    every process's) instruments, then the queue gauges."""
    if multiprocess_dir:
        instruments = CollectorRegistry()
        multiprocess.MultiProcessCollector(instruments)
    else:
        instruments = REGISTRY
    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(_QueueGauges(statuses))
    return generate_latest(instruments) + generate_latest(gauges)


def family_names() -> Iterable[str]:
    """Every metric family the router exposes, as a scrape names them."""
    yield "router_ingest_requests_total"
    yield "router_messages_unrouted_total"
    yield "router_ingest_items_skipped_total"
    yield "router_deliveries_total"
    yield "router_ingest_duration_seconds"
    yield "router_delivery_duration_seconds"
    yield "router_end_to_end_seconds"
    yield "router_redis_up"
    yield from QUEUE_GAUGES


@contextlib.asynccontextmanager
async def served(settings: Settings, port: int, status: StatusReader) -> AsyncIterator[None]:
    """GET /metrics (and /healthz) on `port` for `router worker`, which has
    no API port; the same text as the API's /metrics."""
    from aiohttp import web

    token = settings.metrics_token
    bearer = BearerToken(token, "ROUTER_METRICS_TOKEN", FailedAuthThrottle()) if token else None

    async def scrape(request: web.Request) -> web.Response:
        given = bearer_token(request.headers.get("Authorization"))
        client = client_key(request.remote)
        try:
            accepted = bearer is None or bearer.accepts(given, client, "/metrics")
        except TooManyWrongTokens as exc:
            return web.json_response(
                {"status": "error", "error": exc.message}, status=429, headers=exc.headers
            )
        if not accepted:
            return web.json_response(
                {
                    "status": "error",
                    "error": "/metrics need Authorization: Bearer <ROUTER_METRICS_TOKEN>",
                },
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        statuses = await status.read_or_none(settings.ingest_deadline)
        body = exposition(statuses, settings.metrics_multiproc_dir)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, port).start()
        yield
    finally:
        await runner.cleanup()
