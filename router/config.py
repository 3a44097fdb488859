"""routes.yaml: loading, ${VAR} substitution and validation.

Every problem becomes one ConfigError whose text is a single line naming the
file, the place (key path and line) and what to fix, so a bad config stops
the start with a message an operator can act on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import yaml

from router import redaction, standard_webhooks
from router.filters import Filter, FilterError, compile_filter, compile_path
from router.ingest_formats import IngestFormat
from router.redaction import Redactor
from router.sinks import SinkType
from router.statuses import StatusSpecError, parse_statuses


class ConfigError(Exception):
    pass


# -- value types ---------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
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
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(
            f"invalid duration {value!r}: write seconds as a number "
            "or a string like 500ms, 10s, 1m, 2h"
        )
    return Duration(float(match.group(1)) * _DURATION_UNITS[match.group(2)])


def parse_size(value: object) -> Size:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Size(value)
    match = _SIZE.match(str(value))
    if not match or isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: write bytes as a number or like 512KiB, 1MiB")
    return Size(int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Duration:
        return parse_duration(obj)
    if typ is Size:
        return parse_size(obj)
    raise NotImplementedError(f"unsupported type {typ}")


# -- the schema ------------------------------------------------------------

FieldType = Literal["string", "number", "integer", "boolean", "object", "array", "any"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


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
    all processes (router.outbound_rate). Not a route's RateLimitSettings,
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


class DestinationSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The router's own fields of a destination; the rest go to its plugin."""

    plugin: str
    ordering_key: str | None = None  # a message field; None: one global order
    max_in_flight: int = 16
    # Hash tags the destination's lanes are spread over (router.keys): more
    # than one spreads a destination over a Redis Cluster's masters.
    shards: int = 1
    timeout: Duration = Duration(10.0)
    lease: Duration = Duration(30.0)
    retry: RetryPolicy = RetryPolicy()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    rate_limit: OutboundRateLimit | None = None  # None: as fast as max_in_flight allows


ROUTER_DESTINATION_FIELDS = set(DestinationSettings.__struct_fields__)


