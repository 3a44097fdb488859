"""Route authentication, per-sender rate limits, string limits, blocked keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.support.bot import Bot
from tests.support.messages import stored_count
from tests.support.routes import KEYS, write_routes
from tests.support.servers import serve

SECRET = "s3cr3t-from-env"


def routes(tmp_path: Path, bot_url: str, route: dict[str, Any], **dest: Any) -> Path:
    return write_routes(tmp_path / "routes.yaml", bot_url, route=route, **dest)


BODY = b'{"mensaje":"Hola!","wa_id":"44912345678"}'


def test_hmac_signature_is_required_and_checked(start_router, bot: Bot, redis: Redis, tmp_path):
    path = routes(tmp_path, bot.url, {"auth": {"type": "hmac-sha256", "secret": SECRET}})
    router = start_router(bot.url, routes_file=path, workers=False)
    good = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    bad = "sha256=" + hmac.new(b"wrong", BODY, hashlib.sha256).hexdigest()

    missing = router.post(BODY)
    assert missing.status_code == 401
    assert "X-Hub-Signature-256" in missing.json()["error"]
    wrong = router.post(BODY, headers={"X-Hub-Signature-256": bad})
    assert wrong.status_code == 401
    assert SECRET not in wrong.text
    tampered = router.post(BODY.replace(b"Hola", b"Hack"), headers={"X-Hub-Signature-256": good})
    assert tampered.status_code == 401
    assert stored_count(redis) == 0

    ok = router.post(BODY, headers={"X-Hub-Signature-256": good})
    assert ok.status_code == 200, ok.text
    assert stored_count(redis) == 1


def test_shared_secret_header(start_router, bot: Bot, redis: Redis, tmp_path, monkeypatch):
    monkeypatch.setenv("INGEST_TOKEN", SECRET)
    path = routes(
        tmp_path,
        bot.url,
        {"auth": {"type": "header", "header": "X-Token", "secret": "${INGEST_TOKEN}"}},
    )
    router = start_router(bot.url, routes_file=path, workers=False)
    assert router.post(BODY).status_code == 401
    assert router.post(BODY, headers={"X-Token": "nope"}).status_code == 401
    assert stored_count(redis) == 0
    assert router.post(BODY, headers={"X-Token": SECRET}).status_code == 200
    assert stored_count(redis) == 1


def test_standard_webhooks_signature(start_router, bot: Bot, redis: Redis, tmp_path):
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    path = routes(tmp_path, bot.url, {"auth": {"type": "standard-webhooks", "secret": secret}})
    router = start_router(bot.url, routes_file=path, workers=False)

    def signed(ts: int, body: bytes = BODY) -> dict[str, str]:
        mac = hmac.new(key, b"msg_1." + str(ts).encode() + b"." + body, hashlib.sha256).digest()
        return {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(ts),
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }

    now = int(time.time())
    assert router.post(BODY).status_code == 401
    assert router.post(BODY, headers=signed(now - 3600)).status_code == 401  # replayed later
    assert router.post(b'{"mensaje":"x","wa_id":"1"}', headers=signed(now)).status_code == 401
    assert stored_count(redis) == 0
    assert router.post(BODY, headers=signed(now)).status_code == 200
    assert stored_count(redis) == 1


def test_rate_limit_per_sender_answers_429(start_router, bot: Bot, redis: Redis, tmp_path):
    path = routes(
        tmp_path, bot.url, {"rate_limit": {"requests": 3, "period": "10s", "per": "wa_id"}}
    )
    router = start_router(bot.url, routes_file=path, workers=False)
    answers = [router.post({"mensaje": f"m{i}", "wa_id": "A"}).status_code for i in range(5)]
    assert answers == [200, 200, 200, 429, 429]
    limited = router.post({"mensaje": "again", "wa_id": "A"})
    assert 1 <= int(limited.headers["retry-after"]) <= 10
    assert "rate limit" in limited.json()["error"]
    assert router.post({"mensaje": "other sender", "wa_id": "B"}).status_code == 200
    assert redis.llen(KEYS.lane("A")) == 3


def test_long_strings_are_refused_when_limited(start_router, bot: Bot, redis: Redis, tmp_path):
    path = routes(tmp_path, bot.url, {"max_string_length": 100})
    router = start_router(bot.url, routes_file=path, workers=False)
    r = router.post({"mensaje": "x" * 101, "wa_id": "1"})
    assert r.status_code == 400
    assert "longer than 100" in r.json()["error"]
    assert router.post({"mensaje": "ok", "wa_id": "1", "extra": {"k" * 200: 1}}).status_code == 400
    assert stored_count(redis) == 0
    assert router.post({"mensaje": "x" * 100, "wa_id": "1"}).status_code == 200


@pytest.mark.parametrize("token", [None, "admin-secret"])
def test_admin_endpoints_need_a_configured_token(clean_redis, bot: Bot, tmp_path, token):
    path = routes(tmp_path, bot.url, {})
    server = serve(clean_redis, path, admin_token=token)
    try:
        url = server.url + "/admin/destinations"
        if token is None:
            assert httpx.get(url).status_code == 404
            return
        denied = httpx.get(url)
        assert denied.status_code == 401
        assert token not in denied.text
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert ok.json() == {
            "chatbot": {
                "messages": 0,
                "ready": 0,
                "in_flight": 0,
                "delayed": 0,
                "blocked": 0,
                "dead": 0,
                "oldest_age_seconds": None,
                "acknowledged": 0,
                "paused": False,
                "health": "up",
                "down_since_ms": None,
                "held_until_ms": None,
                "orphaned": False,
                "paused_conversations": 0,
            }
        }
    finally:
        server.stop()
