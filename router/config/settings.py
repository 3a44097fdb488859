"""Process settings from the environment: each declared once, with its
variable, default and meaning, and validated at start like routes.yaml.

A bad value refuses to start (and makes `router check` fail) with one line
naming the variable, the value and what is allowed, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from router.config import durations
from router.ops.redaction import shown_redis_url
from router.plugin.client import DeliveryTransport


class SettingsError(Exception):
    """A variable of the environment has a value the router cannot use."""


# -- parsers: text of the variable -> value, or ValueError("what is allowed") --

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _text(value: str) -> str:
    return value


# A token shorter than this starts with a warning: guessable, even throttled.
MIN_TOKEN_LENGTH = 16


def _token(value: str) -> str | None:
    """A bearer token: unset or empty is off; only spaces, or spaces or a
    newline around it (a file's last newline), would lock everyone out,
    since HTTP strips them from a header: refused."""
    if not value:
        return None
    if not value.strip():
        raise ValueError(
            "a token, not only spaces: set a long random one (openssl rand -hex 32) "
            "or leave it unset"
        )
    if value != value.strip():
        raise ValueError(
            "a token without spaces or a newline around it (HTTP strips them, so it "
            "could never match): remove them"
        )
    return value


def _writable_directory(value: str) -> str | None:
    """A directory that exists and this user can write (prometheus-client
    writes a file per process there at import, a missing one a traceback)."""
    if not value:
        return None
    if not os.path.isdir(value):
        raise ValueError("an existing directory: create it (mkdir -p) or unset the variable")
    if not os.access(value, os.W_OK | os.X_OK):
        raise ValueError("a directory this user can write: fix its permissions or unset it")
    return value


def _flag(value: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("write 1/true/yes/on or 0/false/no/off")


def _port(value: str) -> int:
    try:
        port = int(value.strip())
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ValueError("a port is a whole number from 1 to 65535")
    return port


def _count(value: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError("a whole number of at least 1")
    return n


def _replicas(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("a whole number of replicas, 0 or more") from None
    if not 0 <= number <= 16:
        raise ValueError("a whole number of replicas from 0 to 16")
    return number


# The units a variable's duration may have (router.config.durations): none of its
# durations is counted in hours.
_SECONDS_UNITS = ("ms", "s", "m")

# Longest duration of a variable: past it a grace, deadline or poll is in
# effect never (1e17 s passed before), which no setting here means to say.
MAX_SECONDS = 86400.0


def _seconds(value: str) -> float:
    seconds = durations.seconds(value, _SECONDS_UNITS)
    if seconds is None:
        raise ValueError("seconds as a number or like 500ms, 10s, 1m")
    if seconds > MAX_SECONDS:
        raise ValueError("at most 1 day (86400 seconds)")
    return seconds


def _positive_seconds(value: str) -> float:
    seconds = _seconds(value)
    if seconds <= 0:
        raise ValueError("more than 0 seconds, as a number or like 500ms, 10s, 1m")
    return seconds


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        text = value.strip().lower()
        if text not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return text

    return parse


def _redis_url(value: str) -> str | None:
    if not value:
        return None
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a URL starting with redis://, rediss:// or unix://")
    return value


class _Missing(ValueError):
    """A value that is fine, in an environment that lacks what it needs:
    said as is, not as what the variable allows."""


# The OpenTelemetry packages of the `otel` extra (router.ops.tracing).
OTEL_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
OTEL_FIX = "pip install 'message-router[otel]'"


def _otel_installed() -> bool:
    """Whether the `otel` extra is installed, by looking (find_spec), not
    importing: with it missing, nothing of OpenTelemetry is loaded."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None for name in OTEL_MODULES)
    except ModuleNotFoundError:  # a parent package missing
        return False


def _otlp_endpoint(value: str) -> str | None:
    """An OTLP/HTTP endpoint: unset or empty is off (no tracing); set, the
    `otel` extra must be installed, or the router refuses to start."""
    if not value.strip():
        return None
    if not value.strip().startswith(("http://", "https://")):
        raise ValueError("a URL starting with http:// or https:// (OTLP over HTTP)")
    if not _otel_installed():
        raise _Missing(
            f"tracing is on but OpenTelemetry is not installed: {OTEL_FIX} (or unset the variable)"
        )
    return value.strip()


def _service_name(value: str) -> str:
    if not value.strip():
        raise ValueError("a service name, not empty")
    return value.strip()


def _env(
    name: str,
    parse: Callable[[str], Any],
    doc: str,
    default: Any,
    secret: bool = False,
    shown: Callable[[str], str] = lambda raw: raw,
) -> Any:
    """A field read from environment variable `name`; `doc` is its meaning
    (the README's Environment table says the same). A `secret`'s value is
    never shown in an error; another's is shown as `shown` writes it."""
    return field(
        default=default,
        metadata={"env": name, "parse": parse, "doc": doc, "secret": secret, "shown": shown},
    )


# What sends deliveries under the httpx client plugins get (router.plugin.client).


@dataclass(frozen=True)
class Settings:
    routes_file: str = _env("ROUTES_FILE", _text, "the routes file", "routes.yaml")
    redis_url: str | None = _env(
        "REDIS_URL",
        _redis_url,
        "Redis to use; unset: `router serve` embeds one",
        None,
        shown=shown_redis_url,  # its password never
    )
    data_dir: str = _env("ROUTER_DATA_DIR", _text, "data directory of the embedded server", "data")
    host: str = _env("HOST", _text, "address the API listens on", "0.0.0.0")
    port: int = _env("PORT", _port, "port the API listens on", 3000)
    log_level: str = _env(
        "LOG_LEVEL",
        _choice("debug", "info", "warning", "error"),
        "log level; info logs one line per delivery attempt, warning only failures",
        "info",
    )
    log_format: str = _env(
        "LOG_FORMAT",
        _choice("console", "json"),
        "console: one readable line per record; json: one JSON object per line",
        "console",
    )
    metrics: bool = _env(
        "ROUTER_METRICS",
        _flag,
        "0 turns off GET /metrics (Prometheus) and the counting behind it",
        True,
    )
    metrics_token: str | None = _env(
        "ROUTER_METRICS_TOKEN",
        _token,
        "bearer token GET /metrics then requires; unset: open",
        None,
        secret=True,
    )
    metrics_multiproc_dir: str | None = _env(
        "PROMETHEUS_MULTIPROC_DIR",
        _writable_directory,
        "prometheus-client's multiprocess directory: processes sharing it are added up in "
        "each scrape; `router serve`/`api` with ROUTER_PROCESSES > 1 make one when unset",
        None,
    )
    metrics_port: int | None = _env(
        "ROUTER_METRICS_PORT",
        _port,
        "port on which `router worker` serves GET /metrics (it has no API port); unset: none",
        None,
    )
    shutdown_grace: float = _env(
        "ROUTER_SHUTDOWN_GRACE",
        _seconds,
        "seconds in-flight deliveries get on SIGTERM before they are handed back",
        10.0,
    )
    embedded_fsync: str = _env(
        "ROUTER_APPENDFSYNC",
        _choice("always", "everysec", "no"),
        "appendfsync of the embedded server",
        "everysec",
    )
    admin_token: str | None = _env(
        "ROUTER_ADMIN_TOKEN",
        _token,
        "bearer token of the admin API; unset: off",
        None,
        secret=True,
    )
    run_workers: bool = _env("ROUTER_WORKERS", _flag, "0 runs `serve` without workers", True)
    allow_eviction: bool = _env(
        "ROUTER_ALLOW_EVICTION",
        _flag,
        "1 starts even on a Redis whose maxmemory-policy evicts any key (allkeys-*), "
        "accepting that queued messages can vanish",
        False,
    )
    ingest_deadline: float = _env(
        "ROUTER_INGEST_DEADLINE",
        _positive_seconds,
        "longest an ingest request waits for Redis before answering 503",
        2.0,
    )
    header_timeout: float = _env(
        "ROUTER_HEADER_TIMEOUT",
        _positive_seconds,
        "a client must send a request's headers (and its body) within this",
        10.0,
    )
    max_pending_connections: int = _env(
        "ROUTER_MAX_PENDING_CONNECTIONS",
        _count,
        "connections waiting for request headers (idle keep-alive included) beyond this: "
        "the longest-waiting one is answered 503 and closed to make room",
        2000,
    )

    processes: int = _env(
        "ROUTER_PROCESSES",
        _count,
        "server processes of `router serve` / `router api` on one port (uvicorn workers); "
        "under `serve` each also runs delivery workers",
        1,
    )
    http_parser: str = _env(
        "ROUTER_HTTP",
        _choice("auto", "httptools", "h11"),
        "uvicorn's HTTP parser; auto: httptools (measured fastest) when installed",
        "auto",
    )
    event_loop: str = _env(
        "ROUTER_LOOP",
        _choice("auto", "uvloop", "asyncio"),
        "event loop of every router process; auto: uvloop (measured fastest) when installed",
        "auto",
    )
    ingest_batching: bool = _env(
        "ROUTER_INGEST_BATCHING",
        _flag,
        "0 sends each ingest request's write alone instead of coalescing concurrent ones "
        "into one pipeline (each request is answered after its own write either way)",
        True,
    )
    redis_connections: int = _env(
        "ROUTER_REDIS_CONNECTIONS",
        _count,
        "most connections a process opens to Redis; a command past them waits for a free "
        "one (an ingest request within ROUTER_INGEST_DEADLINE)",
        100,
    )
    redis_wait: int = _env(
        "ROUTER_REDIS_WAIT",
        _replicas,
        "replicas that must acknowledge a message's write (Redis WAIT) before ingest "
        "answers 200; not in time within ROUTER_INGEST_DEADLINE: 503, stored unknown",
        0,
    )
    # (ruff cannot tell the Literal alias is an immutable str)
    delivery_transport: DeliveryTransport = _env(  # noqa: RUF009
        "ROUTER_DELIVERY_TRANSPORT",
        _choice(*get_args(DeliveryTransport)),
        "what moves the bytes of deliveries: h1 (the built-in sinks through the router's "
        "lean HTTP/1.1 client, plugins' httpx client over aiohttp; measured fastest), "
        "aiohttp (everything over aiohttp) or httpx (httpx's own transport)",
        "h1",
    )

    message_log: bool = _env(
        "ROUTER_MESSAGE_LOG",
        _flag,
        "0 turns the message log (each message's attempts, for `router trace`) off for every "
        "destination; on, each destination's `message_log:` settings apply",
        True,
    )
    routes_poll: float = _env(
        "ROUTER_ROUTES_POLL",
        _seconds,
        "how often each process looks at the routes file for changes and reloads it "
        "(router.runtime.reload); 0: only on SIGHUP",
        1.0,
    )
    reload_settle: float = _env(
        "ROUTER_RELOAD_SETTLE",
        _seconds,
        "a changed routes file is applied only once it has held still this long (the same "
        "size, mtime and content over several reads), so a file still being written is "
        "never applied half-written; 0: at the first look. SIGHUP applies at once",
        2.0,
    )

    otlp_endpoint: str | None = _env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        _otlp_endpoint,
        "OpenTelemetry collector (OTLP over HTTP, e.g. http://collector:4318): set, each ingest "
        "request and delivery attempt is a span sent to <url>/v1/traces (docs/tracing.md; "
        "needs the `otel` extra); unset: no tracing",
        None,
        shown=shown_redis_url,  # a password in the URL never
    )
    otlp_traces_endpoint: str | None = _env(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        _otlp_endpoint,
        "the traces endpoint itself (used as is, e.g. http://collector:4318/v1/traces); "
        "wins over OTEL_EXPORTER_OTLP_ENDPOINT",
        None,
        shown=shown_redis_url,
    )
    otel_service_name: str = _env(
        "OTEL_SERVICE_NAME",
        _service_name,
        "service.name of the router's spans (with tracing on); the other OTEL_* variables "
        "(sampler, headers, batching) are read by OpenTelemetry itself: docs/tracing.md",
        "message-router",
    )

    ca_file: str | None = _env(
        "SSL_CERT_FILE",
        lambda value: value or None,
        "CA certificates (PEM) that https destinations' certificates are checked against, "
        "instead of certifi's (read by httpx and OpenSSL; the commands that open destinations "
        "load it at start: router.plugin.tls.ca_file_problem)",
        None,
    )

    @property
    def traces_endpoint(self) -> str | None:
        """Where spans go (OTLP/HTTP), as OpenTelemetry reads its two
        variables; None: tracing off."""
        if self.otlp_traces_endpoint is not None:
            return self.otlp_traces_endpoint
        if self.otlp_endpoint is not None:
            return self.otlp_endpoint.removesuffix("/") + "/v1/traces"
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every declared variable; raise SettingsError (one line) on a
        value that cannot be used."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if name not in env:
                continue
            raw = env[name]
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                said = f"{exc}" if isinstance(exc, _Missing) else f"allowed: {exc}"
                if f.metadata["secret"]:
                    raise SettingsError(f"{name} (value not shown): {said}") from None
                # Cut inside the quotes (a long path is still read as one
                # value); repr escapes newlines: one line.
                raw = f.metadata["shown"](raw)
                shown = repr(raw if len(raw) <= 200 else raw[:200] + "…")
                raise SettingsError(f"{name}={shown}: {said}") from None
        return cls(**values)

    def warnings(self) -> list[str]:
        """What starts but should be fixed, one line each (logged at start)."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"] and value is not None and len(value) < MIN_TOKEN_LENGTH:
                out.append(
                    f"{f.metadata['env']} is {len(value)} characters long: a short token "
                    f"can be guessed; use at least {MIN_TOKEN_LENGTH} random characters "
                    "(openssl rand -hex 32)"
                )
        return out


def documented_variables() -> dict[str, str]:
    """Every variable the router reads -> its meaning."""
    return {f.metadata["env"]: f.metadata["doc"] for f in dataclasses.fields(Settings)}


def message_log_allowed(env: Mapping[str, str]) -> bool:
    """ROUTER_MESSAGE_LOG as routes.yaml's loading reads it (router.config.load):
    whether destinations may keep a message log. A value that is not a flag
    counts as on here: Settings.from_env refuses it at start, naming it."""
    try:
        return _flag(env.get("ROUTER_MESSAGE_LOG", "1"))
    except ValueError:
        return True
