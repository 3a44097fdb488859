"""Prometheus metrics: what this process did (counters and histograms).
What the queues hold (gauges read from Redis when scraped) and the scrape
itself are router.web.prometheus's.

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
destination: router.queue.status), so every process reports the same values;
aggregate them with max(), not sum().
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

# No `_created` series per counter and histogram: they double the output
# and no dashboard of ours reads them.
disable_created_metrics()

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


def _incrementer(counter: Any) -> Callable[[], None]:
    """A labelled counter's inc() by one. Its value object's own inc, past
    the child's checks (a worker counts each message 3 times: prometheus-
    client's per-call checks cost more than the counting); the public
    call where that object is not there."""
    value = getattr(counter, "_value", None)
    return (lambda: value.inc(1)) if value is not None else counter.inc


def _observer(histogram: Any) -> Callable[[float], None]:
    """A labelled histogram's observe(): the bucket found by bisection
    instead of a scan, the sum and the bucket incremented in its own value
    objects (multiprocess mode's too); the public call where they are not there."""
    try:
        total, buckets = histogram._sum, histogram._buckets
        bounds = list(histogram._upper_bounds)  # (the last is +Inf)
    except AttributeError:
        return histogram.observe
    if len(buckets) != len(bounds):
        return histogram.observe

    def observe(amount: float) -> None:
        total.inc(amount)
        i = bisect.bisect_left(bounds, amount)
        if i < len(bounds) and amount <= bounds[i]:  # (NaN: no bucket, as observe())
            buckets[i].inc(1)

    return observe


class DeliveryMetrics:
    """The instruments of one destination, bound to their labels once."""

    OUTCOMES = ("ok", "failed", "dead", "blocked")

    def __init__(self, destination: str) -> None:
        self.attempts = {o: DELIVERIES.labels(destination, o) for o in self.OUTCOMES}
        self.duration = DELIVERY_DURATION.labels(destination)
        self.end_to_end = END_TO_END.labels(destination)
        self._count = {o: _incrementer(c) for o, c in self.attempts.items()}
        self._observe_duration = _observer(self.duration)
        self._observe_end_to_end = _observer(self.end_to_end)

    def attempted(self, outcome: str, seconds: float | None) -> None:
        """An attempt's outcome and how long it took; seconds None: a
        give-up without another attempt (dead or blocked, no duration)."""
        if not _enabled:
            return
        self._count[outcome]()
        if seconds is not None:
            self._observe_duration(seconds)

    def acknowledged(self, received_at_ms: int) -> None:
        if not _enabled:
            return
        self._observe_end_to_end(max(0.0, time.time() - received_at_ms / 1000))
