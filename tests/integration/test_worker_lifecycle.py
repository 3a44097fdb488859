"""router.delivery.workers.running_workers: a plugin that refuses to start leaves
nothing open behind it (a real plugin registered in-process, a real Redis)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from router.config.loading import load
from router.config.plugins import PluginError, plugin_manager
from router.delivery.workers import running_workers
from router.plugin.hookspecs import hookimpl
from router.plugin.sinks import Delivery, SinkContext, SinkType


class _Plugin:
    """Sink type `picky`: its factory refuses a destination whose `refuse`
    option is true; every client it was given is remembered."""

    def __init__(self) -> None:
        self.clients: list[httpx.AsyncClient] = []
        self.closed: list[str] = []

    @hookimpl
    def router_sink_types(self) -> list[SinkType]:
        plugin = self

        class Sink:
            def __init__(self, name: str) -> None:
                self.name = name

            async def deliver(self, delivery: Delivery) -> None:
                return None

            async def aclose(self) -> None:
                plugin.closed.append(self.name)

        def factory(options: Any, context: SinkContext) -> Sink:
            self.clients.append(context.http)
            if context.destination == "refused":
                raise RuntimeError("picky: this destination is not for me")
            return Sink(context.destination)

        return [SinkType("picky", factory)]


@pytest.fixture()
def picky() -> Any:
    plugin = _Plugin()
    plugin_manager().register(plugin, name="picky")
    try:
        yield plugin
    finally:
        plugin_manager().unregister(name="picky")


async def test_a_refusing_factory_closes_the_sinks_opened_before_it(
    picky: _Plugin, redis_url: str, tmp_path: Path
) -> None:
    names = ["first", "second", "refused"]
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        json.dumps(
            {
                "routes": [{"path": "/in", "destinations": names}],
                "destinations": {n: {"plugin": "picky"} for n in names},
            }
        )
    )
    config = load(str(routes))
    redis = Redis.from_url(redis_url)
    try:
        # One line naming the destination and the plugin, the cause kept.
        refusal = "destination refused: plugin 'picky' .* failed to start: RuntimeError: picky"
        with pytest.raises(PluginError, match=refusal) as refused:
            async with running_workers(redis, config.destinations.values(), grace=1):
                pytest.fail("the workers started although a plugin refused")
    finally:
        await redis.aclose()
    assert isinstance(refused.value.__cause__, RuntimeError)
    assert sorted(picky.closed) == ["first", "second"]
    assert len(picky.clients) == 3 and all(c.is_closed for c in picky.clients)
