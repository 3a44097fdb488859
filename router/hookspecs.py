"""The hooks a router plugin can implement.

A plugin is a module or object registered with the plugin manager, either
built in or installed as a package with an entry point in the group
``router``::

    [project.entry-points.router]
    mysink = "mysink_package"

Hooks are synchronous factories (pluggy does not await coroutines); the
objects they return have async methods that the delivery worker awaits.
"""

from __future__ import annotations

import pluggy

from router.sinks import SinkType

hookspec = pluggy.HookspecMarker("router")
hookimpl = pluggy.HookimplMarker("router")


@hookspec
def router_sink_types() -> list[SinkType]:
    """Return the kinds of destination this plugin provides.

    Each ``SinkType`` has the ``name`` a destination's ``plugin:`` field
    refers to in routes.yaml, the msgspec Struct of its options (the
    destination's fields other than the router's own), and a factory
    ``factory(options, context) -> Sink`` called once per destination at
    start. The ``Sink`` has ``async deliver(delivery)``, which returns when
    the destination acknowledged the message and raises on failure, and
    ``async aclose()``.
    """
    raise NotImplementedError
