"""The hooks a router plugin can implement, one line each: what each returns,
when it is called and what it may raise are in the plugin guide,
docs/plugins.md (tests/unit/test_plugin_api.py checks that it documents
every hook here with its signature).

A plugin is a module or object registered with the plugin manager, either
built in or installed as a package with an entry point in the group
``router``::

    [project.entry-points.router]
    mysink = "mysink_package"

It imports ``hookimpl`` and everything else it needs from ``router.plugin``
(the public API), not from here. Hooks are synchronous factories (pluggy
does not await coroutines); the objects they return have async methods
that the delivery worker awaits.
"""

from __future__ import annotations

import pluggy

from router.plugin.formats import IngestFormat
from router.plugin.sinks import SinkType

hookspec = pluggy.HookspecMarker("router")
hookimpl = pluggy.HookimplMarker("router")


@hookspec
def router_sink_types() -> list[SinkType]:
    """Return the kinds of destination (sinks) this plugin provides."""
    raise NotImplementedError


@hookspec
def router_ingest_formats() -> list[IngestFormat]:
    """Return the webhook formats this plugin reads at ingest."""
    raise NotImplementedError
