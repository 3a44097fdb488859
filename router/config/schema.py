"""What routes.yaml holds: the value types (durations, sizes), the schema
its sections are converted into, the Config the checks build from it, and
ConfigError, what every problem with it raises."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from router.config import durations
from router.config.filters import Filter
from router.ops import redaction
from router.ops.redaction import Redactor
from router.plugin.formats import IngestFormat
from router.plugin.sinks import SinkType


class ConfigError(Exception):
    """A problem with the routes file, as one line naming where and what to fix."""


# -- value types ---------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


class Duration(float):
    """Seconds; written as a number of seconds or "500ms", "10s", "1m", "2h", "1d"."""


class Size(int):
    """Bytes; written as a number or "512KiB", "1MiB", "1MB"."""


def parse_duration(value: object) -> Duration:
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        if not math.isfinite(value):  # YAML .nan / .inf
            raise ValueError(f"invalid duration {value!r}: must be a finite number")
        return Duration(value)
    seconds = durations.seconds(str(value))
    if seconds is None:
        raise ValueError(
            f"invalid duration {value!r}: write seconds as a number "
            "or a string like 500ms, 10s, 1m, 2h"
        )
    return Duration(seconds)


def parse_size(value: object) -> Size:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Size(value)
    match = _SIZE.match(str(value))
    if not match or isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: write bytes as a number or like 512KiB, 1MiB")
    return Size(int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])


def dec_hook(typ: type, obj: Any) -> Any:
    if typ is Duration:
        return parse_duration(obj)
    if typ is Size:
        return parse_size(obj)
    raise NotImplementedError(f"unsupported type {typ}")


# -- the schema ------------------------------------------------------------

FieldType = Literal["string", "number", "integer", "boolean", "object", "array", "any"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # header: the request carries `secret` in `header` (default X-Router-Token).
    # hmac-sha256: `header` (default X-Hub-Signature-256) is "sha256=<hex>" of
    #   HMAC-SHA256(secret, raw body), as Meta (WhatsApp) and GitHub send it.
    # standard-webhooks: webhook-id / webhook-timestamp / webhook-signature
    #   headers per standardwebhooks.com; secret "whsec_<base64>".
    type: Literal["header", "hmac-sha256", "standard-webhooks"]
    secret: str
    header: str | None = None


class RateLimitSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    requests: int  # allowed per period and sender
    period: Duration = Duration(1.0)
    # Who a sender is: a body field (e.g. wa_id), or the client's address.
    per: str = "client"


class RetryPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    initial: Duration = Duration(1.0)
    factor: float = 2.0
    max_delay: Duration = Duration(60.0)
    jitter: float = 0.2  # each delay is drawn from ±jitter around its value
    max_attempts: int | None = None  # None: retry forever
    max_age: Duration | None = None  # None: retry forever
    # What happens when max_attempts/max_age run out: the message moves to
    # the dead-letter list and its key goes on (dead_letter), or it stays at
    # the head and only its own key stops until an operator unblocks it (block).
    on_exhausted: Literal["dead_letter", "block"] = "dead_letter"


DEFAULT_IGNORE_STATUSES = ("400-407", "409-424", "426-428", "430-499")


class CircuitBreakerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Destination health (docs/destination-health.md): when attempts fail
    on `failing_keys` different ordering keys within `window` with no success
    between them, the destination is down: nothing is attempted but one probe
    per probe interval; the first success resumes every conversation at once.
    A Retry-After from the destination holds all of it that long."""

    # None: the plugin's default (on for the built-in chatbot and http).
    enabled: bool | None = None
    failing_keys: int = 5
    window: Duration = Duration(10.0)
    # The first probe goes out this long after the destination went down;
    # each failed probe doubles the wait, up to probe_interval_max.
    probe_interval: Duration = Duration(1.0)
    probe_interval_max: Duration = Duration(3.0)
    # Longest a Retry-After holds the whole destination (longer asks are cut).
    max_hold: Duration = Duration(300.0)
    # HTTP answers that blame the message, not the destination: retried as
    # any failure, never counted toward opening (a bot's 422 "malformed" says
    # nothing about the bot). Every 4xx but 408 (timeout), 425 (too early)
    # and 429 (too many requests), which are the destination's state.
    ignore_statuses: tuple[int | str, ...] = DEFAULT_IGNORE_STATUSES


