"""The state the dashboard tests look at: a real router with two
destinations delivering to one real bot that fails the messages it is told
to, and what Redis holds for each destination, read straight from its keys.

- `chatbot` (route /v1/store_message): a message failing twice becomes a
  dead letter, its key goes on.
- `alerts` (route /v1/alerts): a message failing once blocks its key.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync

from router.queue.keys import DestinationKeys
from tests.support.bot import Answer, Bot

TOKEN = "ui-test-token"
RETRY = {"initial": "50ms", "factor": 2, "max_delay": "200ms", "jitter": 0.1}
DESTINATIONS = ("chatbot", "alerts")
PATHS = {"chatbot": "/v1/store_message", "alerts": "/v1/alerts"}
FIELDS = {"mensaje": "string", "wa_id": "string"}


def scene_routes(directory: Path, bot_url: str) -> Path:
    common = {
        "plugin": "chatbot",
        "url": bot_url,
        "ordering_key": "wa_id",
        "max_in_flight": 8,
        "timeout": "2s",
        "lease": "5s",
    }
    config = {
        "routes": [{"path": PATHS[d], "destinations": [d], "fields": FIELDS} for d in DESTINATIONS],
        "destinations": {
            "chatbot": {**common, "retry": {**RETRY, "max_attempts": 2}},
            "alerts": {**common, "retry": {**RETRY, "max_attempts": 1, "on_exhausted": "block"}},
        },
    }
    path = directory / "routes.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@dataclass
class Scene:
    url: str
    bot: Bot
    redis: redis_sync.Redis
    failing: set[str] = field(default_factory=set)  # mensajes the bot refuses
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        def decide(message: dict[str, Any], n: int) -> Answer:
            with self.lock:
                if message.get("mensaje") in self.failing:
                    return Answer(500, {"status": "error", "error": "bot says no"})
            return Answer()

        self.bot.decide = decide

    def fail(self, *mensajes: str) -> None:
        with self.lock:
            self.failing.update(mensajes)

    def heal(self) -> None:
        with self.lock:
            self.failing.clear()

    def post(self, destination: str, key: str, mensaje: str) -> None:
        self.post_id(destination, key, mensaje)

    def post_id(self, destination: str, key: str, mensaje: str) -> str:
        """Post one message; its id."""
        r = httpx.post(
            self.url + PATHS[destination], json={"mensaje": mensaje, "wa_id": key}, timeout=10
        )
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def figures(self, destination: str) -> dict[str, int]:
        """What Redis holds for the destination (one shard), key by key."""
        k = DestinationKeys(destination)
        lanes = list(self.redis.scan_iter(match=k.lane_prefix + "*", count=1000))
        return {
            "messages": sum(int(self.redis.llen(lane)) for lane in lanes),
            "ready": int(self.redis.llen(k.ready)),
            "in_flight": int(self.redis.zcard(k.leases)),
            "delayed": int(self.redis.zcard(k.delayed)),
            "blocked": int(self.redis.hlen(k.blocked)),
            "dead": int(self.redis.llen(k.dead)),
        }

    def paused(self, destination: str) -> bool:
        return bool(self.redis.exists(DestinationKeys(destination).paused))
