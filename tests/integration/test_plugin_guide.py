"""The plugin guide's delivery plugin (docs/plugins.md), run as written: its
module registered in-process, a destination using it, a message delivered
through it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from router.config.loading import load
from router.config.plugins import plugin_manager, sink_types
from tests.support.bot import Bot
from tests.support.routes import write_routes
from tests.support.servers import wait_until
from tests.unit.test_plugin_api import guide_blocks


@pytest.fixture()
def sms_plugin(tmp_path: Path) -> Iterator[None]:
    (code,) = guide_blocks("python")
    package = tmp_path / "my_sms_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(code)
    spec = importlib.util.spec_from_file_location("my_sms_plugin", package / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin_manager().register(module, name="readme-sms")
    try:
        yield
    finally:
        plugin_manager().unregister(name="readme-sms")


def test_the_plugin_example_delivers_as_written(sms_plugin: None, start_router, bot: Bot, tmp_path):
    sms = sink_types(plugin_manager())["sms"]
    assert sms.description  # what `router plugins` prints
    (example,) = guide_blocks("yaml")[-1:]
    options = yaml.safe_load(example)["destinations"]["sms"]
    assert options["plugin"] == "sms" and set(options) >= {"url", "api_key"}

    routes = write_routes(tmp_path / "routes.yaml", None, plugin="sms", url=bot.url, api_key="k-1")
    load(str(routes))  # validated against SmsOptions
    router = start_router(bot.url, routes_file=routes)
    assert router.post({"mensaje": "hola", "wa_id": "1"}).status_code == 200
    wait_until(lambda: bot.acked_messages("1") == ["hola"], what="the SMS delivery")
    got = bot.received[0]
    assert got.headers["authorization"] == "Bearer k-1"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["idempotency-key"].startswith("msg_")