class OutboundRateLimit(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A destination's `rate_limit`: requests started per period, across
    all processes (router.queue.outbound_rate). Not a route's RateLimitSettings,
    which refuses senders at ingest."""

    requests: int
    period: Duration = Duration(1.0)
    # Starts that may go at once after a quiet time (then one every
    # period / requests). 2 by default: one start of slack, so a worker
    # that wakes a few ms late catches up instead of losing the slot (with
    # 1, 3 workers reached 90 % of 80/s; with 2, 100 %: docs/rate-limits.md).
    burst: int = 2


# Most shards of one destination: far more than masters in any cluster.
MAX_SHARDS = 1024

# Most of a destination's answer the message log keeps per attempt: what the
# built-in HTTP sink reads of it (router.plugin.MAX_ANSWER_BYTES).
MAX_LOGGED_RESPONSE = 64 * 1024


class MessageLogSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A destination's `message_log`: each message's story there (every
    attempt, its outcome and the start of the destination's answer), kept
    in Redis for `router trace`, `router messages`, the admin API and the
    dashboard (docs/message-log.md). ROUTER_MESSAGE_LOG=0 turns it off for
    every destination."""

    enabled: bool = True
    # Stories kept per destination, the oldest dropped first...
    max_messages: int = 10_000
    # ...and none kept longer than this after its message arrived.
    max_age: Duration = Duration(7 * 24 * 3600)
    # The start of the destination's answer kept per attempt (secrets starred).
    response_bytes: Size = Size(4096)


# Coalescing's bounds: a window waits this long at most, a group holds this
# many messages at most (each one request; README "Delivery semantics").
MAX_COALESCE_WINDOW = 60.0
MAX_COALESCED = 1000


class CoalesceSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A destination's `coalesce`: the messages of one conversation (ordering
    key) waiting together go as one request, a JSON array of them (README
    "Delivery semantics"). A conversation's first message waits `window`
    after its arrival for others to join it, unless `max_messages` are
    already waiting."""

    window: Duration = Duration(1.0)
    max_messages: int = 10


class DestinationSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The router's own fields of a destination; the rest go to its plugin."""

    plugin: str
    ordering_key: str | None = None  # a message field; None: one global order
    max_in_flight: int = 16
    # Hash tags the destination's lanes are spread over (router.queue.keys): more
    # than one spreads a destination over a Redis Cluster's masters.
    shards: int = 1
    timeout: Duration = Duration(10.0)
    lease: Duration = Duration(30.0)
    retry: RetryPolicy = RetryPolicy()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    rate_limit: OutboundRateLimit | None = None  # None: as fast as max_in_flight allows
    message_log: MessageLogSettings = MessageLogSettings()
    # None: one request per message (the default).
    coalesce: CoalesceSettings | None = None


ROUTER_DESTINATION_FIELDS = set(DestinationSettings.__struct_fields__)


