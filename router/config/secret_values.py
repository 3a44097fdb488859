"""The secrets a routes file holds, which the admin API, the dashboard,
the CLI and failure reasons star out (router.ops.redaction): what plugins'
options declare secret, a route's `auth.secret`, and every value a
`${VAR}` put where a secret may be."""

from __future__ import annotations

from typing import Any

from router.config.schema import ROUTER_DESTINATION_FIELDS, Path, Route
from router.config.variables import Expansion, Variables


def lenient_secrets(variables: Variables) -> list[str]:
    """The secrets a file read without its checks shows: its ${VAR} values
    where they may hold one (_holds_secrets)."""
    return [s for e in variables.expansions for s in _var_secrets(e)]


def _declared_secrets(options: Any) -> list[str]:
    """What a plugin's options name as secret (`secret_values()`, if they
    have it: router.plugin.http_sink.HttpOptions)."""
    declared = getattr(options, "secret_values", None)
    return [s for s in (declared() if declared is not None else ()) if isinstance(s, str)]


def destination_secrets(variables: Variables, name: str, options: Any) -> list[str]:
    """A destination's secrets: what its plugin's options name, and what
    every ${VAR} put into them."""
    found = _declared_secrets(options)
    for e in variables.expansions:
        if e.path[:2] == ("destinations", name) and _holds_secrets(e.path):
            found += e.secrets()
    return found


def route_secrets(variables: Variables, routes: list[Route]) -> list[str]:
    """The routes' secrets: `auth.secret`, what their format's options name,
    and what every ${VAR} put into `auth` and `format_options`."""
    found = [s for e in variables.expansions if e.path[:1] == ("routes",) for s in _var_secrets(e)]
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
