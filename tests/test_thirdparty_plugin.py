"""A third-party plugin, installed with pip like any other, is found through
the `router` entry-point group and delivers without any router change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.delivery_support import (
    install_thirdparty_plugin,
    interleaved,
    post_round_robin,
    run_cli,
    write_recorder_routes,
)
from tests.support import Bot, check_order, wait_until


@pytest.fixture(scope="session")
def recorder_plugin() -> str:
    return install_thirdparty_plugin()


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_installed_plugin_is_listed(recorder_plugin: str) -> None:
    done = run_cli("plugins")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("recorder: ") for line in lines), done.stdout
    assert any(line.startswith("chatbot: ") for line in lines), done.stdout  # still there


def test_routes_deliver_through_the_installed_plugin(
    recorder_plugin: str, start_router, bot: Bot, tmp_path: Path
) -> None:
    out = tmp_path / "recorded.jsonl"
    routes = write_recorder_routes(tmp_path / "routes.yaml", file=str(out))
    check = run_cli("--routes", str(routes), "check")
    assert check.returncode == 0, check.stderr
    assert "plugin recorder" in check.stdout

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
    recorder_plugin: str, start_router, bot: Bot, tmp_path: Path
) -> None:
    bot.latency = (0.001, 0.005)
    routes = write_recorder_routes(tmp_path / "routes.yaml", url=bot.url)
    router = start_router(bot.url, routes_file=routes)
    sent = interleaved(["a", "b", "c", "d"], 6)
    post_round_robin(router.url, sent)
    wait_until(lambda: len(bot.acknowledged()) >= 24, what="24 deliveries")
    assert check_order(sent, bot.acknowledged()) == (0, 0)
    assert all(r.headers["x-recorder"] == "1" for r in bot.received)
    assert bot.max_in_flight_per_key == 1


def test_bad_plugin_options_are_a_config_error(recorder_plugin: str, tmp_path: Path) -> None:
    routes = write_recorder_routes(tmp_path / "routes.yaml", file="x", colour="blue")
    done = run_cli("--routes", str(routes), "check")
    assert done.returncode == 2
    assert "colour" in done.stderr
