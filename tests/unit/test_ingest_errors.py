"""What a 503 from ingest tells the sender (README: What a 503 means)."""

from __future__ import annotations

import base64
from pathlib import Path

from redis.exceptions import TimeoutError as RedisTimeout

from router.config.loading import load
from router.ingest.route import IngestRoute
from router.redis.client import command_written
from tests.support.routes import write_routes


def test_a_503_names_what_a_retry_must_repeat(tmp_path: Path) -> None:
    # A frozen Redis after the write went out: the sender is told which id
    # makes its retry a duplicate on this route.
    def advice(route: dict[str, object]) -> str:
        config = load(str(write_routes(tmp_path / "r.yaml", "http://127.0.0.1:9/", route=route)))
        ingest = IngestRoute.of(config.routes[0])
        token = command_written.set(True)
        try:
            return ingest.unavailable(RedisTimeout(), 1.0).message
        finally:
            command_written.reset(token)

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    assert "same Idempotency-Key header" in advice({})
    assert "same `message_id` field" in advice({"id_field": "message_id"})
    assert "same webhook-id" in advice({"auth": {"type": "standard-webhooks", "secret": secret}})
