"""Helpers shared by the ingest, fuzz and config tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from router.app import create_app
from router.envelope import decode
from router.keys import DestinationKeys
from router.loading import load
from router.settings import Settings
from tests.support import ServerThread

KEYS = DestinationKeys("chatbot")
STORE = "/v1/store_message"


def serve(redis_url: str, routes_file: Path) -> ServerThread:
    """The real app (API only, no workers) against any Redis URL, even a dead one."""
    settings = Settings(routes_file=str(routes_file), redis_url=redis_url, run_workers=False)
    return ServerThread(create_app(settings, load(str(routes_file)))).start()


def routes_file(path: Path, bot_url: str = "http://127.0.0.1:9/bot", **route: Any) -> Path:
    """A routes.yaml with the one chatbot route; keyword arguments set route fields."""
    config = {
        "routes": [
            {
                "path": STORE,
                "destinations": ["chatbot"],
                "fields": {"mensaje": "string", "wa_id": "string"},
                **route,
            }
        ],
        "destinations": {"chatbot": {"plugin": "chatbot", "url": bot_url, "ordering_key": "wa_id"}},
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def lane_keys(redis: Redis) -> list[bytes]:
    return list(redis.scan_iter(match=KEYS.lane_prefix + "*", count=1000))


def stored_count(redis: Redis) -> int:
    """How many messages sit in the chatbot destination's lanes."""
    return sum(int(redis.llen(k)) for k in lane_keys(redis))


def stored_bodies(redis: Redis) -> list[bytes]:
    out = []
    for k in lane_keys(redis):
        out += [bytes(decode(raw).body) for raw in redis.lrange(k, 0, -1)]
    return out


def assert_refused(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """A JSON error body with the status, naming the problem with `words`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["status"] == "error", body
    assert isinstance(body["error"], str) and body["error"], body
    for word in words:
        assert word.lower() in body["error"].lower(), (word, body)
    return dict(body)