class RouteDestination(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A route's destination written as a mapping: its name and the filter
    a message must match to be stored for it (router.config.filters); no `when`:
    every message, as a destination written by its name alone."""

    name: str
    # UNSET: no `when:` (every message); an explicit null is refused.
    when: Any = msgspec.UNSET


class RouteSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    path: str
    # Names, or {name, when} mappings (content routing: docs/content-routing.md).
    destinations: list[str | RouteDestination]
    # Required fields of the message body and their JSON types.
    fields: dict[str, FieldType] = {}
    max_body: Size = Size(1024 * 1024)
    max_depth: int = 32  # JSON nesting deeper than this is refused
    # Dedup: a body field holding the sender's message id (the
    # Idempotency-Key header is always honoured too), and how long ids are kept.
    id_field: str | None = None
    dedup_ttl: Duration = Duration(24 * 3600)
    # Longest string value anywhere in the body (characters); None: no limit
    # beyond max_body.
    max_string_length: int | None = None
    auth: AuthSettings | None = None
    rate_limit: RateLimitSettings | None = None
    # How requests are read: None, one JSON object per POST; or a format an
    # ingest plugin provides (`router plugins` lists them), e.g. whatsapp,
    # with its options (router.plugin.formats).
    format: str | None = None
    format_options: dict[str, Any] = {}
    # A message that no destination's `when:` matches: stored nowhere and
    # answered 200 (accept, counted), or refused with 422 (reject).
    on_no_match: Literal["accept", "reject"] = "accept"

    @property
    def destination_names(self) -> list[str]:
        return [d if isinstance(d, str) else d.name for d in self.destinations]


class RawConfig(msgspec.Struct, forbid_unknown_fields=True):
    routes: list[RouteSettings]
    destinations: dict[str, Any]  # each checked by load_config, naming the destination


@dataclass(frozen=True)
class Destination:
    name: str
    settings: DestinationSettings
    sink_type: SinkType
    options: Any  # an instance of sink_type.options
    # Stars its secrets out of failure reasons (router.ops.redaction).
    redactor: Redactor = field(default=redaction.NOTHING, compare=False, repr=False)
    # Options as written where a ${VAR} was expanded, by their path below
    # the destination (("url",)): what `router check` shows.
    written: dict[tuple[str | int, ...], str] = field(default_factory=dict, compare=False)
    # False when ROUTER_MESSAGE_LOG=0 turned the message log off everywhere.
    log_allowed: bool = True

    @property
    def message_log(self) -> MessageLogSettings | None:
        """The destination's message log settings; None while it is off."""
        log = self.settings.message_log
        return log if log.enabled and self.log_allowed else None

    @property
    def ordering_key(self) -> str | None:
        return self.settings.ordering_key

    @property
    def shown_url(self) -> str | None:
        """The plugin's `url` option as routes.yaml writes it (`${VAR}`s
        unexpanded, a password as ***), for `router check`; None without one."""
        url = getattr(self.options, "url", None)
        if not isinstance(url, str):
            return None
        return redaction.shown_url(self.written.get(("url",), url))

    @property
    def circuit_breaker(self) -> bool:
        """Whether the circuit breaker (and the Retry-After hold) is on:
        routes.yaml's `circuit_breaker.enabled`, else the plugin's default."""
        enabled = self.settings.circuit_breaker.enabled
        return self.sink_type.circuit_breaker if enabled is None else enabled


@dataclass(frozen=True)
class Route:
    settings: RouteSettings
    destinations: tuple[Destination, ...]
    format: IngestFormat | None = None
    format_options: Any = None  # an instance of format.options
    # Destinations the format's options send messages to beyond the route's
    # own `destinations:` (WhatsApp's statuses).
    format_destinations: tuple[Destination, ...] = ()
    # Content routing: per destination (in `destinations` order) its
    # compiled `when:` filter, None for every message; () when no
    # destination of the route has one (nothing to evaluate).
    filters: tuple[Filter | None, ...] = field(default=(), compare=False)

    @property
    def path(self) -> str:
        return self.settings.path


@dataclass(frozen=True)
class Config:
    file: str
    routes: tuple[Route, ...]
    destinations: dict[str, Destination]
    # Accepted but worth an operator's look; one line each, like errors.
    warnings: tuple[str, ...] = ()
    # Every secret of the file: what the admin API, the dashboard and the
    # CLI star out of the texts they show (router.ops.redaction).
    redactor: Redactor = field(default=redaction.NOTHING, compare=False, repr=False)


# A place in the file: the keys and list indexes leading to a value.
Path = tuple[str | int, ...]
