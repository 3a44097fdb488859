"""Loading the installed plugins from their entry points, a broken one
set aside instead of stopping the router.

pluggy's own loader (`load_setuptools_entrypoints`) stops at the first
entry point that cannot be imported, with a traceback that never names the
distribution: one misspelt module in a plugin nobody's routes.yaml uses
stopped `router plugins`, `router check` and `router serve` alike. Here
every failure becomes a `BrokenPlugin`, one line naming the distribution
(name and version), the entry point and the error; router.config.loading makes it
a warning, or the reason a routes.yaml that needs it is refused.

A plugin declared in another entry-point group than `router` is never
loaded and nothing fails: a distribution that depends on the router and
declares entry points in a group that looks like `router` (`routers`,
`message_router`, `router.plugins`) is reported too, since that is almost
surely the mistake. Only its metadata is read (no import), and only for
groups that look like it, so the look costs next to nothing.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
from dataclasses import dataclass

import pluggy

ENTRY_POINT_GROUP = "router"

# This router's distribution: what a plugin's package depends on.
ROUTER_DISTRIBUTION = "message-router"

# Groups every Python tool reads; never taken for a misspelt `router`.
_STANDARD_GROUPS = {"console_scripts", "gui_scripts"}


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin the router could not use, and why."""

    entry_point: str  # the entry point's name: often what `plugin:` names
    origin: str  # the distribution and the entry point, as the operator finds them
    problem: str  # one line

    def __str__(self) -> str:
        return f"{self.origin}: {self.problem}"


def origin(dist: importlib.metadata.Distribution, ep: importlib.metadata.EntryPoint) -> str:
    """`router-slackish 0.2.0 (entry point `slackish = router_slackish`, group `router`)`."""
    name = dist.metadata["Name"] or "a distribution without a name"
    return f"{name} {dist.version} (entry point `{ep.name} = {ep.value}`, group `{ep.group}`)"


def load_entry_points(pm: pluggy.PluginManager) -> tuple[dict[str, str], list[BrokenPlugin]]:
    """Register every plugin of the `router` entry-point group with `pm`;
    returns the origin of each registered one (by plugin name) and the
    broken ones. As pluggy's loader: the first entry point of a name wins
    (a distribution found twice on sys.path is loaded once)."""
    origins: dict[str, str] = {}
    broken: list[BrokenPlugin] = []
    seen: set[str] = set()
    for dist in list(importlib.metadata.distributions()):
        eps = list(dist.entry_points)
        broken += _misplaced(dist, eps)
        for ep in eps:
            if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                continue
            if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            seen.add(ep.name)
            where = origin(dist, ep)
            problem = _register(pm, ep)
            if problem is None:
                origins[ep.name] = where
            else:
                broken.append(BrokenPlugin(ep.name, where, problem))
    return origins, broken


def _register(pm: pluggy.PluginManager, ep: importlib.metadata.EntryPoint) -> str | None:
    """Import and register one entry point; why it cannot be, or None."""
    from router.ops.failures import one_line

    try:
        plugin = ep.load()
    except (Exception, SystemExit) as exc:  # a plugin's import runs its code
        return f"cannot be imported: {one_line(exc)}"
    try:
        pm.register(plugin, name=ep.name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        return f"cannot be registered: {one_line(exc, typed=False)}"
    hooks = [caller.name for caller in pm.get_hookcallers(plugin) or []]
    known = _spec_names(pm)
    unknown = [h for h in hooks if h not in known]
    if unknown or not hooks:
        pm.unregister(plugin)
        what = (
            f"implements {', '.join(unknown)}, not a router hook"
            if unknown
            else "implements no router hook (@hookimpl from router.plugin)"
        )
        return f"{what}; the hooks are {', '.join(sorted(known))}"
    return None


def _spec_names(pm: pluggy.PluginManager) -> set[str]:
    return {
        name
        for name, caller in vars(pm.hook).items()
        if not name.startswith("_") and caller.has_spec()
    }


def _misplaced(
    dist: importlib.metadata.Distribution, eps: list[importlib.metadata.EntryPoint]
) -> list[BrokenPlugin]:
    """The entry points of a router plugin declared in a group that looks
    like a misspelt `router` (the plugin is then silently never loaded)."""
    suspect = [ep for ep in eps if _looks_like_the_group(ep.group)]
    if not suspect or not _depends_on_the_router(dist):
        return []
    return [
        BrokenPlugin(
            ep.name,
            origin(dist, ep),
            f"is never loaded: the router reads entry-point group `{ENTRY_POINT_GROUP}` "
            f"([project.entry-points.{ENTRY_POINT_GROUP}] in pyproject.toml), not `{ep.group}`",
        )
        for ep in suspect
    ]


def _looks_like_the_group(group: str) -> bool:
    if group == ENTRY_POINT_GROUP or group in _STANDARD_GROUPS:
        return False
    lowered = group.lower()
    close = difflib.SequenceMatcher(None, lowered, ENTRY_POINT_GROUP).ratio() >= 0.6
    return ENTRY_POINT_GROUP in lowered or close


_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _depends_on_the_router(dist: importlib.metadata.Distribution) -> bool:
    for requirement in dist.requires or []:
        match = _REQUIREMENT_NAME.match(requirement)
        if match and re.sub(r"[-_.]+", "-", match.group(1)).lower() == ROUTER_DISTRIBUTION:
            return True
    return False