class RouteDestination(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A route's destination written as a mapping: its name and the filter
    a message must match to be stored for it (router.filters); no `when`:
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
    # with its options (router.ingest_formats).
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
    destinations: dict[str, Any]  # each checked below, naming the destination


@dataclass(frozen=True)
class Destination:
    name: str
    settings: DestinationSettings
    sink_type: SinkType
    options: Any  # an instance of sink_type.options
    # Stars its secrets out of failure reasons (router.redaction).
    redactor: Redactor = field(default=redaction.NOTHING, compare=False, repr=False)
    # Options as written where a ${VAR} was expanded, by their path below
    # the destination (("url",)): what `router check` shows.
    written: dict[tuple[str | int, ...], str] = field(default_factory=dict, compare=False)

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
    # CLI star out of the texts they show (router.redaction).
    redactor: Redactor = field(default=redaction.NOTHING, compare=False, repr=False)


# -- loading -------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path = tuple[str | int, ...]


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# A YAML alias repeats its anchor's whole subtree, so nested aliases grow
# exponentially ("billion laughs": 9 levels of 9 make 387 million values from
# a 1 KB file). Values repeated through aliases are counted and refused past
# this bound: a real routes.yaml repeats a retry policy or a header block,
# tens of values, never thousands. Values written out are not counted: their
# cost is the size of the file.
MAX_ALIAS_EXPANSION = 10_000

# How deep mappings and lists may nest. A real routes.yaml nests about 5
# deep; past a few hundred the YAML composer and the walk below run out of
# Python stack (a traceback), and an alias inside itself nests forever.
MAX_NESTING = 64

# PyYAML contexts that mean "an opener on the context line was never
# closed", and what to call that opener in the message.
_UNCLOSED_OPENERS = (
    ("while parsing a flow sequence", "'['"),
    ("while parsing a flow mapping", "'{'"),
    ("while scanning a quoted scalar", "quote"),
)


MERGE_TAG = "tag:yaml.org,2002:merge"


class _TooDeep(Exception):
    """Raised by _BoundedYamlLoader at the line nesting too deep."""

    def __init__(self, line: int) -> None:
        self.line = line


class _BoundedYamlLoader(yaml.SafeLoader):
    """The safe loader, refusing nesting deeper than MAX_NESTING while it
    composes (its composer is recursive: deep nesting ends in RecursionError)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _leading_keys(path: Path) -> Path:
    """The named part of a path, up to the first list index: where to look
    for a problem found deep inside repeated or nested values."""
    for i, part in enumerate(path):
        if isinstance(part, int):
            return path[:i]
    return path


@dataclass(frozen=True)
class Expansion:
    """A `${VAR}` the loader replaced by the variable's value (not by its
    `:-default`, which is written in the file)."""

    path: Path
    name: str
    value: str
    text: str  # the whole string at `path`, after substitution
    start: int  # where `value` begins in `text`

    def secrets(self) -> list[str]:
        """What of the value must never be shown: all of it, except where it
        is only a URL's scheme, host or port (`http://${BOT_HOST}:8080/`);
        of a whole URL from one variable, its password and query values."""
        if _URL_START.match(self.text) is None:
            return [self.value]
        if self.start == 0 and len(self.value) == len(self.text):
            return redaction.url_secrets(self.text)
        scheme, host = redaction.url_open_parts(self.text)
        end = self.start + len(self.value)
        inside = any(low <= self.start and end <= high for low, high in (scheme, host))
        return [] if inside else [self.value]


_URL_START = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class _Loader:
    """Turns YAML nodes into plain values, remembering the line of each path,
    refusing duplicate keys and substituting ${VAR} in strings."""

    def __init__(
        self,
        file: str,
        env: dict[str, str],
        lenient: bool = False,
        *,
        running: bool = False,
        broken: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.file = file
        self.env = env
        self.lenient = lenient  # an unset ${VAR} stays as written (load_layout)
        # Read by a process that started earlier (a reload): its plugins and
        # environment are those of its start, while the operator's shell
        # (`router check`, `router plugins`) sees what was added since.
        self.running = running
        # Plugins that could not be loaded: (entry point name, why), one line each.
        self.broken = broken
        self.lines: dict[Path, int] = {}
        self.constructor = yaml.SafeLoader("")
        self.walked: set[yaml.Node] = set()  # mappings and lists seen once
        self.repeated = 0  # values materialized again through aliases
        self.expansions: list[Expansion] = []  # every ${VAR} replaced by its value
        self.written: dict[Path, str] = {}  # strings with a ${VAR}, as written

    def shown(self, message: str) -> str:
        """`message` naming each variable (`${BOT_TOKEN}`) where it holds
        the value the variable put into the file: config errors and
        warnings quote values (a URL), never a variable's."""
        return Redactor({e.value: f"${{{e.name}}}" for e in self.expansions})(message)

    def error(self, path: Path, message: str) -> ConfigError:
        return ConfigError(self.place(path, message))

    def place(self, path: Path, message: str) -> str:
        """`file:line: key.path: message` on one line, for errors and warnings."""
        line = self.line(path)
        where = f"{self.file}:{line}" if line else self.file
        text = f"{where}: {_dotted(path)}: {self.shown(message)}"
        return " ".join(text.splitlines())  # one line, always

    def line(self, path: Path) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def load(self, text: str) -> Any:
        try:
            node = yaml.compose(text, Loader=_BoundedYamlLoader)
        except _TooDeep as exc:
            raise ConfigError(
                f"{self.file}:{exc.line}: mappings and lists nest deeper than "
                f"{MAX_NESTING} levels; no routes.yaml needs that, write it flatter"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.syntax_error_place(exc)}; fix the YAML there") from None
        if node is None:
            raise ConfigError(
                f"{self.file}: the file is empty; declare `routes:` and `destinations:`"
            )
        try:
            return self.value(node, ())
        except yaml.YAMLError as exc:  # e.g. a tag the safe loader refuses
            mark = getattr(exc, "problem_mark", None)
            where = f"{self.file}:{mark.line + 1}" if mark else self.file
            problem = " ".join(str(getattr(exc, "problem", None) or exc).splitlines())
            raise ConfigError(f"{where}: YAML error: {problem}; fix the YAML there") from None

    def syntax_error_place(self, exc: yaml.YAMLError) -> str:
        """`file:line: YAML syntax error: ...` at the line where the mistake starts.

        PyYAML's problem mark is where the parser gave up; for an unclosed
        `[`, `{` or quote that is lines later (often the next key), so the
        line named is the one holding the opener (the context mark), and
        the line where parsing failed follows in the text."""
        problem_mark = getattr(exc, "problem_mark", None)
        context_mark = getattr(exc, "context_mark", None)
        context = getattr(exc, "context", None) or ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).splitlines())
        opener = next((o for c, o in _UNCLOSED_OPENERS if context.startswith(c)), None)
        if opener and context_mark is not None:
            # PyYAML names a key token '?' (its YAML indicator), though the
            # file has none: a `key:` is what it found.
            problem = problem.replace("but got '?'", "but got a `key:`")
            failed = f" on line {problem_mark.line + 1}" if problem_mark else ""
            return (
                f"{self.file}:{context_mark.line + 1}: YAML syntax error: the {opener} "
                f"on this line is not closed where expected ({problem}{failed})"
            )
        where = f"{self.file}:{problem_mark.line + 1}" if problem_mark else self.file
        return f"{where}: YAML syntax error: {problem}"

    def value(self, node: yaml.Node, path: Path, repeated: bool = False) -> Any:
        """The plain value of `node` at `path`; `repeated`: inside an alias."""
        self.lines.setdefault(path, node.start_mark.line + 1)
        repeated = self.count(node, path, repeated)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            merged: dict[Any, Any] = {}  # from `<<` merge keys: defaults for `out`
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    self.merge(value_node, path, repeated, merged)
                    continue
                key = self.scalar(key_node, path)
                if not isinstance(key, str | int):
                    raise self.error(path, f"keys must be strings, got {key!r}")
                key = str(key)
                if key in out:
                    self.lines[(*path, key)] = key_node.start_mark.line + 1
                    raise self.error((*path, key), "duplicate key: each name may appear once")
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.value(value_node, (*path, key), repeated)
            return {**merged, **out}
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i), repeated) for i, item in enumerate(node.value)]
        value = self.scalar(node, path)
        if isinstance(value, str):
            value = self.substitute(value, path)
        return value

    def merge(self, node: yaml.Node, path: Path, repeated: bool, into: dict[Any, Any]) -> None:
        """A `<<` merge key (YAML 1.1, as docker-compose files use it): the
        keys of the mapping, or of each mapping of a list, earlier ones
        first, become defaults of the mapping at `path`; its own keys win."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise self.error(path, "`<<` merges mappings only (an alias of one, or a list)")
            for key, value in self.value(source, path, repeated).items():
                into.setdefault(key, value)

    def count(self, node: yaml.Node, path: Path, repeated: bool) -> bool:
        """Whether `node` is materialized again (an alias of a mapping or list
        already walked, or inside one); refuses too many such values and
        nesting too deep (an alias inside itself nests forever)."""
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            repeated = repeated or node in self.walked
            self.walked.add(node)
        if repeated:
            self.repeated += 1
        if self.repeated > MAX_ALIAS_EXPANSION:
            raise self.error(
                _leading_keys(path),
                f"YAML aliases repeat more than {MAX_ALIAS_EXPANSION} values "
                "(nested aliases?); write it out without aliases",
            )
        if len(path) > MAX_NESTING:
            raise self.error(
                _leading_keys(path),
                f"the values nest deeper than {MAX_NESTING} levels (a YAML alias "
                "inside its own anchor?); write it out without aliases",
            )
        return repeated

    def scalar(self, node: yaml.Node, path: Path) -> Any:
        """The value of a scalar (or a key) as YAML reads it."""
        try:
            return self.constructor.construct_object(node)
        except (ValueError, OverflowError) as exc:  # 2001-13-45, a 5000-digit int
            text = str(node.value)
            shown = text if len(text) <= 40 else text[:40] + "..."
            reason = " ".join(str(exc).splitlines()).split(";")[0]  # not Python's advice
            raise self.error(
                path, f"YAML cannot read {shown!r} ({reason}); quote it if it is text"
            ) from None

    def substitute(self, text: str, path: Path) -> str:
        pieces: list[str] = []
        size = 0  # the length of the result so far
        found: list[tuple[str, str, int]] = []  # each variable used: name, value, start
        end = 0
        for match in _VAR.finditer(text):
            before = text[end : match.start()]
            value, name = self._replacement(match, path)
            if name is not None:
                found.append((name, value, size + len(before)))
            pieces += [before, value]
            size += len(before) + len(value)
            end = match.end()
        if not pieces:
            return text
        result = "".join(pieces) + text[end:]
        if found:
            self.written[path] = text
            self.expansions += [Expansion(path, n, v, result, at) for n, v, at in found]
        return result

    def _replacement(self, match: re.Match[str], path: Path) -> tuple[str, str | None]:
        """What one `$$` or `${VAR}` becomes, and the variable's name when
        its value (not a default) is what it becomes."""
        if match.group(0) == "$$":
            return "$", None
        name, default = match.group(1), match.group(2)
        if name in self.env and (self.env[name] != "" or default is None):
            return self.env[name], name
        if default is not None:
            return default, None
        if self.lenient:
            return match.group(0), None
        where = " in this process's environment (set after it started? restart it)"
        raise self.error(
            path,
            f"environment variable {name} is not set{where if self.running else ''}; "
            f"set it or write ${{{name}:-default}}",
        )

    def not_installed(self, kind: str, name: str, installed: Iterable[str]) -> str:
        """Why a `plugin:` or `format:` names nothing this process has: the
        broken plugin of that entry point name, or what is installed (and
        the broken plugins, one of which may be it)."""
        named = [why for ep, why in self.broken if ep == name]
        if named:
            return f"{kind} {name!r} cannot be used: {named[0]}"
        where = " in this process (installed after it started? restart it)"
        text = (
            f"{kind} {name!r} is not installed{where if self.running else ''}; "
            f"installed: {', '.join(sorted(installed)) or 'none'}"
        )
        if self.broken:
            text += f"; broken (one may provide it): {' | '.join(why for _, why in self.broken)}"
        return text


_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(.*)`$", re.DOTALL)


def _type_at(typ: Any, parts: Path) -> Any:
    """The msgspec type info of the value at `parts` below `typ` (None if unknown)."""
    info: Any = msgspec.inspect.type_info(typ)
    for part in (*parts, None):
        if isinstance(info, msgspec.inspect.UnionType):  # X | None, str | Struct
            types = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            structs = [t for t in types if isinstance(t, msgspec.inspect.StructType)]
            info = (structs or types)[0]
        if part is None:
            return info
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.name == part), None)
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
            info = getattr(info, "item_type", None) or getattr(info, "value_type", None)
        else:
            return None
    return info


def _convert(
    loader: _Loader, obj: Any, typ: Any, base: Path, also_allowed: tuple[str, ...] = ()
) -> Any:
    try:
        return msgspec.convert(obj, typ, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        message = str(exc)
        parts: Path = ()
        in_mapping = False
        match = _MSGSPEC_PATH.search(message)
        if match:
            message = message[: match.start()]
            # msgspec writes a mapping's key as [...]: the path stops there.
            text, mapped, rest = match.group(1).partition("[...]")
            for key, index in _PATH_PART.findall(text):
                parts = (*parts, int(index) if index else key)
            in_mapping = bool(mapped) and not rest
        # A plugin's __post_init__ may name the option it refuses
        # (router.sinks.OptionError): the error is placed there.
        parts = (*parts, *getattr(exc.__cause__, "where", ()))
        info = _type_at(typ, parts)
        if in_mapping and isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        hint = ""
        unknown = _UNKNOWN_FIELD.match(message)
        if unknown:
            message = f"unknown field `{unknown.group(1)}`"
            parts = (*parts, unknown.group(1))
            if isinstance(info, msgspec.inspect.StructType):
                allowed = [f.name for f in info.fields] + list(also_allowed)
                hint = f"; allowed here: {', '.join(allowed)}"
        elif isinstance(info, msgspec.inspect.LiteralType):
            hint = f"; allowed: {', '.join(map(str, info.values))}"
        raise loader.error((*base, *parts), message + hint) from None


# Largest routes file read: a real one is a few KiB; ROUTES_FILE=/dev/zero
# (or a log file named by mistake) would otherwise be read until memory ran out.
MAX_ROUTES_FILE = 1024 * 1024


def read_routes_file(file: str) -> bytes:
    """The routes file's bytes, or a ConfigError (one line) naming why not:
    it is not a regular file (a device, a pipe, a directory: opened without
    blocking, so a FIFO with no writer does not hang the start), or it is
    larger than MAX_ROUTES_FILE (no more than that is read)."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the routes file: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(
            f"{file}: cannot read the routes file: not a regular file (a device, a pipe "
            "or a directory); point ROUTES_FILE or --routes at routes.yaml"
        )
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(MAX_ROUTES_FILE + 1)
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the routes file: {exc.strerror}") from None
    _check_routes_size(file, data)
    return data


