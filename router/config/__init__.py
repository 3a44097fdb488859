"""routes.yaml: loading, ${VAR} substitution and validation.

Every problem becomes one ConfigError whose text is a single line naming the
file, the place (key path and line) and what to fix, so a bad config stops
the start with a message an operator can act on.

Its modules, each importing only those before it: `schema` (the types and
the Config built), `variables` (`${VAR}`), `yaml_loader` (bounded YAML,
the line of each key), `convert` (into the schema, errors placed),
`routes_file` (reading the file), `checks` (upper bounds), `destinations`
and `routes` (their checks), `secret_values` (what to star out), `load`
(load_config, load_layout). Import from `router.config`: the names below.
"""

from router.config.load import load_config, load_layout
from router.config.routes import RESERVED_PATHS, route_key
from router.config.routes_file import MAX_ROUTES_FILE, read_routes_file
from router.config.schema import (
    DEFAULT_IGNORE_STATUSES,
    MAX_SHARDS,
    AuthSettings,
    CircuitBreakerSettings,
    CoalesceSettings,
    Config,
    ConfigError,
    Destination,
    DestinationSettings,
    Duration,
    FieldType,
    MessageLogSettings,
    OutboundRateLimit,
    RateLimitSettings,
    RetryPolicy,
    Route,
    RouteDestination,
    RouteSettings,
    Size,
    parse_duration,
    parse_size,
)
from router.config.variables import Expansion
from router.config.yaml_loader import MAX_ALIAS_EXPANSION, MAX_NESTING

__all__ = [
    "DEFAULT_IGNORE_STATUSES",
    "MAX_ALIAS_EXPANSION",
    "MAX_NESTING",
    "MAX_ROUTES_FILE",
    "MAX_SHARDS",
    "RESERVED_PATHS",
    "AuthSettings",
    "CircuitBreakerSettings",
    "CoalesceSettings",
    "Config",
    "ConfigError",
    "Destination",
    "DestinationSettings",
    "Duration",
    "Expansion",
    "FieldType",
    "MessageLogSettings",
    "OutboundRateLimit",
    "RateLimitSettings",
    "RetryPolicy",
    "Route",
    "RouteDestination",
    "RouteSettings",
    "Size",
    "load_config",
    "load_layout",
    "parse_duration",
    "parse_size",
    "read_routes_file",
    "route_key",
]
