"""A third-party plugin delivers without any router change: registered
in-process with the router's plugin manager (datasette's way; nothing is
installed). (Through the real path, pip-installed into a throwaway
directory and found through the `router` entry-point group:
tests/process/test_thirdparty_plugin.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router.config.loading import load
from tests.support.bot import Bot, check_order
from tests.support.messages import interleaved, post_round_robin
from tests.support.plugin import recorder_registered, write_recorder_routes
from tests.support.servers import wait_until


@pytest.fixture()
def recorder_plugin() -> Iterator[None]:
    with recorder_registered():
        yield


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_routes_deliver_through_the_plugin(
    recorder_plugin: None, start_router, bot: Bot, tmp_path: Path
) -> None:
    out = tmp_path / "recorded.jsonl"
    routes = write_recorder_routes(tmp_path / "routes.yaml", file=str(out))
    assert load(str(routes)).destinations["recorded"].settings.plugin == "recorder"

    router = start_router(bot.url, routes_file=routes)
    sent = interleaved(["a", "b", "c"], 5)
    post_round_robin(router.url, sent)
    wait_until(lambda: len(_records(out)) >= 15, what="15 recorded deliveries")

    records = _records(out)
    assert {r["destination"] for r in records} == {"recorded"}
    assert all(r["attempt"] == 1 for r in records)
    for key, messages in sent.items():
        assert [r["body"]["mensaje"] for r in records if r["key"] == key] == messages
    assert len({r["id"] for r in records}) == 15
    assert bot.received == []  # the bot was never involved


def test_plugin_posting_to_a_url_keeps_order(
    recorder_plugin: None, start_router, bot: Bot, tmp_path: Path
) -> None:
    bot.latency = (0.001, 0.005)
    routes = write_recorder_routes(tmp_path / "routes.yaml", url=bot.url)
    router = start_router(bot.url, routes_file=routes)
    sent = interleaved(["a", "b", "c", "d"], 6)
    post_round_robin(router.url, sent)
    wait_until(lambda: len(bot.acknowledged()) >= 24, what="24 deliveries")
    assert check_order(sent, bot.acknowledged()) == (0, 0)
    assert all(r.headers["x-recorder"] == "1" for r in bot.received)
    # The client the router lends says what sends (not python-httpx/x.y).
    assert {r.headers["user-agent"] for r in bot.received} == {"message-router"}
    assert bot.max_in_flight_per_key == 1