def _check_routes_size(file: str, data: bytes) -> None:
    if len(data) > MAX_ROUTES_FILE:
        raise ConfigError(
            f"{file}: the routes file is larger than {MAX_ROUTES_FILE // 1024**2} MiB: "
            "is it the right file?"
        )


def _routes_text(file: str, content: bytes | None = None) -> str:
    """The routes file's text (`content`: the file as read already), or a
    ConfigError naming why it cannot be had."""
    if content is None:
        content = read_routes_file(file)
    _check_routes_size(file, content)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: the routes file is not UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None


class _LayoutFields(msgspec.Struct):
    shards: int = 1


def load_layout(file: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Destination name -> its shard count: all the operator commands
    (`router status`, `dead`, `pause`, `retry`) need to find a queue. Read
    without validating the rest, so they run where a destination's secrets
    or URLs are not set (a laptop, a CI job); `${VAR}`s left unset stay as
    written, and only a bad `shards` or name is an error."""
    text = _routes_text(file)
    loader = _Loader(file, dict(os.environ) if env is None else env, lenient=True)
    data = loader.load(text)
    destinations = data.get("destinations") if isinstance(data, dict) else None
    if not isinstance(destinations, dict):
        raise loader.error(("destinations",), "a mapping of destination names is needed")
    layout: dict[str, int] = {}
    for name, fields in destinations.items():
        path: Path = ("destinations", name)
        if not isinstance(name, str) or not re.match(_NAME, name):
            raise loader.error(
                path, "a destination name uses letters, digits, '_', '.', '-' (max 64)"
            )
        own = {"shards": fields.get("shards", 1)} if isinstance(fields, dict) else {}
        shards = _convert(loader, own, _LayoutFields, path).shards
        if not 1 <= shards <= MAX_SHARDS:
            raise loader.error((*path, "shards"), f"must be between 1 and {MAX_SHARDS}")
        layout[name] = shards
    # The operator commands print errors stored in Redis: the secrets this
    # file's variables hold are starred out of them (router.redaction.known).
    redaction.remember(Redactor(_lenient_secrets(loader)))
    return layout


def _lenient_secrets(loader: _Loader) -> list[str]:
    """The secrets a file read without its checks shows: its ${VAR} values
    where they may hold one (_holds_secrets)."""
    return [s for e in loader.expansions for s in _var_secrets(e)]


def load_config(
    file: str,
    sink_types: dict[str, SinkType],
    env: dict[str, str] | None = None,
    content: bytes | None = None,
    formats: dict[str, IngestFormat] | None = None,
    *,
    broken: Sequence[tuple[str, str]] = (),
    running: bool = False,
) -> Config:
    """Read and validate routes.yaml (or `content`, the file as read already);
    raises ConfigError with a one-line message. `formats`: the ingest
    formats a route's `format:` may name; `broken`: the plugins that could
    not be loaded, (entry point name, why); `running`: read by a running
    process (a reload), which its messages about what is missing say."""
    text = _routes_text(file, content)
    env = dict(os.environ) if env is None else env
    loader = _Loader(file, env, running=running, broken=broken)
    data = loader.load(text)
    if not isinstance(data, dict):
        raise loader.error((), "the top level must be a mapping with `routes:` and `destinations:`")
    # Top-level `x-...` keys are extension fields, ignored (as in compose
    # files): the place for anchors that destinations merge with `<<`.
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    raw: RawConfig = _convert(loader, data, RawConfig, ())

    destinations: dict[str, Destination] = {}
    warnings: list[str] = []
    for name, fields in raw.destinations.items():
        path: Path = ("destinations", name)
        if not re.match(_NAME, name):
            raise loader.error(
                path, "a destination name uses letters, digits, '_', '.', '-' (max 64)"
            )
        if not isinstance(fields, dict):
            raise loader.error(path, "a destination is a mapping with at least `plugin:`")
        own = {k: v for k, v in fields.items() if k in ROUTER_DESTINATION_FIELDS}
        settings: DestinationSettings = _convert(loader, own, DestinationSettings, path)
        _check_destination(loader, path, settings)
        _require(loader, path, _upper_bounds(settings))
        warnings += _check_ordering_key(loader, path, settings.ordering_key)
        sink_type = sink_types.get(settings.plugin)
        if sink_type is None:
            raise loader.error(
                (*path, "plugin"), loader.not_installed("plugin", settings.plugin, sink_types)
            )
        rest = {k: v for k, v in fields.items() if k not in ROUTER_DESTINATION_FIELDS}
        options = _convert(
            loader, rest, sink_type.options, path, tuple(DestinationSettings.__struct_fields__)
        )
        warnings += _option_warnings(loader, path, options, rest)
        destinations[name] = Destination(
            name,
            settings,
            sink_type,
            options,
            Redactor(_destination_secrets(loader, name, options)),
            {p[2:]: text for p, text in loader.written.items() if p[:2] == path},
        )

    routes: list[Route] = []
    seen_paths: dict[str, str] = {}  # route key -> the path as written
    for i, route in enumerate(raw.routes):
        path = ("routes", i)
        _check_path(loader, (*path, "path"), route.path)
        _check_unique_path(loader, (*path, "path"), route.path, seen_paths)
        names = route.destination_names
        if not names:
            raise loader.error((*path, "destinations"), "name at least one destination")
        if len(set(names)) != len(names):
            raise loader.error((*path, "destinations"), "a destination is listed twice")
        for j, dest in enumerate(names):
            if dest not in destinations:
                defined = ", ".join(sorted(destinations)) or "none"
                raise loader.error(
                    (*path, "destinations", j),
                    f"destination {dest!r} is not defined under `destinations:`; "
                    f"defined: {defined}",
                )
        _check_route(loader, path, route)
        _require(loader, path, _upper_bounds(route))
        listed = tuple(destinations[d] for d in names)
        filtered = _format_route(loader, path, route, listed, destinations, formats or {})
        routes.append(_with_filters(loader, path, filtered))
    if not routes:
        raise loader.error(("routes",), "declare at least one route")
    secrets = [s for d in destinations.values() for s in d.redactor.secrets]
    secrets += _route_secrets(loader, routes)
    config = Config(
        file=file,
        routes=tuple(routes),
        destinations=destinations,
        warnings=tuple(warnings),
        redactor=Redactor(secrets),
    )
    redaction.remember(config.redactor)
    return config


def _declared_secrets(options: Any) -> list[str]:
    """What a plugin's options name as secret (`secret_values()`, if they
    have it: router.http_sink.HttpOptions)."""
    declared = getattr(options, "secret_values", None)
    return [s for s in (declared() if declared is not None else ()) if isinstance(s, str)]


def _destination_secrets(loader: _Loader, name: str, options: Any) -> list[str]:
    """A destination's secrets: what its plugin's options name, and what
    every ${VAR} put into them."""
    found = _declared_secrets(options)
    for e in loader.expansions:
        if e.path[:2] == ("destinations", name) and _holds_secrets(e.path):
            found += e.secrets()
    return found


def _route_secrets(loader: _Loader, routes: list[Route]) -> list[str]:
    """The routes' secrets: `auth.secret`, what their format's options name,
    and what every ${VAR} put into `auth` and `format_options`."""
    found = [s for e in loader.expansions if e.path[:1] == ("routes",) for s in _var_secrets(e)]
    for route in routes:
        if route.settings.auth is not None:
            found.append(route.settings.auth.secret)
        found += _declared_secrets(route.format_options)
    return found


def _var_secrets(expansion: Expansion) -> list[str]:
    return expansion.secrets() if _holds_secrets(expansion.path) else []


def _holds_secrets(path: Path) -> bool:
    """Whether a ${VAR} at `path` may hold a secret: in a destination's
    plugin options (not the router's own settings: a timeout, an ordering
    key), or in a route's `auth` or `format_options`."""
    if len(path) < 3:
        return False
    if path[0] == "destinations":
        return path[2] not in ROUTER_DESTINATION_FIELDS
    return path[0] == "routes" and path[2] in ("auth", "format_options")


