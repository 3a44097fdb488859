"""load_config: routes.yaml read, checked and built into a Config, every
problem one ConfigError line; load_layout: only the shard counts, for the
operator commands."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import msgspec

from router.config.checks import require, upper_bounds
from router.config.convert import convert
from router.config.destinations import check_destination, check_ordering_key, option_warnings
from router.config.routes import (
    check_path,
    check_route,
    check_unique_path,
    format_route,
    with_filters,
)
from router.config.routes_file import routes_text
from router.config.schema import (
    MAX_SHARDS,
    NAME,
    ROUTER_DESTINATION_FIELDS,
    Config,
    Destination,
    DestinationSettings,
    Path,
    RawConfig,
    Route,
)
from router.config.secret_values import destination_secrets, lenient_secrets, route_secrets
from router.config.settings import message_log_allowed
from router.config.yaml_loader import Loader
from router.ops import redaction
from router.ops.redaction import Redactor
from router.plugin.formats import IngestFormat
from router.plugin.sinks import SinkType


class _LayoutFields(msgspec.Struct):
    shards: int = 1


def load_layout(file: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Destination name -> its shard count: all the operator commands
    (`router status`, `dead`, `pause`, `retry`) need to find a queue. Read
    without validating the rest, so they run where a destination's secrets
    or URLs are not set (a laptop, a CI job); `${VAR}`s left unset stay as
    written, and only a bad `shards` or name is an error."""
    text = routes_text(file)
    loader = Loader(file, dict(os.environ) if env is None else env, lenient=True)
    data = loader.load(text)
    destinations = data.get("destinations") if isinstance(data, dict) else None
    if not isinstance(destinations, dict):
        raise loader.error(("destinations",), "a mapping of destination names is needed")
    layout: dict[str, int] = {}
    for name, fields in destinations.items():
        path: Path = ("destinations", name)
        if not isinstance(name, str) or not re.match(NAME, name):
            raise loader.error(
                path, "a destination name uses letters, digits, '_', '.', '-' (max 64)"
            )
        own = {"shards": fields.get("shards", 1)} if isinstance(fields, dict) else {}
        shards = convert(loader, own, _LayoutFields, path).shards
        if not 1 <= shards <= MAX_SHARDS:
            raise loader.error((*path, "shards"), f"must be between 1 and {MAX_SHARDS}")
        layout[name] = shards
    # The operator commands print errors stored in Redis: the secrets this
    # file's variables hold are starred out of them (router.ops.redaction.known).
    redaction.remember(Redactor(lenient_secrets(loader.variables)))
    return layout


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
    text = routes_text(file, content)
    env = dict(os.environ) if env is None else env
    loader = Loader(file, env, running=running, broken=broken)
    data = loader.load(text)
    if not isinstance(data, dict):
        raise loader.error((), "the top level must be a mapping with `routes:` and `destinations:`")
    # Top-level `x-...` keys are extension fields, ignored (as in compose
    # files): the place for anchors that destinations merge with `<<`.
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    raw: RawConfig = convert(loader, data, RawConfig, ())

    destinations: dict[str, Destination] = {}
    warnings: list[str] = []
    log_allowed = message_log_allowed(env)
    for name, fields in raw.destinations.items():
        path: Path = ("destinations", name)
        if not re.match(NAME, name):
            raise loader.error(
                path, "a destination name uses letters, digits, '_', '.', '-' (max 64)"
            )
        if not isinstance(fields, dict):
            raise loader.error(path, "a destination is a mapping with at least `plugin:`")
        own = {k: v for k, v in fields.items() if k in ROUTER_DESTINATION_FIELDS}
        settings: DestinationSettings = convert(loader, own, DestinationSettings, path)
        check_destination(loader, path, settings)
        require(loader, path, upper_bounds(settings))
        warnings += check_ordering_key(loader, path, settings.ordering_key)
        sink_type = sink_types.get(settings.plugin)
        if sink_type is None:
            raise loader.error(
                (*path, "plugin"), loader.not_installed("plugin", settings.plugin, sink_types)
            )
        rest = {k: v for k, v in fields.items() if k not in ROUTER_DESTINATION_FIELDS}
        options = convert(
            loader, rest, sink_type.options, path, tuple(DestinationSettings.__struct_fields__)
        )
        warnings += option_warnings(loader, path, options, rest)
        destinations[name] = Destination(
            name,
            settings,
            sink_type,
            options,
            Redactor(destination_secrets(loader.variables, name, options)),
            {p[2:]: text for p, text in loader.variables.written.items() if p[:2] == path},
            log_allowed=log_allowed,
        )

    routes: list[Route] = []
    seen_paths: dict[str, str] = {}  # route key -> the path as written
    for i, route in enumerate(raw.routes):
        path = ("routes", i)
        check_path(loader, (*path, "path"), route.path)
        check_unique_path(loader, (*path, "path"), route.path, seen_paths)
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
        check_route(loader, path, route)
        require(loader, path, upper_bounds(route))
        listed = tuple(destinations[d] for d in names)
        filtered = format_route(loader, path, route, listed, destinations, formats or {})
        routes.append(with_filters(loader, path, filtered))
    if not routes:
        raise loader.error(("routes",), "declare at least one route")
    secrets = [s for d in destinations.values() for s in d.redactor.secrets]
    secrets += route_secrets(loader.variables, routes)
    config = Config(
        file=file,
        routes=tuple(routes),
        destinations=destinations,
        warnings=tuple(warnings),
        redactor=Redactor(secrets),
    )
    redaction.remember(config.redactor)
    return config
