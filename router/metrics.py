"""Prometheus metrics: what this process did (counters and histograms) and
what the queues hold (gauges read from Redis when scraped).

The names and labels are a contract users build alerts and dashboards on:
the README ("Metrics") lists them, and a test checks the two agree.

Several processes. Counters and histograms count what this process did.
`router serve` / `router api` with ROUTER_PROCESSES > 1 run on one port and a
scrape reaches any one of them, so there the processes share a
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode; the CLI
makes one when it is not set) and every scrape adds up all of them.
Separate processes (api and worker containers, several hosts) are scraped
one by one and summed by Prometheus, as usual. The queue gauges are not
per process: they are read from Redis (at most once a second, O(1) per
destination: router.status), so every process reports the same values;
aggregate them with max(), not sum().
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.auth import BearerToken, bearer_token
from router.auth_throttle import FailedAuthThrottle, TooManyWrongTokens, client_key
from router.settings import Settings
from router.status import DestinationStatus, StatusReader

# No `_created` series per counter and histogram: they double the output
# and no dashboard of ours reads them.
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST

# The instruments live in their own registry, so a test or an embedding
# application's default registry never mixes with them.
REGISTRY = CollectorRegistry(auto_describe=True)

INGEST_REQUESTS = Counter(
    "router_ingest_requests",
    "Requests to ingest routes, by route path and HTTP status answered.",
    ["route", "status"],
    registry=REGISTRY,
)
UNROUTED = Counter(
    "router_messages_unrouted",
    "Messages accepted (200) and stored for no destination: no destination's `when:` "
    "filter matched them (on_no_match: accept), by route path.",
    ["route"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "router_deliveries",
    "Delivery attempts by outcome: ok (acknowledged), failed (will be retried), "
    "dead (dead-lettered), blocked (the key stopped until unblocked).",
    ["destination", "outcome"],
    registry=REGISTRY,
)
INGEST_ITEMS_SKIPPED = Counter(
    "router_ingest_items_skipped",
    "Malformed items an ingest format left out of a request it stored (the rest of it "
    "stored and answered 200), by route path and reason (e.g. message.from).",
    ["route", "reason"],
    registry=REGISTRY,
)
INGEST_DURATION = Histogram(
    "router_ingest_duration_seconds",
    "Time from an ingest request's handler start to its answer (body read, checks, "
    "the Redis write).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
DELIVERY_DURATION = Histogram(
    "router_delivery_duration_seconds",
    "Time of one delivery attempt: the destination's answer, or the failure.",
    ["destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
END_TO_END = Histogram(
    "router_end_to_end_seconds",
    "Time from a message's arrival at ingest to its acknowledgement by the destination "
    "(waiting, retries and backoffs included).",
    ["destination"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)

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


# ROUTER_METRICS=0 (switch_off) makes every instrument below a no-op: a
# process that nobody scrapes pays nothing for counting.
_enabled = True


def switch_off() -> None:
    """No counting in this process (ROUTER_METRICS=0); called before any
    handler or worker binds its instruments."""
    global _enabled
    _enabled = False


class IngestMetrics:
    """The instruments of one ingest route, bound to their labels once
    (a labels() lookup per request would cost more than the counting)."""

    def __init__(self, route: str) -> None:
        self._route = route
        self._requests: dict[int, Counter] = {}
        self._unrouted = UNROUTED.labels(route)

    def observe(self, status: int, started: float) -> None:
        if not _enabled:
            return
        INGEST_DURATION.observe(time.perf_counter() - started)
        counter = self._requests.get(status)
        if counter is None:
            counter = self._requests[status] = INGEST_REQUESTS.labels(self._route, str(status))
        counter.inc()

    def unrouted(self, messages: int = 1) -> None:
        """Messages stored for no destination (content routing)."""
        if _enabled and messages:
            self._unrouted.inc(messages)

    def skipped(self, reason: str) -> None:
        """An item the route's format left out (its reasons are few: no cache)."""
        if _enabled:
            INGEST_ITEMS_SKIPPED.labels(self._route, reason).inc()


class DeliveryMetrics:
    """The instruments of one destination, bound to their labels once."""

    OUTCOMES = ("ok", "failed", "dead", "blocked")

    def __init__(self, destination: str) -> None:
        self.attempts = {o: DELIVERIES.labels(destination, o) for o in self.OUTCOMES}
        self.duration = DELIVERY_DURATION.labels(destination)
        self.end_to_end = END_TO_END.labels(destination)

    def attempted(self, outcome: str, seconds: float | None) -> None:
        """An attempt's outcome and how long it took; seconds None: a
        give-up without another attempt (dead or blocked, no duration)."""
        if not _enabled:
            return
        self.attempts[outcome].inc()
        if seconds is not None:
            self.duration.observe(seconds)

    def acknowledged(self, received_at_ms: int) -> None:
        if not _enabled:
            return
        self.end_to_end.observe(max(0.0, time.time() - received_at_ms / 1000))


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