def _option_warnings(
    loader: _Loader, path: Path, options: Any, written: dict[str, Any]
) -> list[str]:
    """A plugin's warnings about its options (`config_warnings()`, if it has
    one), placed like errors. A warning "url: ..." names the option `url`."""
    config_warnings = getattr(options, "config_warnings", None)
    if config_warnings is None:
        return []
    placed = []
    for warning in config_warnings():
        option, sep, message = str(warning).partition(": ")
        if sep and option in written:
            placed.append(loader.place((*path, option), message))
        else:
            placed.append(loader.place(path, str(warning)))
    return placed


# The router's own paths (app.py, admin.py, Litestar's OpenAPI under
# /schema, the dashboard under /ui); a route may be neither one of them nor
# below one. /metrics is kept free for the metrics endpoint to come.
RESERVED_PATHS = ("/healthz", "/readyz", "/schema", "/admin", "/metrics", "/ui")

# A character of a route path segment: RFC 3986 pchar without %-escapes
# (Litestar matches the decoded path, so an escape in a route never matches),
# and so without { } (Litestar reads {name:type} as a path parameter).
_PCHAR = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]")
_PATH_RULE = (
    "a route path is / or /segment/segment..., optionally ending in /, where a segment "
    "is letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @ and is not . or .."
)


