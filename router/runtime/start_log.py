"""What a starting process says about where messages go and what it serves:
one line per destination (plugin, target host, ordering key, max_in_flight)
and one line of endpoints, logged by `router serve`, `api` and `worker` at
start; after a reload, the lines of the destinations it added or changed.

A destination's URL may carry a token in its path (`/bot<token>/`), its
query or its user part: only its host[:port] is shown.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from router.config import Config, Destination
from router.config.settings import Settings


def target_host(url: object) -> str | None:
    """host[:port] of a URL, nothing else of it; None when it has none."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port out of range, a bad IPv6 literal
        return None
    if not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def destination_line(destination: Destination) -> str:
    s = destination.settings
    host = target_host(getattr(destination.options, "url", None))
    return (
        f"destination {destination.name}: plugin {s.plugin}"
        + (f" -> {host}" if host else "")
        + f", ordered by {s.ordering_key or '(one global order)'}"
        + f", max_in_flight {s.max_in_flight}"
        + (f", {s.shards} shards" if s.shards > 1 else "")
    )


def destination_lines(config: Config, names: list[str] | None = None) -> list[str]:
    """The line of each destination (of `names` only, when given)."""
    return [
        destination_line(d)
        for name, d in config.destinations.items()
        if names is None or name in names
    ]


def _switch(on: bool, what: str, why_off: str) -> str:
    return f"{what} on" if on else f"{what} off ({why_off})"


def endpoints_line(settings: Settings, config: Config, http: bool) -> str:
    """What the process serves: with `http` (serve, api) its port's
    endpoints, else (worker) its metrics port; and whether it delivers."""
    delivery = (
        "delivery workers on"
        if settings.run_workers or not http
        else "delivery workers off (run router worker)"
    )
    if not http:
        if not settings.metrics:
            metrics = "/metrics off (ROUTER_METRICS=0)"
        elif settings.metrics_port is None:
            metrics = "no HTTP port (/metrics: set ROUTER_METRICS_PORT)"
        else:
            metrics = f"/metrics on http://{settings.host}:{settings.metrics_port}"
        return f"{delivery}; {metrics}"
    routes = ", ".join(
        r.path + (" (GET verify too)" if r.format is not None and r.format.verify else "")
        for r in config.routes
    )
    metrics = _switch(settings.metrics, "/metrics", "ROUTER_METRICS=0")
    if settings.metrics and settings.metrics_token:
        metrics += " (with ROUTER_METRICS_TOKEN)"
    admin = bool(settings.admin_token)
    return (
        f"serving http://{settings.host}:{settings.port}: ingest POST {routes or '(no routes)'}; "
        f"/healthz, /readyz on; {metrics}; "
        f"{_switch(admin, '/admin', 'no ROUTER_ADMIN_TOKEN')}; "
        f"{_switch(admin, '/ui', 'no ROUTER_ADMIN_TOKEN')}; {delivery}"
    )
