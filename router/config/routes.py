"""A route checked: its path (one Litestar routes as written, not the
router's own), its settings, its ingest format and its destinations'
`when:` filters."""

from __future__ import annotations

import dataclasses
import re

import msgspec

from router.config.checks import Check, require
from router.config.convert import convert
from router.config.filters import Filter, FilterError, compile_filter
from router.config.schema import Destination, Path, Route, RouteSettings
from router.config.yaml_loader import Loader
from router.plugin import standard_webhooks
from router.plugin.formats import IngestFormat

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


def check_unique_path(
    loader: Loader, where: Path, route_path: str, seen_paths: dict[str, str]
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


def check_path(loader: Loader, where: Path, route_path: str) -> None:
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


def check_route(loader: Loader, path: Path, route: RouteSettings) -> None:
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
    require(loader, path, checks)


def format_route(
    loader: Loader,
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
    options = convert(loader, route.format_options, fmt.options, (*path, "format_options"))
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


def with_filters(loader: Loader, path: Path, route: Route) -> Route:
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


def _is_base64(secret: str) -> bool:
    """Whether `secret` is whsec_<base64> of a key that is not empty."""
    try:
        standard_webhooks.secret_key(secret)
    except ValueError:
        return False
    return True