def route_key(route_path: str) -> str:
    """The path as Litestar routes it: a trailing '/' makes no difference."""
    return route_path[:-1] if len(route_path) > 1 and route_path.endswith("/") else route_path


def _path_problem(route_path: str) -> str | None:
    """What in a path (starting with '/') Litestar or HTTP clients would read
    otherwise than as written, or None."""
    if route_path == "/":
        return None
    segments = route_path.split("/")[1:]
    if segments[-1] == "":
        segments.pop()  # the trailing '/'
    for segment in segments:
        if segment == "":
            return "an empty segment (//)"
        if segment in (".", ".."):
            return f"a {segment!r} segment (HTTP clients resolve it away)"
        if "{" in segment or "}" in segment:
            return "a {parameter} (Litestar would read it as a path parameter)"
        if "%" in segment:
            return "a %-escape (Litestar matches the decoded path, so it never matches)"
        bad = next((c for c in segment if not _PCHAR.fullmatch(c)), None)
        if bad is not None:
            return f"the character {bad!r}"
    return None


def _check_unique_path(
    loader: _Loader, where: Path, route_path: str, seen_paths: dict[str, str]
) -> None:
    """Refuse a path routed like an earlier one; `seen_paths` maps each
    route key seen so far to the path as written."""
    key = route_key(route_path)
    earlier = seen_paths.get(key)
    if earlier is None:
        seen_paths[key] = route_path
        return
    same = "" if earlier == route_path else f" ({earlier!r} is the same: a trailing '/' is ignored)"
    raise loader.error(where, f"duplicate path {route_path!r}: each path once{same}")


