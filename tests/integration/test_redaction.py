"""Errors an older version stored with a secret in them (before every form
was redacted at the worker) are shown without it: the admin API, the
dashboard and the CLI apply the running config's redactor to what they read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from redis import Redis

from router.queue import envelope
from tests.support.processes import run_cli
from tests.support.routes import KEYS, write_routes
from tests.support.servers import serve

TOKEN = 'Q"UOTED\\s3cret/stored-before'
ADMIN = "admin-token-for-stored-errors"
# As the old worker stored it: the bot's echo, the token JSON-escaped.
LEAKED = "HTTP 401: " + json.dumps({"error": "denied", "got": f"Bearer {TOKEN}"})
ESCAPED = json.dumps(TOKEN)[1:-1]


def test_errors_stored_with_a_secret_are_shown_without_it(
    clean_redis: str, redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLD_TOKEN", TOKEN)
    routes = write_routes(
        tmp_path / "routes.yaml",
        "http://127.0.0.1:9/bot",
        headers={"Authorization": "Bearer ${OLD_TOKEN}"},
    )
    now = int(time.time() * 1000)
    env = envelope.encode(envelope.new_message_id(), now, b'{"mensaje": "m", "wa_id": "k"}')
    letter = {"key": "k", "envelope": env.decode(), "error": LEAKED, "attempts": 3, "dead_at": now}
    redis.rpush(KEYS.dead, json.dumps(letter))
    redis.hset(KEYS.blocked, "b", json.dumps({"error": LEAKED, "attempts": 2, "blocked_at": now}))
    redis.hset(KEYS.last_error, "w", LEAKED)
    assert ESCAPED in json.loads(redis.lindex(KEYS.dead, 0))["error"]  # what an old version left

    shown: dict[str, str] = {}
    headers = {"authorization": f"Bearer {ADMIN}"}
    with serve(clean_redis, routes, admin_token=ADMIN) as server:
        for path in (
            "/admin/destinations/chatbot/dead",
            "/admin/destinations/chatbot/blocked",
            "/admin/destinations/chatbot/key?key=w",
            "/ui/destinations/chatbot",
        ):
            answer = httpx.get(server.url + path, headers=headers)
            assert answer.status_code == 200, answer.text
            shown[path] = answer.text
    # The operator's commands, where the variable is set (a shell with the
    # router's environment).
    for args in (
        ("status", "chatbot", "w"),
        ("dead", "list", "chatbot"),
        ("dead", "list", "chatbot", "--json"),
        ("dead", "blocked", "chatbot"),
        ("dead", "blocked", "chatbot", "--json"),
    ):
        result = run_cli("--routes", str(routes), *args, REDIS_URL=clean_redis, OLD_TOKEN=TOKEN)
        assert result.returncode == 0, result.stderr
        shown[" ".join(args)] = result.stdout
    for where, text in shown.items():
        assert "denied" in text, where
        for leaked in (TOKEN, ESCAPED, json.dumps(ESCAPED)[1:-1]):
            assert leaked not in text, f"{where} shows {leaked!r}"