def _check_path(loader: _Loader, where: Path, route_path: str) -> None:
    if not route_path.startswith("/"):
        raise loader.error(where, f"a route path starts with '/', got {route_path!r}")
    problem = _path_problem(route_path)
    if problem is not None:
        raise loader.error(where, f"path {route_path!r} has {problem}; {_PATH_RULE}")
    key = route_key(route_path)
    for own in RESERVED_PATHS:
        if key == own or key.startswith(own + "/"):
            raise loader.error(
                where,
                f"path {route_path!r} is the router's own ({own} and below); choose another",
            )


Check = tuple[str | tuple[str, ...], bool, str]  # where, holds, what to fix

# -- upper bounds: a value past these passes every other check, then stops
# delivery (a rate_limit.period of 1e17 s allows one request in 3 billion
# years) or makes Redis refuse each command (an expiry past 64 bits). Every
# duration of a destination or a route is bounded, by its own entry here or
# else by MAX_DURATION, so a duration added later is bounded too.
DAY = 86400.0
MAX_DURATION = DAY
DURATION_MAXIMA: dict[tuple[str, ...], float] = {
    ("timeout",): 3600.0,  # one HTTP attempt
    ("retry", "max_age"): 365 * DAY,  # a give-up time, not a wait
    ("dedup_ttl",): 365 * DAY,  # how long ids are kept
}
# Counts that feed a rate (requests per period, and the slack on top).
COUNT_MAXIMA: dict[tuple[str, ...], int] = {
    ("rate_limit", "requests"): 1_000_000,
    ("rate_limit", "burst"): 1_000_000,
}


def _shown(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _upper_bounds(struct: msgspec.Struct, where: tuple[str, ...] = ()) -> list[Check]:
    """The maxima of every duration (and rate count) in `struct`, nested
    settings included."""
    checks: list[Check] = []
    for name in struct.__struct_fields__:
        value, place = getattr(struct, name), (*where, name)
        if isinstance(value, Duration):
            most = DURATION_MAXIMA.get(place, MAX_DURATION)
            checks.append((place, value <= most, f"must be at most {_shown(most)}"))
        elif isinstance(value, int) and place in COUNT_MAXIMA:
            checks.append(
                (place, value <= COUNT_MAXIMA[place], f"must be at most {COUNT_MAXIMA[place]:,}")
            )
        elif isinstance(value, msgspec.Struct):
            checks += _upper_bounds(value, place)
    return checks


def _require(loader: _Loader, path: Path, checks: list[Check]) -> None:
    """Raise the first failed check as a config error at its place."""
    for where, ok, message in checks:
        if not ok:
            sub = where if isinstance(where, tuple) else (where,)
            raise loader.error((*path, *sub), message)


def _check_route(loader: _Loader, path: Path, route: RouteSettings) -> None:
    auth, limit = route.auth, route.rate_limit
    checks: list[Check] = [
        ("max_depth", route.max_depth >= 1, "must be at least 1"),
        ("dedup_ttl", route.dedup_ttl >= 1, "must be at least 1s"),
        (
            "max_string_length",
            route.max_string_length is None or route.max_string_length >= 1,
            "must be at least 1",
        ),
        (
            ("auth", "secret"),
            auth is None or bool(auth.secret),
            "the secret is empty; set it from ${VAR}",
        ),
        (
            ("auth", "secret"),
            auth is None or auth.type != "standard-webhooks" or _is_base64(auth.secret),
            "a Standard Webhooks secret is whsec_<base64>",
        ),
        (("rate_limit", "requests"), limit is None or limit.requests >= 1, "must be at least 1"),
        (("rate_limit", "period"), limit is None or limit.period > 0, "must be more than 0"),
    ]
    _require(loader, path, checks)


def _format_route(
    loader: _Loader,
    path: Path,
    route: RouteSettings,
    own: tuple[Destination, ...],
    destinations: dict[str, Destination],
    formats: dict[str, IngestFormat],
) -> Route:
    """The route with its ingest format (`format:`) and the format's options
    checked; settings that read the JSON body itself do not apply to one."""
    if route.format is None:
        if route.format_options:
            raise loader.error((*path, "format_options"), "only a route with `format:` has them")
        return Route(route, own)
    fmt = formats.get(route.format)
    if fmt is None:
        raise loader.error((*path, "format"), loader.not_installed("format", route.format, formats))
    for name, given in (("fields", bool(route.fields)), ("id_field", route.id_field is not None)):
        if given:
            raise loader.error(
                (*path, name),
                f"a `format: {route.format}` route reads its messages (and their ids) "
                "as the format says; remove it",
            )
    if route.auth is not None:
        raise loader.error(
            (*path, "auth"),
            f"a `format: {route.format}` route authenticates requests as the format says "
            "(see its format_options); remove it",
        )
    if route.rate_limit is not None and route.rate_limit.per != "client":
        raise loader.error(
            (*path, "rate_limit", "per"),
            f"on a `format: {route.format}` route a rate limit is per client only",
        )
    options = _convert(loader, route.format_options, fmt.options, (*path, "format_options"))
    extra: list[Destination] = []
    for name in fmt.destinations(options):
        if name not in destinations:
            defined = ", ".join(sorted(destinations)) or "none"
            raise loader.error(
                (*path, "format_options"),
                f"destination {name!r} is not defined under `destinations:`; defined: {defined}",
            )
        if name not in route.destination_names and destinations[name] not in extra:
            extra.append(destinations[name])
    return Route(route, own, fmt, options, tuple(extra))


def _with_filters(loader: _Loader, path: Path, route: Route) -> Route:
    """The route with its destinations' `when:` filters compiled (none:
    the route as it is, with nothing to evaluate per message)."""
    written = route.settings.destinations
    filters: list[Filter | None] = []
    for j, dest in enumerate(written):
        when = msgspec.UNSET if isinstance(dest, str) else dest.when
        if when is msgspec.UNSET:
            filters.append(None)
            continue
        if when is None:
            # An empty `when:` (a filter deleted by mistake) would send every
            # message: the opposite of what a filter is there for.
            raise loader.error(
                (*path, "destinations", j, "when"),
                "is empty: write a filter (docs/content-routing.md), or remove `when:` to "
                "send this destination every message",
            )
        try:
            filters.append(compile_filter(when))
        except FilterError as exc:
            where = (*path, "destinations", j, "when", *exc.where)
            raise loader.error(where, exc.message) from None
    if all(f is None for f in filters):
        if route.settings.on_no_match != "accept":
            raise loader.error(
                (*path, "on_no_match"),
                "only a route with a `when:` filter on a destination has messages that "
                "match none; remove it, or add a filter",
            )
        return route
    return dataclasses.replace(route, filters=tuple(filters))


def _check_ordering_key(loader: _Loader, path: Path, ordering_key: str | None) -> list[str]:
    """An ordering key is a path into the body (router.filters): a
    top-level field, or dotted keys into nested objects. Its warnings: a
    dot reads a nested field since content routing came; a config written
    before it meant a top-level field named with a dot."""
    if ordering_key is None:
        return []
    try:
        compile_path(ordering_key)
    except ValueError as exc:
        raise loader.error((*path, "ordering_key"), str(exc)) from None
    if re.search(r"(?<!\\)\.", ordering_key) is None:
        return []
    nested = " -> ".join(f"`{part}`" for part in re.split(r"(?<!\\)\.", ordering_key))
    escaped = ordering_key.replace(".", "\\.")
    return [
        loader.place(
            (*path, "ordering_key"),
            f"reads the nested field {nested}; for a top-level field named "
            f"`{ordering_key}` write `{escaped}`",
        )
    ]


def _is_base64(secret: str) -> bool:
    """Whether `secret` is whsec_<base64> of a key that is not empty."""
    try:
        standard_webhooks.secret_key(secret)
    except ValueError:
        return False
    return True


def _check_destination(loader: _Loader, path: Path, s: DestinationSettings) -> None:
    cb = s.circuit_breaker
    checks: list[Check] = [
        ("max_in_flight", s.max_in_flight >= 1, "must be at least 1"),
        ("shards", 1 <= s.shards <= MAX_SHARDS, f"must be between 1 and {MAX_SHARDS}"),
        (
            "max_in_flight",
            s.max_in_flight >= s.shards,
            "must be at least `shards` (each shard gets its part of it)",
        ),
        ("timeout", s.timeout > 0, "must be more than 0"),
        ("lease", s.lease >= 1, "must be at least 1s"),
        ("lease", s.lease > s.timeout, "must be longer than `timeout`"),
        (("retry", "initial"), s.retry.initial > 0, "must be more than 0"),
        (("retry", "factor"), s.retry.factor >= 1, "must be at least 1"),
        (("retry", "max_delay"), s.retry.max_delay >= s.retry.initial, "must be >= retry.initial"),
        (("retry", "jitter"), 0 <= s.retry.jitter <= 1, "must be between 0 and 1"),
        (
            ("retry", "max_attempts"),
            s.retry.max_attempts is None or s.retry.max_attempts >= 1,
            "must be at least 1, or null to retry forever",
        ),
        (
            ("circuit_breaker", "failing_keys"),
            cb.failing_keys >= 2,
            "must be at least 2 (one conversation's failures never open the breaker)",
        ),
        (("circuit_breaker", "window"), cb.window > 0, "must be more than 0"),
        (("circuit_breaker", "probe_interval"), cb.probe_interval > 0, "must be more than 0"),
        (
            ("circuit_breaker", "probe_interval_max"),
            cb.probe_interval_max >= cb.probe_interval,
            "must be >= circuit_breaker.probe_interval",
        ),
    ]
    try:
        parse_statuses(cb.ignore_statuses)
    except StatusSpecError as exc:
        where = (*path, "circuit_breaker", "ignore_statuses", exc.index)
        raise loader.error(where, exc.message) from None
    limit = s.rate_limit
    if limit is not None:
        checks += [
            (("rate_limit", "requests"), limit.requests >= 1, "must be at least 1"),
            (("rate_limit", "period"), limit.period > 0, "must be more than 0"),
            (("rate_limit", "burst"), limit.burst >= 1, "must be at least 1"),
            (
                ("rate_limit", "requests"),
                limit.requests >= s.shards,
                "must be at least `shards` (each shard gets its part of it)",
            ),
        ]
    _require(loader, path, checks)
